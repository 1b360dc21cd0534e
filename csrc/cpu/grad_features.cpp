// The float32 grad_features tap-sum kernels (AVX2, AVX-512; k in {1, 3, 5,
// 7, 9}, scale 1 or 2): unshifted tap sums, then one shifted sum per row.
//
// grad_features[n, c, y, x] = sum_{ky, kx, t, u} masks[(ky, kx)][s*i + t][q] * grad_out[c][s*i +
// t][q] with i = y - ky + r (window row), q = s*(x - kx + r) + u (output column). The product at
// output column q does not depend on kx - r; only the input column its term lands on does. So,
// vectorised over q:
//   A[c][kx][q] = sum_{ky, t} masks[(ky, kx)][s*i + t][q] * grad_out[c][s*i + t][q]
// with every grad_output vector loaded once for the k taps kx, every mask
// vector once for the CB channels of a block, and the CB*k sums in registers
// over all (ky, t) (CB + k loads for CB*k FMAs, no shuffles); then
//   grad_features[c][y][x] = sum_u sum_kx A[c][kx][s*(x - kx + r) + u],
// one pass per row over A rows zero-padded by s*r, where the s neighbours u
// are added by one deinterleave. A tap left or right of the input lands in A
// only at columns that no x reads, so its weight (finite or not) never
// reaches a result (mmcv's rule); window rows outside the input are skipped.
#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

#include "kernels.h"
#include "vec.h"

