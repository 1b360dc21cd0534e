// The forward kernels of carafe::carafe: out = sum over a k*k window of
// features weighted by masks. carafe_kernels.cuh chooses between them.
#pragma once

#include <ATen/OpMathType.h>

#include "../carafe_index.h"
#include "grid.cuh"
#include "window.cuh"

namespace carafe {
namespace kernels {

// Channels one forward thread computes with the same mask values: cuts mask
// traffic by this factor while leaving enough threads to fill the GPU.
constexpr int kChannelsPerThread = 16;

// The forward over `channels` consecutive channels for one thread's U
// outputs: out[c, pix + u] = sum_t w[u][t] * plane[c, tap t of the window].
// Taps outside the input are skipped, not multiplied by zero: a non-finite
// value there must not leak into the sum.
template <bool kInterior, int K, int S, typename scalar_t, typename index_t, typename acc_t>
__device__ __forceinline__ void reassemble(const scalar_t* __restrict__ plane,
                                           scalar_t* __restrict__ out,
                                           const acc_t (&w)[kOutputsPerThread<S>][K * K],
                                           const WindowPlace<index_t, S>& at, index_t channels,
                                           const Dims<index_t>& d, index_t HW, index_t HoWo) {
  constexpr int U = kOutputsPerThread<S>, R = K / 2;
  using V = Vec<scalar_t, U>;
  const index_t corner = (at.ci - R) * d.W + (at.cj - R);  // may be < 0 at the border
  // Two channels per iteration for output pairs: twice the loads in flight
  // and 1.86 instead of 2.02 instructions per multiply-add (float32, k = 5),
  // at 125 registers, still two blocks per multiprocessor. The one-output
  // variant would drop from four blocks to two.
#pragma unroll(S > 0 ? 2 : 1)
  for (index_t c = 0; c < channels; ++c) {
    acc_t acc[U];
#pragma unroll
    for (int u = 0; u < U; ++u) acc[u] = 0;
#pragma unroll
    for (int ky = 0; ky < K; ++ky) {
#pragma unroll
      for (int kx = 0; kx < K; ++kx) {
        if (kInterior || (in_bounds(at.ci - R + ky, d.H) && in_bounds(at.cj - R + kx, d.W))) {
          const acc_t f = static_cast<acc_t>(plane[corner + index_t(ky) * d.W + kx]);
#pragma unroll
          for (int u = 0; u < U; ++u) acc[u] += w[u][ky * K + kx] * f;
        }
      }
    }
    V o;
#pragma unroll
    for (int u = 0; u < U; ++u) o.v[u] = static_cast<scalar_t>(acc[u]);
    store_vec(out, o);
    plane += HW;
    out += HoWo;
  }
}

// out[n, c, p, q] for one (n, g, channel chunk, output row p, window column)
// per thread: its outputs' K*K mask values are loaded once into registers and
// reused over the chunk's channels.
template <typename scalar_t, typename index_t, int K, int S>
__global__ void __launch_bounds__(kThreads)
    carafe_forward_window_kernel(const scalar_t* __restrict__ features,
                                 const scalar_t* __restrict__ masks, scalar_t* __restrict__ output,
                                 const Dims<index_t> d, const index_t chunks, const index_t total) {
  using acc_t = at::opmath_type<scalar_t>;
  constexpr int U = kOutputsPerThread<S>;
  using V = Vec<scalar_t, U>;
  const index_t HoWo = d.Ho * d.Wo, HW = d.H * d.W;
  for (index_t idx = global_thread<index_t>(); idx < total; idx += grid_stride<index_t>()) {
    // all output rows of a chunk before the next chunk: each chunk's
    // feature planes and the masks (both re-read by every chunk) stay in L2
    const WindowItem<index_t, S> item = window_item<S, false>(idx, chunks, d);
    const WindowPlace<index_t, S>& at = item.at;
    const index_t chunk = item.inner, g = item.g, n = item.n;
    const index_t c_begin = g * d.cpg + chunk * kChannelsPerThread;
    const index_t channels = min(index_t(kChannelsPerThread), (g + 1) * d.cpg - c_begin);
    acc_t w[U][K * K];
    const scalar_t* mpix =
        masks + (n * d.mC + mask_channel(g, index_t(0), index_t(0), index_t(K))) * HoWo + at.pix;
#pragma unroll
    for (int t = 0; t < K * K; ++t) {
      const V mv = load_vec<V>(mpix + index_t(t) * HoWo);
#pragma unroll
      for (int u = 0; u < U; ++u) w[u][t] = static_cast<acc_t>(mv.v[u]);
    }
    const scalar_t* plane = features + (n * d.C + c_begin) * HW;
    scalar_t* out = output + (n * d.C + c_begin) * HoWo + at.pix;
    if (warp_all(at.template interior<K>(d), idx)) {
      reassemble<true, K, S>(plane, out, w, at, channels, d, HW, HoWo);
    } else {
      reassemble<false, K, S>(plane, out, w, at, channels, d, HW, HoWo);
    }
  }
}

// The forward for any odd k (run-time k and s): one (n, g, channel chunk,
// output pixel) per thread, the mask values reread for each channel.
template <typename scalar_t, typename index_t>
__global__ void __launch_bounds__(kThreads)
    carafe_forward_generic_kernel(const scalar_t* __restrict__ features,
                                  const scalar_t* __restrict__ masks, scalar_t* __restrict__ output,
                                  const Dims<index_t> d, const index_t chunks,
                                  const index_t total) {
  using acc_t = at::opmath_type<scalar_t>;
  const index_t k = d.k;
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

}  // namespace kernels
}  // namespace carafe
