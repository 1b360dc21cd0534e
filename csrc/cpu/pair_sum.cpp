// The generic path's float32 micro-kernels (pair_sum.h): sums of products
// of whole rows, with vector accumulators that stay in registers over the
// whole sum.
#include "pair_sum.h"

#include <algorithm>

namespace carafe::cpu {

// 32 columns at a time in four 8-wide vector accumulators that stay in
// registers over all pairs, then one store (ymm FMAs in the AVX2 clone,
// pairs of SSE ops in the baseline one). A row whose width is not a multiple
// of 32 ends with a block overlapping the previous one (results are written,
// not accumulated, so recomputing a few is harmless).
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

namespace {

// shift_sum_rows for K taps. Each a[c] block is loaded once for all K taps,
// and the 2*K accumulators stay in registers over the whole channel sum: K
// times less traffic than K separate pair sums over the same channel rows.
// 16 columns per block.
template <int K>
CARAFE_CLONES bool shift_sum_rows_k(float* const* out, const float* const* a, const float* const* b,
                                    int64_t count, int64_t s, int64_t n) {
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

using ShiftSumFn = bool (*)(float* const*, const float* const*, const float* const*, int64_t,
                            int64_t, int64_t);
constexpr struct {
  int64_t k;
  ShiftSumFn fn;
} kShiftSums[] = {{3, shift_sum_rows_k<3>}, {5, shift_sum_rows_k<5>}, {7, shift_sum_rows_k<7>}};

// channel_block_sum4 for CB channels on vectors V. Each mask vector is
// loaded once for the CB channels: CB FMAs per mask load instead of one,
// which is what bounds the one-channel loop (two loads per FMA). Two
// vectors of columns per block; CB*2 accumulators stay in registers over
// all pairs.
template <typename V, int CB>
inline __attribute__((always_inline)) bool channel_block_sum_body(float* const* out,
                                                                  const float* const* a,
                                                                  const float* const* const* b,
                                                                  int64_t pairs, int64_t n) {
  constexpr int64_t L = lanes<V>, B = 2 * L;
  if (n < B) return false;
  for (int64_t q0 = 0; q0 < n; q0 += B) {
    const int64_t base = std::min(q0, n - B);
    V acc[CB][2] = {};
    for (int64_t i = 0; i < pairs; ++i) {
      const V a0 = loadv<V>(a[i] + base), a1 = loadv<V>(a[i] + base + L);
#pragma GCC unroll 8
      for (int c = 0; c < CB; ++c) {
        const float* br = b[c][i] + base;
        acc[c][0] += a0 * loadv<V>(br);
        acc[c][1] += a1 * loadv<V>(br + L);
      }
    }
#pragma GCC unroll 8
    for (int c = 0; c < CB; ++c) {
      storev(out[c] + base, acc[c][0]);
      storev(out[c] + base + L, acc[c][1]);
    }
  }
  return true;
}
CARAFE_CLONES bool channel_block_sum4_v8(float* const* o, const float* const* a,
                                         const float* const* const* b, int64_t pairs, int64_t n) {
  return channel_block_sum_body<v8f, 4>(o, a, b, pairs, n);
}
#if CARAFE_X86_KERNELS
// 16-wide with AVX-512 (rows of 32 columns or more).
CARAFE_TARGET_V4 bool channel_block_sum4_v16(float* const* o, const float* const* a,
                                             const float* const* const* b, int64_t pairs,
                                             int64_t n) {
  return channel_block_sum_body<v16f, 4>(o, a, b, pairs, n);
}
#endif

}  // namespace

bool shift_sum_rows(int64_t k, float* const* out, const float* const* a, const float* const* b,
                    int64_t count, int64_t s, int64_t n) {
  for (const auto& row : kShiftSums) {
    if (row.k == k) return row.fn(out, a, b, count, s, n);
  }
  return false;
}

bool channel_block_sum4(float* const* o, const float* const* a, const float* const* const* b,
                        int64_t pairs, int64_t n) {
  static_assert(kChannelBlock == 4);
#if CARAFE_X86_KERNELS
  if (n >= 32 && cpu_has_v4()) return channel_block_sum4_v16(o, a, b, pairs, n);
#endif
  return channel_block_sum4_v8(o, a, b, pairs, n);
}

}  // namespace carafe::cpu
