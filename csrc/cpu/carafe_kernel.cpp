// CPU kernels of carafe::carafe and carafe::carafe_backward.
//
// Layout: NCHW throughout (inputs are made contiguous; outputs are contiguous
// NCHW). Work is split with at::parallel_for over rows. All three results
// (output, grad_masks, grad_features) reduce to one micro-kernel,
// pair_sum_row: out[q] = sum_i a_i[q] * b_i[q] over a list of row pairs,
// computed 32 columns at a time in registers. The rows are made contiguous
// and unshifted by small per-thread row buffers:
// - U: a feature row, zero-padded and nearest-upsampled, so that tap kx of
//   output column q reads U[q + s*kx] (fill_upsampled_row);
// - for grad_features, zero-padded copies of mask and grad_output rows.
// No k*k-expanded buffer is ever built; the forward allocates only its output.
// Taps outside the input are skipped on all four sides (mmcv's rule): rows by
// leaving them out of the pair sums, columns by recomputing (forward) or
// zeroing (grad_masks) the few edge columns the zero padding reached.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <tuple>
#include <type_traits>
#include <vector>

#include "../carafe.h"
#include "../carafe_index.h"

namespace carafe {
namespace {

// One portable binary, with an AVX2+FMA clone chosen at load time on CPUs
// that have it: the micro-kernel is where the time goes.
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define CARAFE_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define CARAFE_CLONES
#endif

// out[q] = sum_{i < pairs} a[i][q] * b[i][q], for q < n (generic types:
// float16/bfloat16 operands, float/double accumulators).
template <typename Out, typename A, typename B>
void pair_sum_row(Out* __restrict__ out, const A* const* a, const B* const* b, int64_t pairs,
                  int64_t n) {
  using Acc = std::conditional_t<std::is_same_v<Out, double>, double, float>;
  for (int64_t q = 0; q < n; ++q) {
    Acc acc = 0;
    for (int64_t i = 0; i < pairs; ++i) {
      acc += static_cast<Acc>(a[i][q]) * static_cast<Acc>(b[i][q]);
    }
    out[q] = static_cast<Out>(acc);
  }
}

// float32: 32 columns at a time in four 8-wide vector accumulators that stay
// in registers over all pairs, then one store (GCC vector extensions: ymm
// FMAs in the AVX2 clone, pairs of SSE ops in the baseline one). A row whose
// width is not a multiple of 32 ends with a block overlapping the previous one
// (results are written, not accumulated, so recomputing a few is harmless);
// rows under 32 take the loop above.
typedef float v8f __attribute__((vector_size(32)));
inline v8f load8(const float* p) {
  v8f v;
  __builtin_memcpy(&v, p, sizeof(v));
  return v;
}
inline void store8(float* p, v8f v) { __builtin_memcpy(p, &v, sizeof(v)); }

CARAFE_CLONES void pair_sum_row(float* __restrict__ out, const float* const* a,
                                const float* const* b, int64_t pairs, int64_t n) {
  constexpr int64_t B = 32;
  if (n < B) return pair_sum_row<float, float, float>(out, a, b, pairs, n);
  for (int64_t q0 = 0; q0 < n; q0 += B) {
    const int64_t base = std::min(q0, n - B);
    v8f acc0 = {}, acc1 = {}, acc2 = {}, acc3 = {};
    for (int64_t i = 0; i < pairs; ++i) {
      const float* ar = a[i] + base;
      const float* br = b[i] + base;
      acc0 += load8(ar) * load8(br);
      acc1 += load8(ar + 8) * load8(br + 8);
      acc2 += load8(ar + 16) * load8(br + 16);
      acc3 += load8(ar + 24) * load8(br + 24);
    }
    store8(out + base, acc0);
    store8(out + base + 8, acc1);
    store8(out + base + 16, acc2);
    store8(out + base + 24, acc3);
  }
}

// out[kx][q] = sum_{c < count} a[c][q] * b[c][q + s*kx], for kx < K, q < n:
// grad_masks for the K taps (ky, 0..K-1) of one mask row at once. Each a[c]
// block is loaded once for all K taps, and the 2*K accumulators stay in
// registers over the whole channel sum: K times less traffic than K separate
// pair sums over the same channel rows. 16 columns per block; narrower rows
// return false (the caller falls back to pair sums).
template <int K>
inline __attribute__((always_inline)) bool shift_sum_rows_body(
    float* const* out, const float* const* a, const float* const* b, int64_t count, int64_t s,
    int64_t n) {
  constexpr int64_t B = 16;
  if (n < B) return false;
  for (int64_t q0 = 0; q0 < n; q0 += B) {
    const int64_t base = std::min(q0, n - B);
    v8f acc[K][2] = {};
    for (int64_t c = 0; c < count; ++c) {
      const v8f a0 = load8(a[c] + base), a1 = load8(a[c] + base + 8);
      const float* br = b[c] + base;
#pragma GCC unroll 8
      for (int kx = 0; kx < K; ++kx) {
        acc[kx][0] += a0 * load8(br + s * kx);
        acc[kx][1] += a1 * load8(br + s * kx + 8);
      }
    }
#pragma GCC unroll 8
    for (int kx = 0; kx < K; ++kx) {
      store8(out[kx] + base, acc[kx][0]);
      store8(out[kx] + base + 8, acc[kx][1]);
    }
  }
  return true;
}
// target_clones does not apply to templates: one clone set per K.
CARAFE_CLONES bool shift_sum_rows_k3(float* const* o, const float* const* a,
                                     const float* const* b, int64_t c, int64_t s, int64_t n) {
  return shift_sum_rows_body<3>(o, a, b, c, s, n);
}
CARAFE_CLONES bool shift_sum_rows_k5(float* const* o, const float* const* a,
                                     const float* const* b, int64_t c, int64_t s, int64_t n) {
  return shift_sum_rows_body<5>(o, a, b, c, s, n);
}
CARAFE_CLONES bool shift_sum_rows_k7(float* const* o, const float* const* a,
                                     const float* const* b, int64_t c, int64_t s, int64_t n) {
  return shift_sum_rows_body<7>(o, a, b, c, s, n);
}
bool shift_sum_rows(int64_t k, float* const* out, const float* const* a, const float* const* b,
                    int64_t count, int64_t s, int64_t n) {
  switch (k) {
    case 3: return shift_sum_rows_k3(out, a, b, count, s, n);
    case 5: return shift_sum_rows_k5(out, a, b, count, s, n);
    case 7: return shift_sum_rows_k7(out, a, b, count, s, n);
    default: return false;
  }
}

// out[c][q] = sum_{i < pairs} a[i][q] * b[c][i][q] for c < CB channels, q < n:
// the forward for a block of channels that share their mask rows (one
// group). Each mask vector is loaded once for the CB channels: CB FMAs per
// mask load instead of one, which is what bounded the one-channel loop
// (two loads per FMA). 16 columns per block; CB*2 accumulators stay in
// registers over all pairs. Narrower rows return false (the caller falls
// back to pair sums per channel).
template <int CB>
inline __attribute__((always_inline)) bool channel_block_sum_body(
    float* const* out, const float* const* a, const float* const* const* b, int64_t pairs,
    int64_t n) {
  constexpr int64_t B = 16;
  if (n < B) return false;
  for (int64_t q0 = 0; q0 < n; q0 += B) {
    const int64_t base = std::min(q0, n - B);
    v8f acc[CB][2] = {};
    for (int64_t i = 0; i < pairs; ++i) {
      const v8f a0 = load8(a[i] + base), a1 = load8(a[i] + base + 8);
#pragma GCC unroll 8
      for (int c = 0; c < CB; ++c) {
        const float* br = b[c][i] + base;
        acc[c][0] += a0 * load8(br);
        acc[c][1] += a1 * load8(br + 8);
      }
    }
#pragma GCC unroll 8
    for (int c = 0; c < CB; ++c) {
      store8(out[c] + base, acc[c][0]);
      store8(out[c] + base + 8, acc[c][1]);
    }
  }
  return true;
}
constexpr int64_t kChannelBlock = 4;
CARAFE_CLONES bool channel_block_sum4(float* const* o, const float* const* a,
                                      const float* const* const* b, int64_t pairs, int64_t n) {
  return channel_block_sum_body<4>(o, a, b, pairs, n);
}

// Sums into an accumulator row, then stores in the tensor's dtype; for
// float32 (and float64) the accumulator is the destination itself.
template <typename scalar_t, typename acc_t, typename A, typename Bt>
void pair_sum_to(scalar_t* dst, std::vector<acc_t>& tmp, const A* const* a, const Bt* const* b,
                 int64_t pairs, int64_t n) {
  if constexpr (std::is_same_v<scalar_t, acc_t>) {
    pair_sum_row(dst, a, b, pairs, n);
  } else {
    pair_sum_row(tmp.data(), a, b, pairs, n);
    for (int64_t q = 0; q < n; ++q) dst[q] = static_cast<scalar_t>(tmp[q]);
  }
}

using Dims = carafe::Dims<int64_t>;  // carafe_index.h, shared with the CUDA kernels

// Length of an upsampled feature row U: s*W plus s*r zeros on either side.
inline int64_t upsampled_len(const Dims& d) { return d.s * (d.W + d.k - 1); }
// Zero margin of the padded output-width rows used for grad_features.
inline int64_t grad_pad(const Dims& d) { return d.s * kernel_radius(d.k); }

// U <- the zero-padded, nearest-upsampled copy of one feature row:
// U[j] = row[j/s - r] for 0 <= j/s - r < W, else 0 (upsampled_len(d) entries).
// Position j = s*xs + u holds input column tap_coord(xs, 0) = xs - r, so U is
// r*s zeros, W runs of s copies, r*s zeros: loops without division or bounds
// tests, which the compiler vectorises.
template <typename scalar_t, typename acc_t>
void fill_upsampled_row(const scalar_t* __restrict__ row, const Dims& d, acc_t* __restrict__ U) {
  const int64_t s = d.s, W = d.W;
  const int64_t first = -tap_coord(int64_t(0), int64_t(0), d.k);  // xs of input column 0 (= r)
  std::fill(U, U + first * s, acc_t(0));
  acc_t* mid = U + first * s;
  if (s == 1) {
    for (int64_t x = 0; x < W; ++x) mid[x] = static_cast<acc_t>(row[x]);
  } else if (s == 2) {
    for (int64_t x = 0; x < W; ++x) {
      const acc_t v = static_cast<acc_t>(row[x]);
      mid[2 * x] = v;
      mid[2 * x + 1] = v;
    }
  } else {
    for (int64_t x = 0; x < W; ++x) {
      const acc_t v = static_cast<acc_t>(row[x]);
      for (int64_t u = 0; u < s; ++u) mid[x * s + u] = v;
    }
  }
  std::fill(mid + W * s, U + upsampled_len(d), acc_t(0));
}

// dst <- row (Wo entries) with grad_pad(d) zeros on either side.
template <typename scalar_t, typename acc_t>
void fill_padded_row(const scalar_t* __restrict__ row, const Dims& d, acc_t* __restrict__ dst) {
  const int64_t pad = grad_pad(d), Wo = d.Wo;
  std::fill(dst, dst + pad, acc_t(0));
  for (int64_t q = 0; q < Wo; ++q) dst[pad + q] = static_cast<acc_t>(row[q]);
  std::fill(dst + pad + Wo, dst + 2 * pad + Wo, acc_t(0));
}

// Grain: about 32K multiply-adds per task, so tiny inputs stay on one thread.
int64_t grain_for(int64_t madds_per_item) {
  return std::max<int64_t>(1, (int64_t(1) << 15) / std::max<int64_t>(1, madds_per_item));
}

// out[n, c, p, :] = sum_{ky, kx} masks[n, g*k*k + ky*k + kx, p, :] * U_{c, ky}[s*kx :]
// Taps left or right of the input are multiplied by U's zero padding. mmcv's
// rule (and the CUDA kernels') is to skip them, so a non-finite weight there
// must not reach the output (0 * inf is NaN). For finite weights 0 * w == 0
// and nothing needs doing; only a row with a non-finite weight on such a tap
// has its mask rows copied with those weights set to 0, and the same
// vectorised sums run over the copies: the output is then bitwise what
// weights of 0 there give. (Recomputing the edge columns of every channel
// instead cost as much as the vectorised sums themselves.)
//
// a_rows[j], j < pairs: the mask rows of output row p for the taps (ky, kx)
// of the input rows inside, in the forward's order (kx fastest); when needed
// they are pointed at the copies in clean.
template <typename scalar_t>
void skip_outside_weights(const scalar_t** a_rows, int64_t pairs, std::vector<scalar_t>& clean,
                          const Dims& d) {
  const int64_t Wo = d.Wo, r = kernel_radius(d.k);
  const int64_t left_end = std::min(Wo, d.s * r);
  const int64_t right_begin = std::max(left_end, d.s * (d.W - r));
  // fn(j, q) for every tap j whose column q reads left or right of the
  // input (only edge columns do); stops at the first false.
  auto each_outside = [&](auto&& fn) {
    for (int64_t j = 0; j < pairs; ++j) {
      const int64_t kx = j % d.k;
      auto visit = [&](int64_t q) {
        return in_bounds(tap_coord(source_coord(q, d.s), kx, d.k), d.W) || fn(j, q);
      };
      for (int64_t q = 0; q < left_end; ++q)
        if (!visit(q)) return false;
      for (int64_t q = right_begin; q < Wo; ++q)
        if (!visit(q)) return false;
    }
    return true;
  };
  if (each_outside([&](int64_t j, int64_t q) {
        return std::isfinite(static_cast<at::opmath_type<scalar_t>>(a_rows[j][q]));
      })) {
    return;
  }
  clean.resize(pairs * Wo);
  for (int64_t j = 0; j < pairs; ++j) {
    std::copy(a_rows[j], a_rows[j] + Wo, clean.data() + j * Wo);
    a_rows[j] = clean.data() + j * Wo;
  }
  each_outside([&](int64_t j, int64_t q) {
    clean[j * Wo + q] = scalar_t(0);
    return true;
  });
}

// float32 forward over blocks of kChannelBlock channels of one group: the
// mask rows of a tap are read once per block (channel_block_sum4). Items
// (n, i, g, block), block fastest within a group; a group whose channel
// count is not a multiple of the block size ends with a smaller block that
// takes the one-channel path.
void forward_blocked_float(const at::Tensor& features, const at::Tensor& masks,
                           at::Tensor& output, const Dims& d) {
  const float* f = features.const_data_ptr<float>();
  const float* m = masks.const_data_ptr<float>();
  float* out = output.mutable_data_ptr<float>();
  const int64_t Ho = d.Ho, Wo = d.Wo, Up = upsampled_len(d), mC = d.kk * d.G, cpg = d.cpg;
  const int64_t blocks = (cpg + kChannelBlock - 1) / kChannelBlock;
  at::parallel_for(0, d.N * d.H * d.G * blocks,
                   grain_for(d.kk * d.s * Wo * kChannelBlock), [&](int64_t b, int64_t e) {
    std::vector<float> U(kChannelBlock * d.k * Up), clean;
    std::vector<const float*> a_rows(d.kk);
    std::vector<const float*> b_rows(kChannelBlock * d.kk);
    const float* const* b_of[kChannelBlock];
    float* dst[kChannelBlock];
    for (int64_t item = b; item < e; ++item) {
      const int64_t blk = item % blocks, g = (item / blocks) % d.G;
      const int64_t i = (item / (blocks * d.G)) % d.H, n = item / (blocks * d.G * d.H);
      const int64_t c0 = g * cpg + blk * kChannelBlock;
      const int64_t count = std::min<int64_t>(kChannelBlock, (g + 1) * cpg - c0);
      int64_t pairs = 0;
      for (int64_t cc = 0; cc < count; ++cc) {
        const float* plane = f + (n * d.C + c0 + cc) * d.H * d.W;
        int64_t j = 0;
        // taps on rows outside the input read zeros: they are left out
        for (int64_t ky = 0; ky < d.k; ++ky) {
          const int64_t y = tap_coord(i, ky, d.k);
          if (!in_bounds(y, d.H)) continue;
          float* row = U.data() + (cc * d.k + ky) * Up;
          fill_upsampled_row(plane + y * d.W, d, row);
          for (int64_t kx = 0; kx < d.k; ++kx) b_rows[cc * d.kk + j++] = row + d.s * kx;
        }
        pairs = j;
        b_of[cc] = b_rows.data() + cc * d.kk;
      }
      for (int64_t t = 0; t < d.s; ++t) {
        const int64_t p = i * d.s + t;
        int64_t j = 0;
        for (int64_t ky = 0; ky < d.k; ++ky) {
          if (!in_bounds(tap_coord(i, ky, d.k), d.H)) continue;
          for (int64_t kx = 0; kx < d.k; ++kx) {
            a_rows[j++] = m + ((n * mC + mask_channel(g, ky, kx, d.k)) * Ho + p) * Wo;
          }
        }
        skip_outside_weights(a_rows.data(), pairs, clean, d);
        for (int64_t cc = 0; cc < count; ++cc) dst[cc] = out + ((n * d.C + c0 + cc) * Ho + p) * Wo;
        const bool blocked = count == kChannelBlock &&
                             channel_block_sum4(dst, a_rows.data(), b_of, pairs, Wo);
        for (int64_t cc = 0; cc < count; ++cc) {
          if (!blocked) pair_sum_row(dst[cc], a_rows.data(), b_of[cc], pairs, Wo);
        }
      }
    }
  });
}

template <typename scalar_t>
void forward_impl(const at::Tensor& features, const at::Tensor& masks, at::Tensor& output,
                  const Dims& d) {
  if constexpr (std::is_same_v<scalar_t, float>) {
    return forward_blocked_float(features, masks, output, d);
  }
  using acc_t = at::opmath_type<scalar_t>;
  const scalar_t* f = features.const_data_ptr<scalar_t>();
  const scalar_t* m = masks.const_data_ptr<scalar_t>();
  scalar_t* out = output.mutable_data_ptr<scalar_t>();
  const int64_t Ho = d.Ho, Wo = d.Wo, Up = upsampled_len(d), mC = d.kk * d.G;

  // Items (n, i, c), c fastest: one item writes the s output rows that come
  // from input row i for channel c; neighbouring items reuse the same mask
  // rows from cache.
  at::parallel_for(0, d.N * d.H * d.C, grain_for(d.kk * d.s * Wo), [&](int64_t b, int64_t e) {
    std::vector<acc_t> U(d.k * Up), tmp(Wo);
    std::vector<scalar_t> clean;
    std::vector<const scalar_t*> a_rows(d.kk);
    std::vector<const acc_t*> b_rows(d.kk);
    for (int64_t item = b; item < e; ++item) {
      const int64_t c = item % d.C, i = (item / d.C) % d.H, n = item / (d.C * d.H);
      const int64_t g = channel_group(c, d.cpg);
      const scalar_t* plane = f + (n * d.C + c) * d.H * d.W;
      // Taps on rows outside the input read zeros: they are left out.
      int64_t pairs = 0;
      for (int64_t ky = 0; ky < d.k; ++ky) {
        const int64_t y = tap_coord(i, ky, d.k);
        if (!in_bounds(y, d.H)) continue;
        fill_upsampled_row(plane + y * d.W, d, U.data() + ky * Up);
        for (int64_t kx = 0; kx < d.k; ++kx) b_rows[pairs++] = U.data() + ky * Up + d.s * kx;
      }
      for (int64_t t = 0; t < d.s; ++t) {
        const int64_t p = i * d.s + t;
        int64_t j = 0;
        for (int64_t ky = 0; ky < d.k; ++ky) {
          if (!in_bounds(tap_coord(i, ky, d.k), d.H)) continue;
          for (int64_t kx = 0; kx < d.k; ++kx) {
            a_rows[j++] = m + ((n * mC + mask_channel(g, ky, kx, d.k)) * Ho + p) * Wo;
          }
        }
        skip_outside_weights(a_rows.data(), pairs, clean, d);
        scalar_t* dst = out + ((n * d.C + c) * Ho + p) * Wo;
        pair_sum_to(dst, tmp, a_rows.data(), b_rows.data(), pairs, Wo);
      }
    }
  });
}

template <typename scalar_t>
void backward_impl(const at::Tensor& grad_output, const at::Tensor& features,
                   const at::Tensor& masks, at::Tensor& grad_features, at::Tensor& grad_masks,
                   const Dims& d) {
  using acc_t = at::opmath_type<scalar_t>;
  const scalar_t* go = grad_output.const_data_ptr<scalar_t>();
  const scalar_t* f = features.const_data_ptr<scalar_t>();
  const scalar_t* m = masks.const_data_ptr<scalar_t>();
  scalar_t* gf = grad_features.mutable_data_ptr<scalar_t>();
  scalar_t* gm = grad_masks.mutable_data_ptr<scalar_t>();
  const int64_t Ho = d.Ho, Wo = d.Wo, Up = upsampled_len(d), mC = d.kk * d.G, cpg = d.cpg;
  const int64_t HoWo = Ho * Wo, pad = grad_pad(d), Wp = Wo + 2 * pad;

  // grad_masks[n, g*k*k + ky*k + kx, p, q] = sum_{c in g} grad_out[n, c, p, q] * U_{c,ky}[q + s*kx]:
  // a sum over the group's channels. Item (n, i, g, ky) upsamples row
  // tap_coord(i, ky) of every channel of the group once, then writes the k*s
  // mask rows of taps (ky, *) at output rows i*s .. i*s+s-1. Items own
  // disjoint rows: no race, no atomics, a fixed summation order.
  at::parallel_for(0, d.N * d.H * d.G * d.k, grain_for(d.k * d.s * Wo * cpg),
                   [&](int64_t b, int64_t e) {
    std::vector<acc_t> U(cpg * Up), tmp(Wo);
    std::vector<const scalar_t*> a_rows(cpg);
    std::vector<const acc_t*> b_rows(cpg);
    std::vector<scalar_t*> dst_rows(d.k);
    for (int64_t item = b; item < e; ++item) {
      const int64_t ky = item % d.k, g = (item / d.k) % d.G, i = (item / (d.k * d.G)) % d.H;
      const int64_t n = item / (d.k * d.G * d.H);
      const int64_t y = tap_coord(i, ky, d.k);
      const bool row_ok = in_bounds(y, d.H);
      if (row_ok) {
        for (int64_t c = 0; c < cpg; ++c) {
          fill_upsampled_row(f + ((n * d.C + g * cpg + c) * d.H + y) * d.W, d,
                             U.data() + c * Up);
        }
      }
      for (int64_t t = 0; t < d.s; ++t) {
        const int64_t p = i * d.s + t;
        for (int64_t kx = 0; kx < d.k; ++kx) {
          dst_rows[kx] = gm + ((n * mC + mask_channel(g, ky, kx, d.k)) * Ho + p) * Wo;
        }
        if (!row_ok) {  // the taps read outside the input: zero gradient
          for (int64_t kx = 0; kx < d.k; ++kx) std::fill(dst_rows[kx], dst_rows[kx] + Wo, scalar_t(0));
          continue;
        }
        bool done = false;
        if constexpr (std::is_same_v<scalar_t, float>) {
          for (int64_t c = 0; c < cpg; ++c) {
            a_rows[c] = go + (n * d.C + g * cpg + c) * HoWo + p * Wo;
            b_rows[c] = U.data() + c * Up;
          }
          done = shift_sum_rows(d.k, dst_rows.data(), a_rows.data(), b_rows.data(), cpg, d.s,
                                Wo);
        }
        for (int64_t kx = 0; kx < d.k && !done; ++kx) {
          scalar_t* dst = dst_rows[kx];
          for (int64_t c = 0; c < cpg; ++c) {
            a_rows[c] = go + (n * d.C + g * cpg + c) * HoWo + p * Wo;
            b_rows[c] = U.data() + c * Up + d.s * kx;
          }
          pair_sum_to(dst, tmp, a_rows.data(), b_rows.data(), cpg, Wo);
        }
        // Taps left or right of the input are skipped (the forward's rule):
        // their gradient is zero, not grad_output times the zero padding
        // (inf * 0 would be NaN). Tap kx of column q reads q/s + kx - r.
        const int64_t r = kernel_radius(d.k);
        for (int64_t kx = 0; kx < d.k; ++kx) {
          const int64_t left_end = std::min(Wo, d.s * std::max<int64_t>(0, r - kx));
          const int64_t right_begin =
              std::max(left_end, std::min(Wo, d.s * (d.W + r - kx)));
          std::fill(dst_rows[kx], dst_rows[kx] + left_end, scalar_t(0));
          std::fill(dst_rows[kx] + right_begin, dst_rows[kx] + Wo, scalar_t(0));
        }
      }
    }
  });

  // grad_features: the adjoint of the forward's gather, as a gather too.
  // Input column x of row y receives, from every output row p = i*s + t whose
  // window row ky reads y (i = center_reading(y, ky)) and every kx, the terms
  // masks[tap][p][q] * grad_out[c][p][q] at q = s*(x - kx + r) + u, u < s.
  // In "upsampled" coordinates J = s*x + u (0 <= J < Wo) that is the pair sum
  // over (ky, t, kx) of rows shifted by s*(r - kx), then a fold of each run
  // of s values of J onto x. Zero-padded row copies (grad_pad(d) = s*r on each
  // side) make the shifts safe. Item (n, y, g) pads its k*k*s mask rows
  // once and reuses them for every channel of the group.
  // With float accumulators (float32, float16, bfloat16 tensors), blocks of
  // kChannelBlock channels share each padded mask vector load
  // (channel_block_sum4), as in the forward.
  constexpr int64_t CB = std::is_same_v<acc_t, float> ? kChannelBlock : 1;
  at::parallel_for(0, d.N * d.H * d.G, grain_for(d.kk * d.s * Wo * cpg),
                   [&](int64_t b, int64_t e) {
    std::vector<acc_t> Mp(d.kk * d.s * Wp), Gp(CB * d.k * d.s * Wp), sum(CB * Wo);
    std::vector<const acc_t*> a_rows(d.kk * d.s), b_rows(CB * d.kk * d.s);
    const acc_t* const* b_of[CB];
    acc_t* sums[CB];
    for (int64_t item = b; item < e; ++item) {
      const int64_t g = item % d.G, y = (item / d.G) % d.H, n = item / (d.G * d.H);
      int64_t pairs = 0;
      for (int64_t ky = 0; ky < d.k; ++ky) {
        const int64_t i = center_reading(y, ky, d.k);
        if (!in_bounds(i, d.H)) continue;
        for (int64_t t = 0; t < d.s; ++t) {
          const int64_t p = i * d.s + t;
          for (int64_t kx = 0; kx < d.k; ++kx) {
            acc_t* mrow = Mp.data() + ((ky * d.s + t) * d.k + kx) * Wp;
            fill_padded_row(m + ((n * mC + mask_channel(g, ky, kx, d.k)) * Ho + p) * Wo, d, mrow);
            // column J of the sum reads q = J - s*(kx - r), i.e. padded index
            // J + pad - s*kx + s*r = J + 2*pad - s*kx
            a_rows[pairs] = mrow + 2 * pad - d.s * kx;
            for (int64_t cc = 0; cc < CB; ++cc) {
              b_rows[cc * d.kk * d.s + pairs] =
                  Gp.data() + (cc * d.k * d.s + ky * d.s + t) * Wp + 2 * pad - d.s * kx;
            }
            ++pairs;
          }
        }
      }
      for (int64_t cc = 0; cc < CB; ++cc) {
        b_of[cc] = b_rows.data() + cc * d.kk * d.s;
        sums[cc] = sum.data() + cc * Wo;
      }
      for (int64_t c0 = g * cpg; c0 < (g + 1) * cpg; c0 += CB) {
        const int64_t count = std::min<int64_t>(CB, (g + 1) * cpg - c0);
        for (int64_t cc = 0; cc < count; ++cc) {
          for (int64_t ky = 0; ky < d.k; ++ky) {
            const int64_t i = center_reading(y, ky, d.k);
            if (!in_bounds(i, d.H)) continue;
            for (int64_t t = 0; t < d.s; ++t) {
              fill_padded_row(go + (n * d.C + c0 + cc) * HoWo + (i * d.s + t) * Wo, d,
                              Gp.data() + (cc * d.k * d.s + ky * d.s + t) * Wp);
            }
          }
        }
        bool blocked = false;
        if constexpr (CB == kChannelBlock) {
          blocked = count == CB && channel_block_sum4(sums, a_rows.data(), b_of, pairs, Wo);
        }
        for (int64_t cc = 0; cc < count; ++cc) {
          if (!blocked) pair_sum_row(sums[cc], a_rows.data(), b_of[cc], pairs, Wo);
          scalar_t* gfrow = gf + ((n * d.C + c0 + cc) * d.H + y) * d.W;
          for (int64_t x = 0; x < d.W; ++x) {
            acc_t total = 0;
            for (int64_t u = 0; u < d.s; ++u) total += sums[cc][x * d.s + u];
            gfrow[x] = static_cast<scalar_t>(total);
          }
        }
      }
    }
  });
}

Dims dims_of(const at::Tensor& features, int64_t k, int64_t G, int64_t s) {
  return make_dims<int64_t>(features.size(0), features.size(1), features.size(2),
                            features.size(3), k, G, s);
}

at::Tensor carafe_forward_cpu(const at::Tensor& features, const at::Tensor& masks,
                              int64_t kernel_size, int64_t group_size, int64_t scale_factor) {
  check_forward_args(features, masks, kernel_size, group_size, scale_factor);
  const Dims d = dims_of(features, kernel_size, group_size, scale_factor);
  const at::Tensor f = features.contiguous(), m = masks.contiguous();
  at::Tensor output = at::empty({d.N, d.C, d.Ho, d.Wo}, features.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, features.scalar_type(),
                                  "carafe_forward_cpu",
                                  [&] { forward_impl<scalar_t>(f, m, output, d); });
  return output;
}

std::tuple<at::Tensor, at::Tensor> carafe_backward_cpu(const at::Tensor& grad_output,
                                                       const at::Tensor& features,
                                                       const at::Tensor& masks,
                                                       int64_t kernel_size, int64_t group_size,
                                                       int64_t scale_factor) {
  check_backward_args(grad_output, features, masks, kernel_size, group_size, scale_factor);
  const Dims d = dims_of(features, kernel_size, group_size, scale_factor);
  const at::Tensor go = grad_output.contiguous(), f = features.contiguous(),
                   m = masks.contiguous();
  at::Tensor grad_features = at::empty(features.sizes(), features.options());
  at::Tensor grad_masks = at::empty(masks.sizes(), masks.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, features.scalar_type(), "carafe_backward_cpu",
      [&] { backward_impl<scalar_t>(go, f, m, grad_features, grad_masks, d); });
  return {grad_features, grad_masks};
}

}  // namespace

TORCH_LIBRARY_IMPL(carafe, CPU, m) {
  m.impl("carafe", &carafe_forward_cpu);
  m.impl("carafe_backward", &carafe_backward_cpu);
}

}  // namespace carafe
