// The backward kernels of carafe::carafe_backward: grad_masks, a
// correlation of grad_output with the features over each group's channels,
// and grad_features, the adjoint of the forward as a gather (each thread owns
// the elements it writes: no atomics, a fixed summation order).
// carafe_kernels.cuh chooses between them.
#pragma once

#include <ATen/OpMathType.h>

#include "../carafe_index.h"
#include "grid.cuh"
#include "window.cuh"

namespace carafe {
namespace kernels {

// Channels of one grad_features thread, which each mask value it loads
// serves. Fewer than the forward's: the thread also keeps an address per
// channel, and at 16 channels it would need 114 registers (16 resident warps
// per multiprocessor on sm_90) against 80 (24 warps) at 8.
constexpr int kGradFeatureChannels = 8;

// grad_masks[n, mc, p, q] = sum_{c in group(mc)} grad_out[n, c, p, q] * features[n, c, y, x]
// for the tap (ky, kx) of mask channel mc; one element per thread (any k).
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

// The sums of the window grad_masks kernel over the group's channels for
// one row of taps (ky): acc[u][kx] += grad_out[c, pix + u] * plane[c, y, x + kx]
// with y = ci - R + ky, x = cj - R; taps outside the input stay 0.
template <bool kInterior, int K, int S, typename scalar_t, typename index_t, typename acc_t>
__device__ __forceinline__ void correlate_row(const scalar_t* __restrict__ go,
                                              const scalar_t* __restrict__ plane,
                                              acc_t (&acc)[kOutputsPerThread<S>][K],
                                              const WindowPlace<index_t, S>& at, index_t y,
                                              const Dims<index_t>& d, index_t HW, index_t HoWo) {
  constexpr int U = kOutputsPerThread<S>, R = K / 2;
  using V = Vec<scalar_t, U>;
  const index_t row = y * d.W + (at.cj - R);  // may be < 0 at the left border
  // Four channels per iteration: each thread loops over all the group's
  // channels, so it keeps the next channels' loads in flight to hide memory
  // latency. The order of the sums is unchanged.
#pragma unroll 4
  for (index_t c = 0; c < d.cpg; ++c) {
    const V gv = load_vec<V>(go);
#pragma unroll
    for (int kx = 0; kx < K; ++kx) {
      if (kInterior || in_bounds(at.cj - R + kx, d.W)) {
        const acc_t f = static_cast<acc_t>(plane[row + kx]);
#pragma unroll
        for (int u = 0; u < U; ++u) acc[u][kx] += static_cast<acc_t>(gv.v[u]) * f;
      }
    }
    go += HoWo;
    plane += HW;
  }
}

// grad_masks for one (n, g, tap row ky, output row, window column) per thread:
// the K taps of its row for its outputs, in registers over the channel sum.
// Each grad_output value is read once per tap row, each feature value once
// for the thread's outputs (the one-thread-per-mask-element kernel above
// reads grad_output K*K times and each feature value once per output). A
// row of taps rather than the whole window per thread: 5x the threads at
// k = 5 (304000 at 2x256x100x152, where a thread per window would fill about
// one wave of the GPU, and 60 blocks at 2x256x50x76), for the same loads per
// multiply-add. Channels are summed in the same order as there, so both
// give the same bits.
template <typename scalar_t, typename index_t, int K, int S>
__global__ void __launch_bounds__(kThreads)
    carafe_grad_masks_window_kernel(const scalar_t* __restrict__ grad_output,
                                    const scalar_t* __restrict__ features,
                                    scalar_t* __restrict__ grad_masks, const Dims<index_t> d,
                                    const index_t total) {
  using acc_t = at::opmath_type<scalar_t>;
  constexpr int U = kOutputsPerThread<S>, R = K / 2;
  using V = Vec<scalar_t, U>;
  const index_t HoWo = d.Ho * d.Wo, HW = d.H * d.W;
  for (index_t idx = global_thread<index_t>(); idx < total; idx += grid_stride<index_t>()) {
    // the K tap rows of an output row run side by side (neighbouring blocks),
    // so that grad_output, which each of them reads whole, comes from DRAM
    // about once: tap row by tap row it would be read K times (one image's
    // grad_output, 62 MB at 256x200x304, is larger than an H100's L2)
    const WindowItem<index_t, S> item = window_item<S, true>(idx, index_t(K), d);
    const WindowPlace<index_t, S>& at = item.at;
    const index_t ky = item.inner, g = item.g, n = item.n;
    const index_t y = at.ci - R + ky;
    acc_t acc[U][K];
#pragma unroll
    for (int u = 0; u < U; ++u) {
#pragma unroll
      for (int kx = 0; kx < K; ++kx) acc[u][kx] = 0;
    }
    if (in_bounds(y, d.H)) {  // else the whole row of taps is outside: zeros
      const index_t c_begin = g * d.cpg;
      const scalar_t* go = grad_output + (n * d.C + c_begin) * HoWo + at.pix;
      const scalar_t* plane = features + (n * d.C + c_begin) * HW;
      if (warp_all(in_bounds(at.cj - R, d.W) && in_bounds(at.cj + R, d.W), idx)) {
        correlate_row<true, K, S>(go, plane, acc, at, y, d, HW, HoWo);
      } else {
        correlate_row<false, K, S>(go, plane, acc, at, y, d, HW, HoWo);
      }
    }
    scalar_t* out =
        grad_masks + (n * d.mC + mask_channel(g, ky, index_t(0), index_t(K))) * HoWo + at.pix;
#pragma unroll
    for (int kx = 0; kx < K; ++kx) {
      V o;
#pragma unroll
      for (int u = 0; u < U; ++u) o.v[u] = static_cast<scalar_t>(acc[u][kx]);
      store_vec(out + index_t(kx) * HoWo, o);
    }
  }
}

// The adjoint sums of one grad_features thread, as a gather over every
// (tap, output pixel) that read input pixel (y, x): for each tap (ky, kx)
// whose window centre (i, j) exists, the s*s output pixels of that centre,
// summed in the order ky, t, kx, u. Along a row of taps (kx) the centre
// moves left one column, so within output row i*s+t every read is a fixed
// offset from one pointer per channel: the addresses are computed once per
// (ky, t), not per load. acc[cc] collects channel c_begin + cc; coff[cc] is
// its grad_output plane offset (channels past the chunk's end repeat its
// last one, so the inner loop needs no test; their sums are not stored).
template <bool kInterior, int K, int S, typename scalar_t, typename index_t, typename acc_t>
__device__ __forceinline__ void gather_adjoint(const scalar_t* __restrict__ go,
                                               const scalar_t* __restrict__ m,
                                               acc_t (&acc)[kGradFeatureChannels],
                                               const index_t (&coff)[kGradFeatureChannels],
                                               index_t y, index_t x, index_t g,
                                               const Dims<index_t>& d, index_t HoWo) {
  constexpr int U = kOutputsPerThread<S>;
  using V = Vec<scalar_t, U>;
  const index_t k = K > 0 ? index_t(K) : d.k, s = S > 0 ? index_t(S) : d.s;
  const index_t j0 = center_reading(x, index_t(0), k);  // the centre column of kx = 0
  // Only the taps of a row (kx) are unrolled: unrolling ky and t too lets the
  // compiler hoist so many loads that the kernel spills (255 registers at
  // k = 5, s = 2, against about 110 this way).
#pragma unroll 1
  for (index_t ky = 0; ky < k; ++ky) {
    const index_t i = center_reading(y, ky, k);
    if (!kInterior && !in_bounds(i, d.H)) continue;
#pragma unroll 1
    for (index_t t = 0; t < s; ++t) {
      const index_t row0 = (i * s + t) * d.Wo + j0 * s;  // output pixel (i*s+t, j0*s)
      const scalar_t* mrow = m + mask_channel(g, ky, index_t(0), k) * HoWo + row0;
      const scalar_t* gorow[kGradFeatureChannels];
#pragma unroll
      for (int cc = 0; cc < kGradFeatureChannels; ++cc) gorow[cc] = go + coff[cc] + row0;
#pragma unroll
      for (index_t kx = 0; kx < k; ++kx) {
        if (!kInterior && !in_bounds(j0 - kx, d.W)) continue;
        const index_t back = kx * s;  // centre j0 - kx: s output columns left per tap
        // s consecutive outputs: one access when S is known, else one each
        for (index_t u = 0; u < s; u += U) {
          const V mv = load_vec<V>(mrow + kx * HoWo - back + u);
#pragma unroll
          for (int cc = 0; cc < kGradFeatureChannels; ++cc) {
            const V gv = load_vec<V>(gorow[cc] - back + u);
#pragma unroll
            for (int uu = 0; uu < U; ++uu) {
              acc[cc] += static_cast<acc_t>(mv.v[uu]) * static_cast<acc_t>(gv.v[uu]);
            }
          }
        }
      }
    }
  }
}

// grad_features for one (n, g, chunk of kGradFeatureChannels channels, input
// pixel) per thread: each mask value the pixel's adjoint reads is loaded once
// for the chunk's channels (a one-thread-per-element kernel would reload it
// for every channel). K, S = 0: k, s read at run time.
template <typename scalar_t, typename index_t, int K, int S>
__global__ void __launch_bounds__(kThreads)
    carafe_grad_features_chunk_kernel(const scalar_t* __restrict__ grad_output,
                                      const scalar_t* __restrict__ masks,
                                      scalar_t* __restrict__ grad_features, const Dims<index_t> d,
                                      const index_t chunks, const index_t total) {
  using acc_t = at::opmath_type<scalar_t>;
  const index_t HoWo = d.Ho * d.Wo, HW = d.H * d.W;
  const index_t r = kernel_radius(K > 0 ? index_t(K) : d.k);
  for (index_t idx = global_thread<index_t>(); idx < total; idx += grid_stride<index_t>()) {
    const index_t yx = idx % HW;
    index_t rest = idx / HW;
    const index_t chunk = rest % chunks;
    rest /= chunks;
    const index_t g = rest % d.G, n = rest / d.G;
    const index_t y = yx / d.W, x = yx % d.W;
    const index_t c_begin = g * d.cpg + chunk * kGradFeatureChannels;
    const index_t count = min(index_t(kGradFeatureChannels), (g + 1) * d.cpg - c_begin);
    const scalar_t* go = grad_output + (n * d.C + c_begin) * HoWo;
    const scalar_t* m = masks + n * d.mC * HoWo;
    acc_t acc[kGradFeatureChannels];
    index_t coff[kGradFeatureChannels];
#pragma unroll
    for (int cc = 0; cc < kGradFeatureChannels; ++cc) {
      acc[cc] = 0;
      coff[cc] = min(index_t(cc), count - 1) * HoWo;
    }
    if (warp_all(in_bounds(y - r, d.H) && in_bounds(y + r, d.H) && in_bounds(x - r, d.W) &&
                     in_bounds(x + r, d.W),
                 idx)) {
      gather_adjoint<true, K, S>(go, m, acc, coff, y, x, g, d, HoWo);
    } else {
      gather_adjoint<false, K, S>(go, m, acc, coff, y, x, g, d, HoWo);
    }
#pragma unroll
    for (int cc = 0; cc < kGradFeatureChannels; ++cc) {
      if (cc < count) {
        grad_features[(n * d.C + c_begin + cc) * HW + yx] = static_cast<scalar_t>(acc[cc]);
      }
    }
  }
}

}  // namespace kernels
}  // namespace carafe