namespace carafe::cpu {
namespace {

struct GradFeatTapArgs {
  const float* go;            // grad_output plane (n, c, 0, 0) of the block's first channel
  const float* const* mrows;  // [rows] masks (n, g*k*k + ky*k, s*i, 0), window rows ky inside,
                              //   newest first (ky = 0: the largest i)
  const int64_t* go_rows;     // [rows] offset of output row s*i in a grad_output plane
  int64_t rows;
  int64_t plane, Wo;  // Ho*Wo: between taps and between channels; Wo: between rows t
  float* const* A;    // [CB] A[c]: k rows of Wa floats, A[c][kx][q] at kx*Wa + pad + q
  int64_t Wa, pad;    // pad >= s*r zeros before and after the Wo columns
  float* const* out;  // [CB] grad_features rows (n, c, y, :)
  int64_t W, r;
};

template <typename V, int CB, int K, int S>
inline __attribute__((always_inline)) void grad_feat_taps_body(const GradFeatTapArgs& a) {
  constexpr int64_t L = lanes<V>;
  // Locals, not a.*: the stores to A could alias the argument struct as far
  // as the compiler knows, and it would reload every field after each one.
  const int64_t Wo = a.Wo, plane = a.plane, Wa = a.Wa, pad = a.pad, W = a.W, rows = a.rows;
  const float* const go = a.go;
  float* A[CB];
#pragma GCC unroll 16
  for (int c = 0; c < CB; ++c) A[c] = a.A[c] + pad;
  const int64_t qblocks = (Wo + L - 1) / L;
  for (int64_t qb = 0; qb < qblocks; ++qb) {
    const int64_t base = block_start(qb, L, Wo);
    V acc[CB][K] = {};
    for (int64_t row = 0; row < rows; ++row) {
      const float* mr = a.mrows[row] + base;
      const int64_t goff = a.go_rows[row] + base;
#pragma GCC unroll 4
      for (int t = 0; t < S; ++t) {
        V gv[CB];
#pragma GCC unroll 16
        for (int c = 0; c < CB; ++c) {
          const float* p = go + c * plane + goff + t * Wo;
          // The newest window row (first) of the next block of channels: a
          // plane apart, beyond the hardware prefetchers' reach; the other
          // rows were read for earlier rows y and are in cache.
          if (row == 0) prefetch_floats(p + CB * plane, L);
          gv[c] = loadv<V>(p);
        }
#pragma GCC unroll 8
        for (int kx = 0; kx < K; ++kx) {
          const V mv = loadv<V>(mr + kx * plane + t * Wo);
#pragma GCC unroll 16
          for (int c = 0; c < CB; ++c) acc[c][kx] += mv * gv[c];
        }
      }
    }
#pragma GCC unroll 16
    for (int c = 0; c < CB; ++c) {
#pragma GCC unroll 8
      for (int kx = 0; kx < K; ++kx) storev(A[c] + kx * Wa + base, acc[c][kx]);
    }
  }
  // out[c][x] = sum_u sum_kx A[c][kx][S*(x - kx + r) + u]: for a block of L
  // columns x, S vectors of A per kx (lanes S*x + u), added over kx, then
  // the S lanes of each x added (deinterleaved for S = 2). Stored, not
  // accumulated, so the last block may overlap the one before.
  const int64_t xblocks = (W + L - 1) / L, shift = S * a.r;
#pragma GCC unroll 16
  for (int c = 0; c < CB; ++c) {
    const float* a0 = A[c] + shift;  // kx = 0; tap kx is (Wa - S) * kx further
    for (int64_t xb = 0; xb < xblocks; ++xb) {
      const int64_t base = block_start(xb, L, W);
      V sum[S];
#pragma GCC unroll 4
      for (int u = 0; u < S; ++u) sum[u] = loadv<V>(a0 + S * base + u * L);
#pragma GCC unroll 8
      for (int kx = 1; kx < K; ++kx) {
        const float* p = a0 + kx * (Wa - S) + S * base;
#pragma GCC unroll 4
        for (int u = 0; u < S; ++u) sum[u] += loadv<V>(p + u * L);
      }
      if constexpr (S == 2) {
        V even, odd;
        deinterleave(sum[0], sum[1], even, odd);
        storev(a.out[c] + base, even + odd);
      } else {
        storev(a.out[c] + base, sum[0]);
      }
    }
  }
}

#if CARAFE_X86_KERNELS
// A kernel table row: blocks of CB channels and single channels, on vectors
// V, for k = K and scale S.
template <typename V, int CB, int K, int S>
constexpr KernelRow<BlockKernels<GradFeatTapArgs>> grad_feat_row() {
  return {K,
          S,
          {lanes<V>, CB, on_isa<V, GradFeatTapArgs, grad_feat_taps_body<V, CB, K, S>>(),
           on_isa<V, GradFeatTapArgs, grad_feat_taps_body<V, 1, K, S>>()}};
}
// CB*k sums, CB grad_output vectors and one mask vector must fit in the
// registers (32 with AVX-512, 16 with AVX2: k = 7 and 9 one channel at a time).
constexpr KernelRow<BlockKernels<GradFeatTapArgs>> kGradFeatKernels[] = {
    grad_feat_row<v16f, 8, 1, 1>(), grad_feat_row<v16f, 8, 1, 2>(), grad_feat_row<v16f, 4, 3, 1>(),
    grad_feat_row<v16f, 4, 3, 2>(), grad_feat_row<v16f, 4, 5, 1>(), grad_feat_row<v16f, 4, 5, 2>(),
    grad_feat_row<v16f, 2, 7, 1>(), grad_feat_row<v16f, 2, 7, 2>(), grad_feat_row<v16f, 2, 9, 1>(),
    grad_feat_row<v16f, 2, 9, 2>(), grad_feat_row<v8f, 4, 1, 1>(),  grad_feat_row<v8f, 4, 1, 2>(),
    grad_feat_row<v8f, 2, 3, 1>(),  grad_feat_row<v8f, 2, 3, 2>(),  grad_feat_row<v8f, 2, 5, 1>(),
    grad_feat_row<v8f, 2, 5, 2>(),  grad_feat_row<v8f, 1, 7, 1>(),  grad_feat_row<v8f, 1, 7, 2>(),
    grad_feat_row<v8f, 1, 9, 1>(),  grad_feat_row<v8f, 1, 9, 2>()};
#endif

// The grad_features kernels for this CPU, k, scale and width; none where no
// kernel applies (the generic path runs).
BlockKernels<GradFeatTapArgs> grad_feat_kernels(const Dims& d) {
#if CARAFE_X86_KERNELS
  return choose_kernels(kGradFeatKernels, d.k, d.s, d.W);
#else
  (void)d;
  return {};
#endif
}

}  // namespace

// Item (n, g, chunk, y) writes row y of the chunk's channels, whole: rows
// are owned by one item (no race, no atomics) and each element is summed in
// a fixed order. Channel chunks of 8 blocks, rows y fastest: the grad_output
// rows that k consecutive rows y read stay in cache between them.
bool grad_features_taps(const float* go, const float* m, float* gf, const Dims& d) {
  const BlockKernels<GradFeatTapArgs> wk = grad_feat_kernels(d);
  if (!wk.block) return false;
  const int64_t S = d.s, k = d.k, W = d.W, r = kernel_radius(k), Wo = d.Wo, HoWo = d.Ho * d.Wo;
  // A rows: values at [pad, pad + Wo), S*r zeros (at least) either side;
  // pad and the row length multiples of 16 floats (whole cache lines)
  const int64_t pad = (S * r + 15) / 16 * 16, Wa = (pad + Wo + S * r + 15) / 16 * 16;
  const int64_t CB = wk.CB, chunk = 8 * CB, chunks = (d.cpg + chunk - 1) / chunk;
  at::parallel_for(
      0, d.N * d.G * chunks * d.H, grain_for(d.kk * S * Wo * chunk), [&](int64_t b, int64_t e) {
        std::vector<float> Astore(CB * k * Wa + 16, 0.f);  // the pads are never written
        float* const Abuf = aligned64(Astore);
        std::vector<float*> A(CB), out(CB);
        for (int64_t cc = 0; cc < CB; ++cc) A[cc] = Abuf + cc * k * Wa;
        std::vector<const float*> mrows(k);
        std::vector<int64_t> go_rows(k);
        for (int64_t item = b; item < e; ++item) {
          const int64_t y = item % d.H, ch = (item / d.H) % chunks;
          const int64_t g = (item / (d.H * chunks)) % d.G, n = item / (d.H * chunks * d.G);
          int64_t rows = 0;  // ky = r reads row y itself: never zero
          for (int64_t ky = 0; ky < k; ++ky) {
            const int64_t i = center_reading(y, ky, k);
            if (!in_bounds(i, d.H)) continue;
            mrows[rows] = m + mask_row(d, n, g, ky, 0, S * i);
            go_rows[rows++] = S * i * Wo;
          }
          const int64_t c_begin = g * d.cpg + ch * chunk,
                        c_end = std::min(c_begin + chunk, (g + 1) * d.cpg);
          for (int64_t c0 = c_begin; c0 < c_end; c0 += CB) {
            const int64_t count = std::min(CB, c_end - c0);
            for (int64_t cc = 0; cc < count; ++cc) {
              out[cc] = gf + ((n * d.C + c0 + cc) * d.H + y) * W;
              // the next item's row of this channel, for writing (see window_forward_body)
              if (y + 1 < d.H) prefetch_floats<true>(out[cc] + W, W);
            }
            if (count == CB) {
              const float* plane0 = go + (n * d.C + c0) * HoWo;
              wk.block(GradFeatTapArgs{plane0, mrows.data(), go_rows.data(), rows, HoWo, Wo,
                                       A.data(), Wa, pad, out.data(), W, r});
            } else {
              for (int64_t cc = 0; cc < count; ++cc) {
                wk.single(GradFeatTapArgs{go + (n * d.C + c0 + cc) * HoWo, mrows.data(),
                                          go_rows.data(), rows, HoWo, Wo, A.data() + cc, Wa, pad,
                                          out.data() + cc, W, r});
              }
            }
          }
        }
      });
  return true;
}

}  // namespace carafe::cpu
