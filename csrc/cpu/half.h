// float16 and bfloat16 on the CPU: they run the float32 kernels and round
// each result once (see half.cpp).
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>

#include "kernels.h"

namespace carafe {
namespace __attribute__((visibility("hidden"))) cpu {

  // dst[i] = To(src[i]) for i < n, between float and float16/bfloat16
  // (rounding to nearest even, as c10 does), vectorised where the CPU allows.
  // Defined for From/To one of float and at::Half or at::BFloat16.
  template <typename From, typename To>
  void convert_row(const From* src, To* dst, int64_t n);

  // The float32 op on float32 copies of blocks of channels, rounded once:
  // features (N, C, H, W), masks (N, k*k*G, Ho, Wo), output (N, C, Ho, Wo),
  // float16/bfloat16, contiguous.
  void forward_half_via_float(const at::Tensor& features, const at::Tensor& masks,
                              at::Tensor& output, const Dims& d);

  // grad_output (N, C, Ho, Wo), features, masks; grad_features and grad_masks
  // written whole.
  void backward_half_via_float(const at::Tensor& grad_output, const at::Tensor& features,
                               const at::Tensor& masks, at::Tensor& grad_features,
                               at::Tensor& grad_masks, const Dims& d);

}  // namespace cpu
}  // namespace carafe
