// The float32 grad_masks window kernels (AVX2, AVX-512; scale 1 or 2).
//
// grad_masks[n, (g, ky, kx), s*i + t, s*j + u] = sum_{c in g} grad_out[n, c, s*i + t, s*j + u]
//                                                 * features[n, c, i + ky - r, j + kx - r]
// Vectorised over input columns j, as the forward: a feature vector load
// feeds the s*s outputs of its window, the k taps of a window row share the
// grad_output vectors (deinterleaved by u), and the s*s*k sums of a window
// row stay in registers over the channels: s*s + k loads for s*s*k FMAs.
// One item (n, i, g) does all k window rows, per column block and chunk of
// kGradMaskChunk channels: the chunk's grad_output vectors are loaded and
// deinterleaved once (window row 0) into a buffer and read from it, in L1,
// for the other k - 1 rows; partial sums cross chunks through a buffer, so
// each element is still summed over the group's channels in channel order.
// Features are read in place: a lane whose tap reads left or right of the
// input reads a neighbouring row's value (or a padded copy's zero), and its
// grad_masks entries are zeroed afterwards (zero_outside_columns).
#include <ATen/Parallel.h>

#include <algorithm>
#include <type_traits>
#include <vector>

#include "kernels.h"
#include "vec.h"

namespace carafe::cpu {
namespace {

constexpr int64_t kGradMaskChunk = 32;

struct GradMaskItemArgs {
  float* const* out;      // [k * K * S] grad_masks rows (ky, kx, t): (ky*K + kx)*S + t
  const float* go;        // grad_output (n, first channel of g, s*i, 0)
  int64_t go_stride, Wo;  // between channels (Ho*Wo), between output rows t (Wo)
  const float* feats;     // features of the group's first channel; column -r of a row is
                          // feats + f_rows[row] - r, channels f_stride apart
  int64_t f_stride;
  const int64_t* f_rows;  // [rows] offsets of the window rows inside the input
  int64_t ky_lo, rows;
  int64_t count, W;          // channels of the group, input width
  int64_t jb_begin, jb_end;  // the column blocks to compute (block_start)
  const float* next_go;      // the next item's grad_output (its first block's columns), or null
  const float*
      next_feat;    // the next item's newest feature row (its first block, column -r), or null
  float* scratch;   // [kGradMaskChunk][S*S][L] + [rows][S*S*K][L] floats
  bool accumulate;  // add to the sums already in out (of the channels before these)
};

// The sums of window row `row` (acc[t][u][kx]) at the start of the chunk
// of channels from c0: accumulating, those of the channels before these as
// stored in its grad_masks rows (kx, t), interleaved by u: exact, so the
// additions continue as if the channels were one group; else zero for the
// first chunk, and the chunks before's from ap after it.
template <typename V, int K, int S>
inline __attribute__((always_inline)) void load_sums(V (&acc)[S][S][K], const GradMaskItemArgs& a,
                                                     int64_t row, int64_t c0, const float* ap,
                                                     int64_t base) {
  constexpr int64_t L = lanes<V>;
  if (c0 == 0 && a.accumulate) {
    float* const* out = a.out + (a.ky_lo + row) * K * S;
#pragma GCC unroll 8
    for (int kx = 0; kx < K; ++kx) {
#pragma GCC unroll 4
      for (int t = 0; t < S; ++t) {
        const float* p = out[kx * S + t] + S * base;
        if constexpr (S == 2) {
          deinterleave(loadv<V>(p), loadv<V>(p + L), acc[t][0][kx], acc[t][1][kx]);
        } else {
          acc[t][0][kx] = loadv<V>(p);
        }
      }
    }
  } else {
#pragma GCC unroll 4
    for (int t = 0; t < S; ++t)
#pragma GCC unroll 4
      for (int u = 0; u < S; ++u)
#pragma GCC unroll 8
        for (int kx = 0; kx < K; ++kx)
          acc[t][u][kx] = c0 == 0 ? V{} : loadv<V>(ap + ((t * S + u) * K + kx) * L);
  }
}

// The sums of window row `row` at the end of a chunk: after the group's last
// chunk into its grad_masks rows, interleaved by u, leaving the first
// `shared` columns (which hold their sums already); before it into ap, for
// the next chunk.
template <typename V, int K, int S>
inline __attribute__((always_inline)) void store_sums(const V (&acc)[S][S][K],
                                                      const GradMaskItemArgs& a, int64_t row,
                                                      float* ap, int64_t base, int64_t shared,
                                                      bool last) {
  constexpr int64_t L = lanes<V>;
  if (last && shared == 0) {
    float* const* out = a.out + (a.ky_lo + row) * K * S;
#pragma GCC unroll 8
    for (int kx = 0; kx < K; ++kx) {
#pragma GCC unroll 4
      for (int t = 0; t < S; ++t) {
        if constexpr (S == 2) {
          store_interleaved(out[kx * S + t] + 2 * base, acc[t][0][kx], acc[t][1][kx]);
        } else {
          storev(out[kx] + base, acc[t][0][kx]);
        }
      }
    }
  } else if (last) {
    float* const* out = a.out + (a.ky_lo + row) * K * S;
    float tmp[S * L];
    for (int kx = 0; kx < K; ++kx) {
      for (int t = 0; t < S; ++t) {
        if constexpr (S == 2) {
          store_interleaved(tmp, acc[t][0][kx], acc[t][1][kx]);
        } else {
          storev(tmp, acc[t][0][kx]);
        }
        std::copy(tmp + S * shared, tmp + S * L, out[kx * S + t] + S * (base + shared));
      }
    }
  } else {
#pragma GCC unroll 4
    for (int t = 0; t < S; ++t)
#pragma GCC unroll 4
      for (int u = 0; u < S; ++u)
#pragma GCC unroll 8
        for (int kx = 0; kx < K; ++kx) storev(ap + ((t * S + u) * K + kx) * L, acc[t][u][kx]);
  }
}

// One item's k*K*S grad_masks rows (see the top of this file), over its
// column blocks [jb_begin, jb_end) and the group's channels in chunks.
template <typename V, int K, int S>
inline __attribute__((always_inline)) void grad_masks_item_body(const GradMaskItemArgs& a) {
  constexpr int64_t L = lanes<V>, CH = kGradMaskChunk, r = K / 2;
  const int64_t blocks = a.jb_end, count = a.count, rows = a.rows;
  const int64_t go_stride = a.go_stride, Wo = a.Wo, f_stride = a.f_stride;
  float* const gbuf = a.scratch;                   // [CH][S][S][L]
  float* const abuf = a.scratch + CH * S * S * L;  // [rows][S][S][K][L]
  for (int64_t jb = a.jb_begin; jb < blocks; ++jb) {
    const int64_t base = block_start(jb, L, a.W);
    // Accumulating, the columns this block shares with the one before (the
    // row's last block, moved left) already hold their new sums: they are
    // computed again but not stored.
    const int64_t shared = a.accumulate && jb > a.jb_begin
                               ? std::max<int64_t>(0, block_start(jb - 1, L, a.W) + L - base)
                               : 0;
    if (jb + 1 < blocks) {
      // the next block's output lines, for writing (see window_forward_body)
      const int64_t next = block_start(jb + 1, L, a.W);
      for (int64_t ky = a.ky_lo; ky < a.ky_lo + rows; ++ky) {
#pragma GCC unroll 16
        for (int o = 0; o < K * S; ++o)
          prefetch_floats<true>(a.out[ky * K * S + o] + S * next, S * L);
      }
    }
    for (int64_t c0 = 0; c0 < count; c0 += CH) {
      const int64_t n = std::min(CH, count - c0);
      const bool last = c0 + CH >= count;
      // The next unit's lines (the next block's, or the next item's after
      // the last block) go to L2 during this one, one line per channel and
      // window row: the DRAM reads spread over all the sums instead of
      // bursting when a block starts, where the prefetches would wait for
      // line-fill buffers. Lines: grad_output rows t (S*L floats each),
      // then the newest feature row (the others were read for the item
      // before, the same strip's columns).
      const bool next_item = jb + 1 == blocks;
      const int64_t next_base = next_item ? 0 : block_start(jb + 1, L, a.W);
      const float* ngo = next_item ? a.next_go : a.go + S * next_base;
      const float* nfeat = next_item ? a.next_feat : a.feats + a.f_rows[rows - 1] + next_base - r;
      constexpr int kGoLines = S * S * L / 16;  // S rows of S*L floats
      auto prefetch_next = [&](int64_t line, int64_t c) {
        if (line < kGoLines) {
          if (ngo) prefetch_l2(ngo + c * go_stride + (line / S) * Wo + (line % S) * 16);
        } else if (line == kGoLines && nfeat) {
          prefetch_l2(nfeat + c * f_stride);
          prefetch_l2(nfeat + c * f_stride + L + 2 * r - 1);
        }
      };
      // Window row `row` over the chunk; kFirst: grad_output from the tensor
      // (deinterleaved into gbuf), else from gbuf.
      auto pass = [&](int64_t row, auto first) {
        constexpr bool kFirst = decltype(first)::value;
        // the lines this pass prefetches: `row`, and after the last row the rest
        const int64_t line_lo = row, line_hi = row + 1 == rows ? kGoLines + 1 : row + 1;
        V acc[S][S][K];
        float* ap = abuf + row * S * S * K * L;
        load_sums<V, K, S>(acc, a, row, c0, ap, base);
        const float* fr = a.feats + c0 * f_stride + a.f_rows[row] + base - r;
        const float* gp = a.go + c0 * go_stride + S * base;
        for (int64_t c = 0; c < n; ++c, fr += f_stride, gp += go_stride) {
          V g[S][S];
          float* gb = gbuf + c * S * S * L;
          for (int64_t line = line_lo; line < line_hi; ++line) prefetch_next(line, c0 + c);
          if constexpr (kFirst) {
#pragma GCC unroll 4
            for (int t = 0; t < S; ++t) {
              if constexpr (S == 2) {
                deinterleave(loadv<V>(gp + t * Wo), loadv<V>(gp + t * Wo + L), g[t][0], g[t][1]);
              } else {
                g[t][0] = loadv<V>(gp + t * Wo);
              }
#pragma GCC unroll 4
              for (int u = 0; u < S; ++u) storev(gb + (t * S + u) * L, g[t][u]);
            }
          } else {
#pragma GCC unroll 4
            for (int t = 0; t < S; ++t)
#pragma GCC unroll 4
              for (int u = 0; u < S; ++u) g[t][u] = loadv<V>(gb + (t * S + u) * L);
          }
#pragma GCC unroll 8
          for (int kx = 0; kx < K; ++kx) {
            const V fv = loadv<V>(fr + kx);
#pragma GCC unroll 4
            for (int t = 0; t < S; ++t)
#pragma GCC unroll 4
              for (int u = 0; u < S; ++u) acc[t][u][kx] += g[t][u] * fv;
          }
        }
        store_sums<V, K, S>(acc, a, row, ap, base, shared, last);
      };
      pass(0, std::true_type{});
      for (int64_t row = 1; row < rows; ++row) pass(row, std::false_type{});
    }
  }
}

// The kernel of one item, with its vector width.
struct GradMaskKernel {
  int64_t L = 0;
  void (*fn)(const GradMaskItemArgs&) = nullptr;
};

#if CARAFE_X86_KERNELS
template <typename V, int K, int S>
constexpr KernelRow<GradMaskKernel> grad_masks_row() {
  return {K, S, {lanes<V>, on_isa<V, GradMaskItemArgs, grad_masks_item_body<V, K, S>>()}};
}
// The s*s*k sums and s*s + 1 more vectors must fit in the registers (32 with
// AVX-512, 16 with AVX2).
constexpr KernelRow<GradMaskKernel> kGradMaskKernels[] = {
    grad_masks_row<v16f, 1, 2>(), grad_masks_row<v16f, 3, 2>(), grad_masks_row<v16f, 5, 2>(),
    grad_masks_row<v16f, 1, 1>(), grad_masks_row<v16f, 3, 1>(), grad_masks_row<v16f, 5, 1>(),
    grad_masks_row<v16f, 7, 1>(), grad_masks_row<v8f, 1, 2>(),  grad_masks_row<v8f, 3, 2>(),
    grad_masks_row<v8f, 1, 1>(),  grad_masks_row<v8f, 3, 1>(),  grad_masks_row<v8f, 5, 1>()};
#endif

// The grad_masks kernel for this CPU, k, scale and width; none where no
// kernel applies (the generic path runs).
GradMaskKernel grad_masks_kernel(const Dims& d) {
#if CARAFE_X86_KERNELS
  return choose_kernels(kGradMaskKernels, d.k, d.s, d.W);
#else
  (void)d;
  return {};
#endif
}

// Item (n, i, g) -> out[(ky*k + kx)*S + t]: its k*k*S grad_masks rows (the
// window rows outside the input zeroed in columns [q_lo, q_hi): they get no
// gradient).
void item_out_rows(float* gm, const Dims& d, int64_t n, int64_t i, int64_t g, int64_t ky_lo,
                   int64_t ky_hi, int64_t q_lo, int64_t q_hi, float** out) {
  const int64_t S = d.s, k = d.k;
  for (int64_t ky = 0; ky < k; ++ky) {
    for (int64_t kx = 0; kx < k; ++kx) {
      for (int64_t t = 0; t < S; ++t) {
        float* row = gm + mask_row(d, n, g, ky, kx, i * S + t);
        out[(ky * k + kx) * S + t] = row;
        if (ky < ky_lo || ky >= ky_hi) std::fill(row + q_lo, row + q_hi, 0.f);
      }
    }
  }
}

// Where item (n, i, g) reads the window rows [ky_lo, ky_hi) of the group's
// features: returns the first channel's (column 0 of a row is at +f_rows[row],
// channels *f_stride apart). The kernel reads r columns left of each row and
// r right of it. In the tensor those are a neighbouring row's (harmless:
// their lanes are zeroed afterwards), except before the tensor's first
// element and after its last: such items read zero-padded copies in F.
const float* item_features(const float* f, const Dims& d, int64_t n, int64_t i, int64_t g,
                           int64_t ky_lo, int64_t ky_hi, std::vector<float>& F, int64_t* f_rows,
                           int64_t* f_stride) {
  const int64_t W = d.W, r = kernel_radius(d.k), Wp = W + 2 * r, HW = d.H * W, cpg = d.cpg;
  const int64_t rows = ky_hi - ky_lo;
  const int64_t first = (n * d.C + g * cpg) * HW + (i + ky_lo - r) * W - r;
  const int64_t end = (n * d.C + (g + 1) * cpg - 1) * HW + (i + ky_hi - 1 - r) * W + W + r;
  const float* feats = f + (n * d.C + g * cpg) * HW;
  *f_stride = HW;
  if (first >= 0 && end <= d.N * d.C * HW) {
    for (int64_t row = 0; row < rows; ++row) f_rows[row] = (i + ky_lo + row - r) * W;
    return feats;
  }
  F.assign(cpg * rows * Wp, 0.f);
  for (int64_t c = 0; c < cpg; ++c) {
    for (int64_t row = 0; row < rows; ++row) {
      const float* src = feats + c * HW + (i + ky_lo + row - r) * W;
      std::copy(src, src + W, F.data() + (c * rows + row) * Wp + r);
    }
  }
  for (int64_t row = 0; row < rows; ++row) f_rows[row] = row * Wp;
  *f_stride = rows * Wp;
  return F.data() + r;
}

}  // namespace

bool grad_masks_window_applies(const Dims& d) { return grad_masks_kernel(d).fn != nullptr; }

// Item (n, i, g) writes the k*k*s mask rows of output rows s*i .. s*i+s-1;
// rows are owned by one item (no race, no atomics) and each element is
// summed over the group's channels in channel order.
bool grad_masks_window(const float* go, const float* f, float* gm, const Dims& d, bool accumulate) {
  const GradMaskKernel wk = grad_masks_kernel(d);
  if (!wk.fn) return false;
  const int64_t S = d.s, k = d.k, W = d.W, r = kernel_radius(k), cpg = d.cpg;
  const int64_t HoWo = d.Ho * d.Wo, HW = d.H * W, L = wk.L, blocks = (W + L - 1) / L;
  const int64_t scratch = kGradMaskChunk * S * S * L + k * S * S * k * L;
  // Column strips of `strip` blocks, items (n, g, strip, i), i fastest: an
  // item reads k feature rows and s grad_output rows of its strip for the
  // group's channels, and the next item k - 1 of the same feature rows, to
  // be found in cache. About 512 KiB of rows per item (at 2x256x100x152
  // whole rows are 1.4 MB, with the item's grad_output streaming through),
  // a width chosen by timing strip widths at the benchmark shapes.
  const int64_t per_block = cpg * (k + S * S) * L * int64_t(sizeof(float));
  const int64_t strip = std::max<int64_t>(1, (int64_t(512) << 10) / per_block);
  // the last block overlaps the one before (block_start): both in the last strip
  const int64_t strips = std::max<int64_t>(1, (blocks - 1 + strip - 1) / strip);
  at::parallel_for(
      0, d.N * d.G * strips * d.H, grain_for(d.kk * S * S * W * cpg / strips),
      [&](int64_t b, int64_t e) {
        std::vector<float> F, buf(scratch + 16);
        float* const sc = aligned64(buf);
        std::vector<float*> out(k * k * S);
        std::vector<int64_t> f_rows(k);
        for (int64_t item = b; item < e; ++item) {
          const int64_t i = item % d.H, st = (item / d.H) % strips;
          const int64_t g = (item / (d.H * strips)) % d.G, n = item / (d.H * strips * d.G);
          const int64_t jb_begin = st * strip,
                        jb_end = st + 1 == strips ? blocks : jb_begin + strip;
          // output columns of the strip
          const int64_t q_lo = S * block_start(jb_begin, L, W),
                        q_hi = S * (block_start(jb_end - 1, L, W) + L);
          // window rows inside the input: y = i + ky - r in [0, H)
          const int64_t ky_lo = std::max<int64_t>(0, r - i), ky_hi = std::min(k, d.H + r - i);
          const int64_t rows = ky_hi - ky_lo;
          item_out_rows(gm, d, n, i, g, ky_lo, ky_hi, q_lo, q_hi, out.data());
          int64_t f_stride = 0;
          const float* feats =
              item_features(f, d, n, i, g, ky_lo, ky_hi, F, f_rows.data(), &f_stride);
          const float* go_i = go + (n * d.C + g * cpg) * HoWo + i * S * d.Wo;
          const int64_t col = block_start(jb_begin, L, W);
          const float* next_go = i + 1 < d.H ? go_i + S * d.Wo + S * col : nullptr;
          const float* next_feat = i + 1 + r < d.H && f_stride == HW && col >= r
                                       ? feats + (i + 1 + r) * W + col - r
                                       : nullptr;
          wk.fn(GradMaskItemArgs{out.data(), go_i, HoWo, d.Wo, feats, f_stride, f_rows.data(),
                                 ky_lo, rows, cpg, W, jb_begin, jb_end, next_go, next_feat, sc,
                                 accumulate});
          for (int64_t ky = ky_lo; ky < ky_hi; ++ky) {
            for (int64_t kx = 0; kx < k; ++kx) {
              for (int64_t t = 0; t < S; ++t) {
                zero_outside_columns(out[(ky * k + kx) * S + t], kx, d, q_lo, q_hi);
              }
            }
          }
        }
      });
  return true;
}

}  // namespace carafe::cpu
