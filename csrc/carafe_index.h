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
CARAFE_HD I kernel_radius(I kernel_size) {
  return kernel_size / 2;
}

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

// The sizes of one problem, in the index type of the kernel that reads them
// (int64_t on the CPU; int32_t or int64_t on the GPU, see fits_int32). The
// derived sizes are stored rather than recomputed, so GPU threads read them
// as plain values; build with make_dims (CPU, GPU launch code), which computes
// them in 64 bits before narrowing.
template <typename I>
struct Dims {
  I N, C, H, W, k, G, s;  // features (N, C, H, W), kernel size, groups, scale
  I Ho, Wo, kk, cpg, mC;  // s*H, s*W, k*k, C/G channels per group, k*k*G mask channels
};

template <typename I>
inline Dims<I> make_dims(int64_t N, int64_t C, int64_t H, int64_t W, int64_t k, int64_t G,
                         int64_t s) {
  return Dims<I>{I(N), I(C),     I(H),     I(W),     I(k),     I(G),
                 I(s), I(H * s), I(W * s), I(k * k), I(C / G), I(k * k * G)};
}

}  // namespace carafe
