// The float32 forward's window kernels (AVX2, AVX-512; scale 1 or 2), for
// float32 tensors and, on rows converted in cache, float16 and bfloat16.
//
// Output pixels (s*i + t, s*j + u), t, u < s, all read the k x k input window
// centred on (i, j), with different weights. Vectorising over input columns j
// (not output columns) lets each feature vector load feed those s*s outputs,
// and a block of CB channels shares each mask vector load: a tap costs s*s + CB
// loads for CB*s*s FMAs (the generic path's output-column kernel,
// channel_block_sum4: 1 + CB loads for CB FMAs, plus its upsampled-row fills,
// which repeat each input row k times).
// The operands are laid out for it once per item:
// - the mask rows of output rows s*i .. s*i+s-1, deinterleaved by u and cut
//   into vector-wide column blocks, in the order the kernel reads them
//   (lay_out_mask_row); weights of taps left or right of the input are zeroed
//   there, which is mmcv's rule (skip them) for any weight, finite or not;
// - the feature columns that blocks at the row ends read past the input, as
//   padded copies with r zeros on either side (other blocks read the tensor);
// the s*s sums are interleaved back into output columns on the store.
#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <algorithm>
#include <type_traits>
#include <vector>

#include "half.h"
#include "kernels.h"
#include "vec.h"

