// The entry points of the CPU kernel files, and the index helpers they share.
// Tensors are contiguous NCHW; Dims (carafe_index.h) holds the problem's sizes.
#pragma once

#include <ATen/core/Tensor.h>

#include <algorithm>
#include <cstdint>

#include "../carafe_index.h"
#include "vec.h"

namespace carafe {
namespace __attribute__((visibility("hidden"))) cpu {

  using Dims = carafe::Dims<int64_t>;  // carafe_index.h, shared with the CUDA kernels

  // Grain: about 32K multiply-adds per task, so tiny inputs stay on one thread.
  inline int64_t grain_for(int64_t madds_per_item) {
    return std::max<int64_t>(1, (int64_t(1) << 15) / std::max<int64_t>(1, madds_per_item));
  }

  // Offset of row p of mask channel (g, ky, kx) of sample n in masks or grad_masks.
  inline int64_t mask_row(const Dims& d, int64_t n, int64_t g, int64_t ky, int64_t kx, int64_t p) {
    return ((n * d.mC + mask_channel(g, ky, kx, d.k)) * d.Ho + p) * d.Wo;
  }

  // Taps left or right of the input are skipped (the forward's rule): their
  // grad_masks entries are zero, not grad_output times the zero padding
  // (inf * 0 would be NaN). Tap kx of output column q reads q/s + kx - r;
  // this zeroes those columns of one grad_masks row (Wo entries) of tap kx.
  // Only columns [lo, hi) are touched (default: all).
  template <typename T>
  void zero_outside_columns(T * row, int64_t kx, const Dims& d, int64_t lo = 0, int64_t hi = -1) {
    if (hi < 0) hi = d.Wo;
    const int64_t r = kernel_radius(d.k);
    const int64_t left_end = std::min(d.Wo, d.s * std::max<int64_t>(0, r - kx));
    const int64_t right_begin = std::max(left_end, std::min(d.Wo, d.s * (d.W + r - kx)));
    std::fill(row + lo, row + std::max(lo, std::min(hi, left_end)), T(0));
    std::fill(row + std::min(hi, std::max(lo, right_begin)), row + hi, T(0));
  }

  // ---- forward_kernels.cpp: float32 window kernels (AVX2, AVX-512) ----
  // The forward for T = float, at::Half or at::BFloat16; false (nothing done)
  // where no window kernel applies (see forward_window_kernels).
  template <typename T>
  bool forward_window(const at::Tensor& features, const at::Tensor& masks, at::Tensor& output,
                      const Dims& d);

  // ---- grad_masks.cpp: float32 grad_masks window kernels ----
  // Whether they apply to d (this CPU, k, scale, width).
  bool grad_masks_window_applies(const Dims& d);
  // grad_masks (gm) from grad_output and features; false (nothing done) where
  // they do not apply. accumulate: add to the sums in gm (of channels before
  // these, as one group).
  bool grad_masks_window(const float* go, const float* f, float* gm, const Dims& d,
                         bool accumulate);

  // ---- grad_features.cpp: float32 grad_features tap-sum kernels ----
  // grad_features (gf) from grad_output and masks; false (nothing done) where
  // they do not apply.
  bool grad_features_taps(const float* go, const float* m, float* gf, const Dims& d);

  // ---- generic.cpp: the portable path (row buffers and pair sums) ----
  void forward_blocked_float(const at::Tensor& features, const at::Tensor& masks,
                             at::Tensor& output, const Dims& d);
  template <typename scalar_t>  // double
  void forward_generic(const at::Tensor& features, const at::Tensor& masks, at::Tensor& output,
                       const Dims& d);
  template <typename scalar_t>  // float, double
  void grad_masks_generic(const scalar_t* go, const scalar_t* f, scalar_t* gm, const Dims& d);
  template <typename scalar_t>  // float, double
  void grad_features_generic(const scalar_t* go, const scalar_t* m, scalar_t* gf, const Dims& d);

  // ---- dispatch.cpp ----
  // The float32 op on contiguous tensors (the half types' path runs it on copies).
  void forward_float(const at::Tensor& features, const at::Tensor& masks, at::Tensor& output,
                     const Dims& d);
  // accumulate_masks: add grad_masks to the sums in grad_masks (needs the
  // grad_masks window kernels: grad_masks_window_applies).
  void backward_float(const at::Tensor& grad_output, const at::Tensor& features,
                      const at::Tensor& masks, at::Tensor& grad_features, at::Tensor& grad_masks,
                      const Dims& d, bool accumulate_masks = false);
  // A new CPU tensor for a result the op writes in full.
  at::Tensor empty_for_write(at::IntArrayRef sizes, const at::TensorOptions& options);

}  // namespace cpu
}  // namespace carafe
