// Index arithmetic of CARAFE (Wang et al., ICCV 2019, arXiv 1905.02188),
// shared by the CPU and CUDA kernels so that the CPU tests exercise the same
// arithmetic the GPU runs.
//
// Notation (mmcv's semantics):
//   features (N, C, H, W), masks (N, k*k*G, s*H, s*W), output (N, C, s*H, s*W)
//   out[n, c, p, q] = sum_{ky, kx} masks[n, g*k*k + ky*k + kx, p, q]
//                     * features[n, c, p/s + ky - k/2, q/s + kx - k/2]
//   with g = c / (C / G); taps outside the input contribute zero.
#pragma once

#include <cstdint>

#if defined(__CUDACC__) || defined(__HIPCC__)
#define CARAFE_HD __host__ __device__ __forceinline__
#else
#define CARAFE_HD inline
#endif

namespace carafe {

// Radius of a (2r+1)-wide reassembly window.
template <typename I>
CARAFE_HD I kernel_radius(I kernel_size) { return kernel_size / 2; }

// Output coordinate -> the input coordinate it is centred on (nearest source).
template <typename I>
CARAFE_HD I source_coord(I out_coord, I scale_factor) {
  return out_coord / scale_factor;
}

// Input coordinate read by tap `k_off` (0..k-1) of the window centred on `center`.
template <typename I>
CARAFE_HD I tap_coord(I center, I k_off, I kernel_size) {
  return center + k_off - kernel_radius(kernel_size);
}

template <typename I>
CARAFE_HD bool in_bounds(I coord, I size) {
  return coord >= 0 && coord < size;
}

// Feature channel -> its mask group (C / G consecutive channels per group).
template <typename I>
CARAFE_HD I channel_group(I channel, I channels_per_group) {
  return channel / channels_per_group;
}

// (group, ky, kx) -> channel of `masks`.
template <typename I>
CARAFE_HD I mask_channel(I group, I ky, I kx, I kernel_size) {
  return (group * kernel_size + ky) * kernel_size + kx;
}

// For the adjoint (backward w.r.t. features): the window centre that reads
// input coordinate `in_coord` through tap `k_off`; in_bounds() of the result
// against the *input* size says whether such a window exists.
template <typename I>
CARAFE_HD I center_reading(I in_coord, I k_off, I kernel_size) {
  return in_coord - k_off + kernel_radius(kernel_size);
}

}  // namespace carafe
