// The CUDA kernels of carafe::carafe / carafe::carafe_backward, separate
// from their launches (carafe_kernel.cu) so that the same code can also be
// compiled for the host and run under a CPU emulation of the CUDA grid
// (tests/cuda_emulation/): the kernels' index arithmetic is then tested on
// machines without a GPU. Device-only constructs are limited to what that
// emulation provides (blockIdx, threadIdx, blockDim, gridDim, min).
#pragma once

#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <type_traits>

#include "../carafe_index.h"

namespace carafe {
namespace kernels {

constexpr int kThreads = 256;
// Channels one forward thread computes with the same k*k weights: cuts mask
// traffic by this factor while leaving enough threads to fill the GPU.
constexpr int kChannelsPerThread = 16;

template <typename index_t>
__device__ __forceinline__ index_t global_thread() {
  return index_t(blockIdx.x) * index_t(blockDim.x) + index_t(threadIdx.x);
}
template <typename index_t>
__device__ __forceinline__ index_t grid_stride() {
  return index_t(gridDim.x) * index_t(blockDim.x);
}

// For the K*K taps of the window centred on input pixel (ci, cj): whether
// each lies inside the input, and its offset in a channel plane (0 outside).
template <typename index_t, int K>
__device__ __forceinline__ void tap_offsets(index_t ci, index_t cj, const Dims<index_t>& d,
                                            bool* ok, index_t* off) {
#pragma unroll
  for (int ky = 0; ky < K; ++ky) {
#pragma unroll
    for (int kx = 0; kx < K; ++kx) {
      const index_t y = tap_coord(ci, index_t(ky), index_t(K));
      const index_t x = tap_coord(cj, index_t(kx), index_t(K));
      const int t = ky * K + kx;
      ok[t] = in_bounds(y, d.H) && in_bounds(x, d.W);
      off[t] = ok[t] ? y * d.W + x : 0;
    }
  }
}

// out[n, c, p, q] for one (n, g, channel chunk, pixel) per thread.
template <typename scalar_t, typename index_t, int K>
__global__ void __launch_bounds__(kThreads)
    carafe_forward_kernel(const scalar_t* __restrict__ features,
                          const scalar_t* __restrict__ masks, scalar_t* __restrict__ output,
                          const Dims<index_t> d, const index_t chunks, const index_t total) {
  using acc_t = at::opmath_type<scalar_t>;
  const index_t k = K > 0 ? index_t(K) : d.k;
  const index_t HoWo = d.Ho * d.Wo, HW = d.H * d.W;
  for (index_t idx = global_thread<index_t>(); idx < total; idx += grid_stride<index_t>()) {
    const index_t pix = idx % HoWo;
    index_t rest = idx / HoWo;
    const index_t chunk = rest % chunks;
    rest /= chunks;
    const index_t g = rest % d.G, n = rest / d.G;
    const index_t p = pix / d.Wo, q = pix % d.Wo;
    const index_t ci = source_coord(p, d.s), cj = source_coord(q, d.s);
    const index_t c_begin = g * d.cpg + chunk * kChannelsPerThread;
    const index_t c_end = min(c_begin + index_t(kChannelsPerThread), (g + 1) * d.cpg);
    const scalar_t* mpix = masks + n * d.mC * HoWo + pix;
    if constexpr (K > 0) {
      acc_t w[K * K];
      index_t off[K * K];
      bool ok[K * K];
      tap_offsets<index_t, K>(ci, cj, d, ok, off);
#pragma unroll
      for (int t = 0; t < K * K; ++t) {
        w[t] = static_cast<acc_t>(mpix[mask_channel(g, index_t(0), index_t(0), k) * HoWo +
                                       index_t(t) * HoWo]);
      }
      for (index_t c = c_begin; c < c_end; ++c) {
        const scalar_t* plane = features + (n * d.C + c) * HW;
        acc_t acc = 0;
#pragma unroll
        for (int t = 0; t < K * K; ++t) {
          // Skipped, not multiplied by zero: a non-finite value at the clamped
          // offset must not leak into the sum.
          if (ok[t]) acc += w[t] * static_cast<acc_t>(plane[off[t]]);
        }
        output[(n * d.C + c) * HoWo + pix] = static_cast<scalar_t>(acc);
      }
    } else {
      for (index_t c = c_begin; c < c_end; ++c) {
        const scalar_t* plane = features + (n * d.C + c) * HW;
        acc_t acc = 0;
        for (index_t ky = 0; ky < k; ++ky) {
          const index_t y = tap_coord(ci, ky, k);
          if (!in_bounds(y, d.H)) continue;
          for (index_t kx = 0; kx < k; ++kx) {
            const index_t x = tap_coord(cj, kx, k);
            if (!in_bounds(x, d.W)) continue;
            acc += static_cast<acc_t>(mpix[mask_channel(g, ky, kx, k) * HoWo]) *
                   static_cast<acc_t>(plane[y * d.W + x]);
          }
        }
        output[(n * d.C + c) * HoWo + pix] = static_cast<scalar_t>(acc);
      }
    }
  }
}

// grad_masks[n, mc, p, q] = sum_{c in group(mc)} grad_out[n, c, p, q] * features[n, c, y, x]
// for the tap (ky, kx) of mask channel mc; one element per thread.
template <typename scalar_t, typename index_t>
__global__ void __launch_bounds__(kThreads)
    carafe_grad_masks_kernel(const scalar_t* __restrict__ grad_output,
                             const scalar_t* __restrict__ features,
                             scalar_t* __restrict__ grad_masks, const Dims<index_t> d,
                             const index_t total) {
  using acc_t = at::opmath_type<scalar_t>;
  const index_t HoWo = d.Ho * d.Wo, HW = d.H * d.W, k = d.k;
  for (index_t idx = global_thread<index_t>(); idx < total; idx += grid_stride<index_t>()) {
    const index_t pix = idx % HoWo;
    const index_t mc = (idx / HoWo) % d.mC, n = idx / (HoWo * d.mC);
    const index_t g = mc / (k * k), ky = (mc / k) % k, kx = mc % k;
    const index_t p = pix / d.Wo, q = pix % d.Wo;
    const index_t y = tap_coord(source_coord(p, d.s), ky, k);
    const index_t x = tap_coord(source_coord(q, d.s), kx, k);
    acc_t acc = 0;
    if (in_bounds(y, d.H) && in_bounds(x, d.W)) {
      const index_t c_begin = g * d.cpg;
      const scalar_t* go = grad_output + (n * d.C + c_begin) * HoWo + pix;
      const scalar_t* f = features + (n * d.C + c_begin) * HW + y * d.W + x;
      for (index_t c = 0; c < d.cpg; ++c) {
        acc += static_cast<acc_t>(go[c * HoWo]) * static_cast<acc_t>(f[c * HW]);
      }
    }
    grad_masks[idx] = static_cast<scalar_t>(acc);
  }
}

// grad_masks for one (n, g, output pixel) per thread, its K*K taps in
// registers: grad_output[n, c, p, q] is read once per channel and used for
// every tap (the one-thread-per-mask-element kernel above reads it K*K
// times). Channels are summed in the same order as there, so both give the
// same bits. Taps outside the input get 0.
template <typename scalar_t, typename index_t, int K>
__global__ void __launch_bounds__(kThreads)
    carafe_grad_masks_pixel_kernel(const scalar_t* __restrict__ grad_output,
                                   const scalar_t* __restrict__ features,
                                   scalar_t* __restrict__ grad_masks, const Dims<index_t> d,
                                   const index_t total) {
  using acc_t = at::opmath_type<scalar_t>;
  const index_t HoWo = d.Ho * d.Wo, HW = d.H * d.W, k = index_t(K);
  for (index_t idx = global_thread<index_t>(); idx < total; idx += grid_stride<index_t>()) {
    const index_t pix = idx % HoWo;
    const index_t g = (idx / HoWo) % d.G, n = idx / (HoWo * d.G);
    const index_t p = pix / d.Wo, q = pix % d.Wo;
    const index_t ci = source_coord(p, d.s), cj = source_coord(q, d.s);
    acc_t acc[K * K];
    index_t off[K * K];
    bool ok[K * K];
    tap_offsets<index_t, K>(ci, cj, d, ok, off);
#pragma unroll
    for (int t = 0; t < K * K; ++t) acc[t] = 0;
    const index_t c_begin = g * d.cpg;
    for (index_t c = 0; c < d.cpg; ++c) {
      const acc_t go = static_cast<acc_t>(grad_output[(n * d.C + c_begin + c) * HoWo + pix]);
      const scalar_t* plane = features + (n * d.C + c_begin + c) * HW;
#pragma unroll
      for (int t = 0; t < K * K; ++t) {
        if (ok[t]) acc[t] += go * static_cast<acc_t>(plane[off[t]]);
      }
    }
    scalar_t* out = grad_masks + (n * d.mC + mask_channel(g, index_t(0), index_t(0), k)) * HoWo +
                    pix;
#pragma unroll
    for (int t = 0; t < K * K; ++t) out[index_t(t) * HoWo] = static_cast<scalar_t>(acc[t]);
  }
}

// The grad_masks launch: the per-pixel kernel for k in {1, 3, 5} (k = 7's
// 49 accumulators would spill), else one thread per mask element. Calls
// launch(threads, kernel, kernel arguments...): a real <<<>>> launch in
// carafe_kernel.cu, the grid emulation in the tests, so both run this choice.
template <typename scalar_t, typename index_t, typename Launch>
void launch_grad_masks(const Dims<index_t>& d, const scalar_t* grad_output,
                       const scalar_t* features, scalar_t* grad_masks, Launch&& launch) {
  const int64_t per_pixel = int64_t(d.N) * d.G * d.Ho * d.Wo;
  const int64_t per_element = per_pixel * d.k * d.k;
  switch (d.k) {
    case 1:
      return launch(per_pixel, carafe_grad_masks_pixel_kernel<scalar_t, index_t, 1>, grad_output,
                    features, grad_masks, d, index_t(per_pixel));
    case 3:
      return launch(per_pixel, carafe_grad_masks_pixel_kernel<scalar_t, index_t, 3>, grad_output,
                    features, grad_masks, d, index_t(per_pixel));
    case 5:
      return launch(per_pixel, carafe_grad_masks_pixel_kernel<scalar_t, index_t, 5>, grad_output,
                    features, grad_masks, d, index_t(per_pixel));
    default:
      return launch(per_element, carafe_grad_masks_kernel<scalar_t, index_t>, grad_output,
                    features, grad_masks, d, index_t(per_element));
  }
}

// grad_features for one (n, g, chunk of kChannelsPerThread channels, input
// pixel) per thread: each mask value the pixel's adjoint reads is loaded once
// for the chunk's channels (a one-thread-per-element kernel would reload
// it for every channel): the adjoint of the forward gather, as a gather over
// every (tap, output pixel) that read (y, x).
template <typename scalar_t, typename index_t>
__global__ void __launch_bounds__(kThreads)
    carafe_grad_features_chunk_kernel(const scalar_t* __restrict__ grad_output,
                                      const scalar_t* __restrict__ masks,
                                      scalar_t* __restrict__ grad_features,
                                      const Dims<index_t> d, const index_t chunks,
                                      const index_t total) {
  using acc_t = at::opmath_type<scalar_t>;
  const index_t HoWo = d.Ho * d.Wo, HW = d.H * d.W, k = d.k, s = d.s;
  for (index_t idx = global_thread<index_t>(); idx < total; idx += grid_stride<index_t>()) {
    const index_t yx = idx % HW;
    index_t rest = idx / HW;
    const index_t chunk = rest % chunks;
    rest /= chunks;
    const index_t g = rest % d.G, n = rest / d.G;
    const index_t y = yx / d.W, x = yx % d.W;
    const index_t c_begin = g * d.cpg + chunk * kChannelsPerThread;
    const index_t count = min(index_t(kChannelsPerThread), (g + 1) * d.cpg - c_begin);
    const scalar_t* go = grad_output + (n * d.C + c_begin) * HoWo;
    const scalar_t* m = masks + n * d.mC * HoWo;
    acc_t acc[kChannelsPerThread];
#pragma unroll
    for (int cc = 0; cc < kChannelsPerThread; ++cc) acc[cc] = 0;
    for (index_t ky = 0; ky < k; ++ky) {
      const index_t i = center_reading(y, ky, k);
      if (!in_bounds(i, d.H)) continue;
      for (index_t kx = 0; kx < k; ++kx) {
        const index_t j = center_reading(x, kx, k);
        if (!in_bounds(j, d.W)) continue;
        const scalar_t* mt = m + mask_channel(g, ky, kx, k) * HoWo;
        for (index_t t = 0; t < s; ++t) {
          const index_t row = (i * s + t) * d.Wo + j * s;
          for (index_t u = 0; u < s; ++u) {
            const acc_t mv = static_cast<acc_t>(mt[row + u]);
#pragma unroll
            for (int cc = 0; cc < kChannelsPerThread; ++cc) {
              if (cc < count) acc[cc] += mv * static_cast<acc_t>(go[cc * HoWo + row + u]);
            }
          }
        }
      }
    }
#pragma unroll
    for (int cc = 0; cc < kChannelsPerThread; ++cc) {
      if (cc < count) {
        grad_features[(n * d.C + c_begin + cc) * HW + yx] = static_cast<scalar_t>(acc[cc]);
      }
    }
  }
}

template <typename index_t>
Dims<index_t> dims_of(const at::Tensor& features, int64_t k, int64_t G, int64_t s) {
  return make_dims<index_t>(features.size(0), features.size(1), features.size(2),
                            features.size(3), k, G, s);
}

// Threads of the forward launch: one per (n, group, channel chunk, output pixel).
template <typename index_t>
int64_t forward_threads(const Dims<index_t>& d, index_t chunks) {
  return int64_t(d.N) * d.G * chunks * d.Ho * d.Wo;
}
template <typename index_t>
index_t forward_chunks(const Dims<index_t>& d) {
  return (d.cpg + kChannelsPerThread - 1) / kChannelsPerThread;
}

// The grad_features launch: channel chunks (forward_chunks) per input pixel.
// Calls launch(threads, kernel, kernel arguments...) like launch_grad_masks.
template <typename scalar_t, typename index_t, typename Launch>
void launch_grad_features(const Dims<index_t>& d, const scalar_t* grad_output,
                          const scalar_t* masks, scalar_t* grad_features, Launch&& launch) {
  const index_t chunks = forward_chunks(d);
  const int64_t threads = int64_t(d.N) * d.G * chunks * d.H * d.W;
  launch(threads, carafe_grad_features_chunk_kernel<scalar_t, index_t>, grad_output, masks,
         grad_features, d, chunks, index_t(threads));
}

// Calls f(std::integral_constant<int, K>) with K = k for the kernel sizes
// compiled with unrolled taps (1, 3, 5, 7), else K = 0 (the generic path).
template <typename F>
void dispatch_kernel_size(int64_t k, F&& f) {
  switch (k) {
    case 1: return f(std::integral_constant<int, 1>{});
    case 3: return f(std::integral_constant<int, 3>{});
    case 5: return f(std::integral_constant<int, 5>{});
    case 7: return f(std::integral_constant<int, 7>{});
    default: return f(std::integral_constant<int, 0>{});
  }
}

}  // namespace kernels
}  // namespace carafe