namespace carafe::cpu {
namespace {

struct WindowArgs {
  float* const* out;       // [CB * S] output rows (n, c, s*i + t, :), c in the block, t < S
  const float* masks;      // [W blocks][taps][S*S][L], taps = rows * k
  const float* plane;      // features (n, first channel of the block, first window row, 0), or
                           // null: every block reads the padded copies
  int64_t plane_stride;    // between channels of features (H*W)
  const float* edges;      // [CB][rows][Wp]: padded rows, r zeros each side; only the
                           // columns of blocks that reach past the input are filled
                           // (all of them where plane is null)
  int64_t rows, k, W, Wp;  // rows: window rows inside the input
  int64_t out_stride;      // between output channels (Ho*Wo)
};

// out[c][t][S*j + u] = sum_{taps} masks[tap][t*S + u][j] * feats[c][ky][j + kx]
template <typename V, int CB, int S>
inline __attribute__((always_inline)) void window_forward_body(const WindowArgs& a) {
  constexpr int64_t L = lanes<V>;
  const int64_t blocks = (a.W + L - 1) / L, r = (a.Wp - a.W) / 2;
  const float* mp = a.masks;
  for (int64_t jb = 0; jb < blocks; ++jb) {
    const int64_t base = block_start(jb, L, a.W);
    // Columns base - r .. base + L - 1 + r are read: from the features
    // themselves where that is inside the row, else from the padded copies.
    const bool inside = a.plane != nullptr && base >= r && base + L + r <= a.W;
    const float* fbase = inside ? a.plane + base - r : a.edges + base;
    const int64_t cstride = inside ? a.plane_stride : a.rows * a.Wp;
    const int64_t rstride = inside ? a.W : a.Wp;
    V acc[CB][S * S] = {};
    if (CB > 1 && inside) {
      // The next call's channels (the next block of this window row) in the
      // columns this block reads, newest window row only (the others were
      // read for the window row above): a plane apart from this block's
      // rows, beyond the hardware prefetchers' reach.
      const float* next = fbase + CB * cstride + (a.rows - 1) * rstride;
#pragma GCC unroll 16
      for (int c = 0; c < CB; ++c) {
        __builtin_prefetch(next + c * cstride);
        __builtin_prefetch(next + c * cstride + L + 2 * r - 1);
      }
    }
    if (CB > 1) {
      // The next block's output lines of these columns, for writing: the
      // output is written once, and without this each store that misses
      // waits for its line to be read in (RFO) with the next ones queued
      // behind it.
#pragma GCC unroll 16
      for (int c = 0; c < CB * S; ++c)
        prefetch_floats<true>(a.out[c] + CB * a.out_stride + S * base, S * L);
    }
    for (int64_t ky = 0; ky < a.rows; ++ky) {
      const float* frow = fbase + ky * rstride;
      for (int64_t kx = 0; kx < a.k; ++kx, mp += S * S * L) {
        V mv[S * S];
#pragma GCC unroll 16
        for (int tu = 0; tu < S * S; ++tu) mv[tu] = loadv<V>(mp + tu * L);
#pragma GCC unroll 16
        for (int c = 0; c < CB; ++c) {
          const V fv = loadv<V>(frow + c * cstride + kx);
#pragma GCC unroll 16
          for (int tu = 0; tu < S * S; ++tu) acc[c][tu] += mv[tu] * fv;
        }
      }
    }
#pragma GCC unroll 16
    for (int c = 0; c < CB; ++c) {
#pragma GCC unroll 4
      for (int t = 0; t < S; ++t) {
        if constexpr (S == 2) {
          store_interleaved(a.out[c * S + t] + 2 * base, acc[c][t * 2], acc[c][t * 2 + 1]);
        } else {
          storev(a.out[c] + base, acc[c][0]);
        }
      }
    }
  }
}

#if CARAFE_X86_KERNELS
// A kernel table row: blocks of CB channels and single channels, on vectors
// V, for scale S and any k.
template <typename V, int CB, int S>
constexpr KernelRow<BlockKernels<WindowArgs>> window_row() {
  return {0,
          S,
          {lanes<V>, CB, on_isa<V, WindowArgs, window_forward_body<V, CB, S>>(),
           on_isa<V, WindowArgs, window_forward_body<V, 1, S>>()}};
}
// Block sizes by registers: 32 vector registers with AVX-512, 16 with AVX2.
constexpr KernelRow<BlockKernels<WindowArgs>> kWindowKernels[] = {
    window_row<v16f, 4, 2>(), window_row<v16f, 8, 1>(), window_row<v8f, 2, 2>(),
    window_row<v8f, 4, 1>()};
#endif

// The window kernels for this CPU, scale s and width W; none (the caller
// takes the generic path) without AVX2, for scales other than 1 and 2, and
// for rows narrower than a vector.
BlockKernels<WindowArgs> forward_window_kernels(int64_t s, int64_t W) {
#if CARAFE_X86_KERNELS
  return choose_kernels(kWindowKernels, 0, s, W);
#else
  (void)s;
  (void)W;
  return {};
#endif
}

// One mask row (tap, output row s*i + t) in the window kernel's order:
// dst[jb * block_stride + u * L + l] = src[S * j + u] for j = block_start(jb) + l,
// zero where j is outside [jlo, jhi) (the tap reads outside the input there).
template <int S>
CARAFE_CLONES void lay_out_mask_row(const float* __restrict__ src, float* __restrict__ dst,
                                    int64_t block_stride, int64_t L, int64_t W, int64_t jlo,
                                    int64_t jhi) {
  const int64_t blocks = (W + L - 1) / L;
  for (int64_t jb = 0; jb < blocks; ++jb) {
    const int64_t base = block_start(jb, L, W);
    float* d = dst + jb * block_stride;
    const float* sp = src + S * base;
    // L is a multiple of 8: whole 8-float vectors (SSE pairs in the
    // baseline clone), deinterleaved in registers for S = 2
    for (int64_t l = 0; l < L; l += 8) {
      if constexpr (S == 2) {
        v8f even, odd;
        deinterleave(load8(sp + 2 * l), load8(sp + 2 * l + 8), even, odd);
        store8(d + l, even);
        store8(d + L + l, odd);
      } else {
        store8(d + l, load8(sp + l));
      }
    }
    if (base < jlo || base + L > jhi) {
      for (int u = 0; u < S; ++u) {
        for (int64_t l = 0; l < L; ++l) {
          if (base + l < jlo || base + l >= jhi) d[u * L + l] = 0.f;
        }
      }
    }
  }
}

// M <- the mask rows of output rows s*i .. s*i+s-1 of sample n, group g, for
// the window rows [ky_lo, ky_hi) inside the input, in the kernel's order
// (lay_out_mask_row). T = float16/bfloat16: each row is converted into mrow
// (Wo floats) first.
template <typename T>
void lay_out_masks(const T* m, const Dims& d, int64_t n, int64_t i, int64_t g, int64_t ky_lo,
                   int64_t ky_hi, int64_t L, float* M, float* mrow) {
  const int64_t S = d.s, k = d.k, W = d.W, r = kernel_radius(k), taps = (ky_hi - ky_lo) * k;
  for (int64_t ky = ky_lo; ky < ky_hi; ++ky) {
    for (int64_t kx = 0; kx < k; ++kx) {
      const int64_t tap = (ky - ky_lo) * k + kx;
      // columns j whose tap kx reads inside the input: 0 <= j + kx - r < W
      const int64_t jlo = std::max<int64_t>(0, r - kx), jhi = std::min(W, W + r - kx);
      for (int64_t t = 0; t < S; ++t) {
        const T* mt = m + mask_row(d, n, g, ky, kx, i * S + t);
        const float* src;
        if constexpr (std::is_same_v<T, float>) {
          src = mt;
        } else {
          convert_row(mt, mrow, d.Wo);
          src = mrow;
        }
        float* dst = M + (tap * S * S + t * S) * L;
        const int64_t block_stride = taps * S * S * L;
        if (S == 2) {
          lay_out_mask_row<2>(src, dst, block_stride, L, W, jlo, jhi);
        } else {
          lay_out_mask_row<1>(src, dst, block_stride, L, W, jlo, jhi);
        }
      }
    }
  }
}

// F <- the padded copies (r zeros either side, Wp = W + 2r columns) of the
// window rows [ky_lo, ky_hi) of channels c0 .. c0 + count - 1. float32: only
// the columns that the blocks reaching past the input read (the first
// block's and the last two's when r < L, else all); float16/bfloat16: whole
// rows, converted, so that the kernel reads only those.
template <typename T>
void fill_window_rows(const T* f, const Dims& d, int64_t n, int64_t c0, int64_t count, int64_t i,
                      int64_t ky_lo, int64_t ky_hi, int64_t L, float* F) {
  const int64_t W = d.W, r = kernel_radius(d.k), Wp = W + 2 * r, rows = ky_hi - ky_lo;
  const int64_t left_end = r < L ? std::min(Wp, L + 2 * r) : Wp;
  const int64_t right_begin = std::max(left_end, Wp - 2 * L - 2 * r);
  for (int64_t cc = 0; cc < count; ++cc) {
    const T* plane = f + (n * d.C + c0 + cc) * d.H * W;
    for (int64_t ky = ky_lo; ky < ky_hi; ++ky) {
      float* row = F + (cc * rows + ky - ky_lo) * Wp;
      const T* src = plane + (i + ky - r) * W;
      if constexpr (std::is_same_v<T, float>) {
        // padded columns [lo, hi): input column x = lo - r .. hi - r - 1, zero outside
        auto fill = [&](int64_t lo, int64_t hi) {
          const int64_t x0 = std::max<int64_t>(lo - r, 0), x1 = std::min(hi - r, W);
          std::fill(row + lo, row + std::max(lo, x0 + r), 0.f);
          if (x1 > x0) std::copy(src + x0, src + x1, row + x0 + r);
          std::fill(row + std::min(hi, std::max(lo, x1 + r)), row + hi, 0.f);
        };
        fill(0, left_end);
        fill(right_begin, Wp);
      } else {
        std::fill(row, row + r, 0.f);
        convert_row(src, row + r, W);
        std::fill(row + r + W, row + Wp, 0.f);
      }
    }
  }
}

}  // namespace

// Items (n, i, g, block), block fastest: consecutive items of a thread share
// the laid-out mask rows of (n, i, g), which are built once for them. A group
// whose channel count is not a multiple of the block size ends with
// one-channel calls (same arithmetic per output, so the same bits).
// T = float16/bfloat16: the mask rows are converted as they are laid out,
// the item's feature rows into the padded copies, and the kernel writes float
// rows in cache that are rounded into the output: the float32 arithmetic on
// the converted values, rounded once, without float32 copies of the tensors.
template <typename T>
bool forward_window(const at::Tensor& features, const at::Tensor& masks, at::Tensor& output,
                    const Dims& d) {
  constexpr bool kFloat = std::is_same_v<T, float>;
  const BlockKernels<WindowArgs> wk = forward_window_kernels(d.s, d.W);
  if (!wk.block) return false;
  const T* f = features.const_data_ptr<T>();
  const T* m = masks.const_data_ptr<T>();
  T* out = output.mutable_data_ptr<T>();
  const int64_t S = d.s, L = wk.L, CB = wk.CB, k = d.k, W = d.W, r = kernel_radius(k);
  const int64_t Wp = W + 2 * r, jblocks = (W + L - 1) / L, cblocks = (d.cpg + CB - 1) / CB;
  at::parallel_for(
      0, d.N * d.H * d.G * cblocks, grain_for(d.kk * S * d.Wo * CB), [&](int64_t b, int64_t e) {
        // M 64-byte aligned: the kernel's mask loads are then whole cache lines
        std::vector<float> Mbuf(jblocks * d.kk * S * S * L + 16), F(CB * k * Wp);
        float* const M = aligned64(Mbuf);
        std::vector<float*> dst(CB * S);
        // half types: a mask row as float, and the kernel's output rows
        std::vector<float> mrow(kFloat ? 0 : d.Wo), orows(kFloat ? 0 : CB * S * d.Wo);
        int64_t laid_out = -1;  // the (n, i, g) whose masks M holds
        for (int64_t item = b; item < e; ++item) {
          const int64_t blk = item % cblocks, nig = item / cblocks;
          const int64_t g = nig % d.G, i = (nig / d.G) % d.H, n = nig / (d.G * d.H);
          // window rows inside the input: y = i + ky - r in [0, H)
          const int64_t ky_lo = std::max<int64_t>(0, r - i), ky_hi = std::min(k, d.H + r - i);
          const int64_t rows = ky_hi - ky_lo;
          if (nig != laid_out) {
            lay_out_masks(m, d, n, i, g, ky_lo, ky_hi, L, M, mrow.data());
            laid_out = nig;
          }
          const int64_t c0 = g * d.cpg + blk * CB;
          const int64_t count = std::min(CB, (g + 1) * d.cpg - c0);
          fill_window_rows(f, d, n, c0, count, i, ky_lo, ky_hi, L, F.data());
          for (int64_t cc = 0; cc < count; ++cc) {
            for (int64_t t = 0; t < S; ++t) {
              if constexpr (kFloat) {
                dst[cc * S + t] = out + ((n * d.C + c0 + cc) * d.Ho + i * S + t) * d.Wo;
              } else {
                dst[cc * S + t] = orows.data() + (cc * S + t) * d.Wo;
              }
            }
          }
          const int64_t HW = d.H * W;
          // half types: no plane (the kernel reads the converted rows in F); the
          // output rows in orows are adjacent, the next block's unknown (0)
          const float* plane = nullptr;
          int64_t out_stride = 0;
          if constexpr (kFloat) {
            plane = f + ((n * d.C + c0) * d.H + i + ky_lo - r) * W;
            out_stride = d.Ho * d.Wo;
          }
          if (count == CB) {
            wk.block(WindowArgs{dst.data(), M, plane, HW, F.data(), rows, k, W, Wp, out_stride});
          } else {
            for (int64_t cc = 0; cc < count; ++cc) {
              wk.single(WindowArgs{dst.data() + cc * S, M, plane ? plane + cc * HW : nullptr, HW,
                                   F.data() + cc * rows * Wp, rows, k, W, Wp, out_stride});
            }
          }
          if constexpr (!kFloat) {
            for (int64_t cc = 0; cc < count; ++cc) {
              for (int64_t t = 0; t < S; ++t) {
                convert_row(dst[cc * S + t], out + ((n * d.C + c0 + cc) * d.Ho + i * S + t) * d.Wo,
                            d.Wo);
              }
            }
          }
        }
      });
  return true;
}
template bool forward_window<float>(const at::Tensor&, const at::Tensor&, at::Tensor&, const Dims&);
template bool forward_window<at::Half>(const at::Tensor&, const at::Tensor&, at::Tensor&,
                                       const Dims&);
template bool forward_window<at::BFloat16>(const at::Tensor&, const at::Tensor&, at::Tensor&,
                                           const Dims&);

}  // namespace carafe::cpu
