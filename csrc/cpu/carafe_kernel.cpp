// CPU kernels of carafe::carafe and carafe::carafe_backward.
//
// Layout: NCHW throughout (inputs are made contiguous; outputs are contiguous
// NCHW). Work is split with at::parallel_for over rows; every element is
// summed in a fixed order by one thread (no atomics), so results do not depend
// on the thread count.
//
// float32 on x86-64 with AVX2 or AVX-512, scale 1 or 2 (the FPN case):
// - forward and grad_masks, the "window" kernels: output pixels
//   (s*i + t, s*j + u) share the input window around (i, j); vectorised over
//   input columns j, one feature vector load feeds all s*s of them (forward:
//   mask vectors shared by a block of channels; grad_masks: the k*s*s sums
//   of a window row in registers over the group's channels);
// - grad_features, k in {1, 3, 5, 7, 9}: per-tap sums over output columns
//   (grad_output loads shared by the k taps of a row, mask loads by a block
//   of channels), then one shifted sum per row (grad_feat_taps_body).
// One function per ISA, k and block size, chosen at run time
// (cpu_has_v4/v3); AVX-512 and AVX2 compute each element with the same
// operations in the same order.
//
// float16 and bfloat16 run those float32 kernels and round each result once:
// the forward on rows converted in cache (forward_window), the backward on
// float32 copies of blocks of channels (backward_half_via_float).
//
// Everything else (float64, other scales, narrow rows, CPUs without AVX2)
// reduces to one micro-kernel, pair_sum_row: out[q] = sum_i a_i[q] * b_i[q]
// over a list of row pairs, computed 32 columns at a time in registers, on
// rows made contiguous and unshifted by small per-thread row buffers:
// - U: a feature row, zero-padded and nearest-upsampled, so that tap kx of
//   output column q reads U[q + s*kx] (fill_upsampled_row);
// - for grad_features, zero-padded copies of mask and grad_output rows.
// No k*k-expanded buffer is ever built.
// Taps outside the input are skipped on all four sides (mmcv's rule), so a
// non-finite weight there never reaches a result.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <string>
#include <tuple>
#include <type_traits>
#include <vector>

#if defined(__linux__)
#include <sys/mman.h>
#endif
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#include <immintrin.h>
#endif

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
// float or double, accumulated in the output's precision).
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
typedef float v16f __attribute__((vector_size(64)));
typedef int v8i __attribute__((vector_size(32)));
typedef int v16i __attribute__((vector_size(64)));

template <typename V>
inline constexpr int64_t lanes = sizeof(V) / sizeof(float);

template <typename V>
inline __attribute__((always_inline)) V loadv(const float* p) {
  V v;
  __builtin_memcpy(&v, p, sizeof(v));
  return v;
}
template <typename V>
inline __attribute__((always_inline)) void storev(float* p, V v) { __builtin_memcpy(p, &v, sizeof(v)); }
// Prefetches p[0 .. n), one line per 16 floats from p (for writing: kWrite).
template <bool kWrite = false>
inline __attribute__((always_inline)) void prefetch_floats(const float* p, int64_t n) {
  for (int64_t i = 0; i < n; i += 16) __builtin_prefetch(p + i, kWrite ? 1 : 0);
}
// Prefetches the line of p into L2 (not L1). Inline asm on x86-64: GCC 12
// dropped __builtin_prefetch(p, 0, 2) calls in grad_masks_item_body.
inline __attribute__((always_inline)) void prefetch_l2(const float* p) {
#if defined(__GNUC__) && defined(__x86_64__)
  asm volatile("prefetcht1 %0" : : "m"(*reinterpret_cast<const char*>(p)));
#else
  __builtin_prefetch(p, 0, 2);
#endif
}
// The first 64-byte aligned element of v, whose size must include 15 spare
// floats: a kernel's whole-vector loads and stores of it are then whole lines.
inline float* aligned64(std::vector<float>& v) {
  return v.data() + ((64 - reinterpret_cast<uintptr_t>(v.data()) % 64) % 64) / 4;
}
inline v8f load8(const float* p) { return loadv<v8f>(p); }
inline void store8(float* p, v8f v) { storev(p, v); }

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
// The highest instruction set the kernels chosen at run time may use: 2
// AVX-512, 1 AVX2, 0 neither. CARAFE_CPU_CAPABILITY=avx2 or =default (read
// once, as ATen reads ATEN_CPU_CAPABILITY) lowers it, so that the AVX2 and
// portable paths can be tested on an AVX-512 machine; the pair-sum
// micro-kernel keeps the clone chosen at load time.
int capability_cap() {
  static const int cap = [] {
    const char* v = std::getenv("CARAFE_CPU_CAPABILITY");
    const std::string s = v ? v : "avx512";
    TORCH_CHECK(s == "avx512" || s == "avx2" || s == "default",
                "CARAFE_CPU_CAPABILITY must be one of avx512, avx2, default; got '", s, "'");
    return s == "avx512" ? 2 : s == "avx2" ? 1 : 0;
  }();
  return cap;
}
// x86-64-v4's AVX-512 subsets; libgcc also checks that the OS saves the registers.
bool cpu_has_v4() {
  static const bool yes = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
                          __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq");
  return yes && capability_cap() >= 2;
}
bool cpu_has_v3() {
  static const bool yes = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return yes && capability_cap() >= 1;
}
#endif

// ---- rows of float16/bfloat16 to float and back ----
// The half-precision forward runs the float32 window kernels on rows
// converted in cache (see forward_window). Conversions round as c10's do
// (round to nearest even; a bfloat16 NaN becomes 0x7fc0), so results equal
// the float32 op's rounded by Tensor.to(). Element-wise c10 conversions do
// not vectorise; these take 16 (AVX-512) or 8 (AVX2 with F16C) at a time.
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
// GCC 12 warns inside its own AVX-512 intrinsics ("__Y may be used
// uninitialized", GCC bug 105593)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
// name(s, d, n): d[i] = convert(s[i]) for i < n, V at a time, the last
// vector moved back to end at n (overlapping the one before: the same values
// written again); returns how many were done (n, or 0 when n < V). The body
// converts the V elements at s + i into d + i.
#define CARAFE_CONVERT_FN(name, isa, V, Src, Dst, ...)                       \
  __attribute__((target(isa))) int64_t name(const Src* s, Dst* d, int64_t n) { \
    if (n < V) return 0;                                                     \
    for (int64_t j = 0; j < n; j += V) {                                     \
      const int64_t i = std::min<int64_t>(j, n - V);                         \
      __VA_ARGS__                                                            \
    }                                                                        \
    return n;                                                                \
  }
// bfloat16 -> float: the 16 bits become the top half of the float's
CARAFE_CONVERT_FN(bf16_to_float_v4, "arch=x86-64-v4", 16, uint16_t, float,
  const __m512i w = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(s + i)));
  _mm512_storeu_ps(d + i, _mm512_castsi512_ps(_mm512_slli_epi32(w, 16)));)
CARAFE_CONVERT_FN(bf16_to_float_v3, "arch=x86-64-v3", 8, uint16_t, float,
  const __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(s + i)));
  _mm256_storeu_ps(d + i, _mm256_castsi256_ps(_mm256_slli_epi32(w, 16)));)
// float -> bfloat16, c10's round_to_nearest_even: (u + 0x7fff + lsb) >> 16, NaN 0x7fc0
CARAFE_CONVERT_FN(float_to_bf16_v4, "arch=x86-64-v4", 16, float, uint16_t,
  const __m512 v = _mm512_loadu_ps(s + i);
  const __m512i u = _mm512_castps_si512(v);
  const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
  __m512i r = _mm512_srli_epi32(_mm512_add_epi32(u, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7fff))), 16);
  r = _mm512_mask_mov_epi32(r, _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q), _mm512_set1_epi32(0x7fc0));
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(d + i), _mm512_cvtepi32_epi16(r));)
CARAFE_CONVERT_FN(float_to_bf16_v3, "arch=x86-64-v3", 8, float, uint16_t,
  const __m256 v = _mm256_loadu_ps(s + i);
  const __m256i u = _mm256_castps_si256(v);
  const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
  __m256i r = _mm256_srli_epi32(_mm256_add_epi32(u, _mm256_add_epi32(lsb, _mm256_set1_epi32(0x7fff))), 16);
  r = _mm256_blendv_epi8(r, _mm256_set1_epi32(0x7fc0), _mm256_castps_si256(_mm256_cmp_ps(v, v, _CMP_UNORD_Q)));
  // values < 2^16: the saturating pack keeps them
  _mm_storeu_si128(reinterpret_cast<__m128i*>(d + i),
                   _mm_packus_epi32(_mm256_castsi256_si128(r), _mm256_extracti128_si256(r, 1)));)
// float16 <-> float: the hardware conversions (F16C; rounding to nearest even)
CARAFE_CONVERT_FN(half_to_float_v4, "arch=x86-64-v4", 16, uint16_t, float,
  _mm512_storeu_ps(d + i, _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(s + i))));)
CARAFE_CONVERT_FN(half_to_float_v3, "arch=x86-64-v3", 8, uint16_t, float,
  _mm256_storeu_ps(d + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(s + i))));)
CARAFE_CONVERT_FN(float_to_half_v4, "arch=x86-64-v4", 16, float, uint16_t,
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(d + i),
                      _mm512_cvtps_ph(_mm512_loadu_ps(s + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));)
CARAFE_CONVERT_FN(float_to_half_v3, "arch=x86-64-v3", 8, float, uint16_t,
  _mm_storeu_si128(reinterpret_cast<__m128i*>(d + i),
                   _mm256_cvtps_ph(_mm256_loadu_ps(s + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));)
#undef CARAFE_CONVERT_FN
#pragma GCC diagnostic pop
#endif

// dst[i] = To(src[i]) for i < n, between float and float16/bfloat16
// (rounding to nearest even), vectorised where the CPU allows.
template <typename T>
using RawBits = std::conditional_t<std::is_same_v<T, float>, float, uint16_t>;
template <typename From, typename To>
void convert_row(const From* src, To* dst, int64_t n) {
  static_assert(std::is_same_v<From, float> != std::is_same_v<To, float>, "float and a half type");
  int64_t i = 0;  // the first not converted
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
  const auto* s = reinterpret_cast<const RawBits<From>*>(src);
  auto* d = reinterpret_cast<RawBits<To>*>(dst);
  const bool v4 = cpu_has_v4(), v3 = !v4 && cpu_has_v3() && __builtin_cpu_supports("f16c");
  if constexpr (std::is_same_v<From, at::BFloat16>) {
    i = v4 ? bf16_to_float_v4(s, d, n) : v3 ? bf16_to_float_v3(s, d, n) : 0;
  } else if constexpr (std::is_same_v<From, at::Half>) {
    i = v4 ? half_to_float_v4(s, d, n) : v3 ? half_to_float_v3(s, d, n) : 0;
  } else if constexpr (std::is_same_v<To, at::BFloat16>) {
    i = v4 ? float_to_bf16_v4(s, d, n) : v3 ? float_to_bf16_v3(s, d, n) : 0;
  } else {
    i = v4 ? float_to_half_v4(s, d, n) : v3 ? float_to_half_v3(s, d, n) : 0;
  }
#endif
  for (; i < n; ++i) dst[i] = static_cast<To>(src[i]);
}

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
template <typename V, int CB>
inline __attribute__((always_inline)) bool channel_block_sum_body(
    float* const* out, const float* const* a, const float* const* const* b, int64_t pairs,
    int64_t n) {
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
constexpr int64_t kChannelBlock = 4;
CARAFE_CLONES bool channel_block_sum4_v8(float* const* o, const float* const* a,
                                         const float* const* const* b, int64_t pairs, int64_t n) {
  return channel_block_sum_body<v8f, 4>(o, a, b, pairs, n);
}
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
// 16-wide with AVX-512 (rows of 32 columns or more).
__attribute__((target("arch=x86-64-v4"))) bool channel_block_sum4_v16(
    float* const* o, const float* const* a, const float* const* const* b, int64_t pairs,
    int64_t n) {
  return channel_block_sum_body<v16f, 4>(o, a, b, pairs, n);
}
#endif
bool channel_block_sum4(float* const* o, const float* const* a, const float* const* const* b,
                        int64_t pairs, int64_t n) {
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
  if (n >= 32 && cpu_has_v4()) return channel_block_sum4_v16(o, a, b, pairs, n);
#endif
  return channel_block_sum4_v8(o, a, b, pairs, n);
}

// ---- float32 forward: one feature load for the s*s outputs of a window ----
// Output pixels (s*i + t, s*j + u), t, u < s, all read the k x k input window
// centred on (i, j), with different weights. Vectorising over input columns j
// (not output columns) lets each feature vector load feed those s*s outputs,
// and a block of CB channels shares each mask vector load: a tap costs s*s + CB
// loads for CB*s*s FMAs (the output-column kernel above: 1 + CB loads for CB
// FMAs, plus its upsampled-row fills, which repeat each input row k times).
// The operands are laid out for it once per item:
// - the mask rows of output rows s*i .. s*i+s-1, deinterleaved by u and cut
//   into vector-wide column blocks, in the order the kernel reads them
//   (lay_out_mask_row); weights of taps left or right of the input are zeroed
//   there, which is mmcv's rule (skip them) for any weight, finite or not;
// - the feature columns that blocks at the row ends read past the input, as
//   padded copies with r zeros on either side (other blocks read the tensor);
// the s*s sums are interleaved back into output columns on the store.

// Stores lanes a[l] and b[l] at p[2l] and p[2l + 1] (2*lanes<V> entries).
inline __attribute__((always_inline)) void store_interleaved(float* p, v8f a, v8f b) {
  store8(p, __builtin_shuffle(a, b, v8i{0, 8, 1, 9, 2, 10, 3, 11}));
  store8(p + 8, __builtin_shuffle(a, b, v8i{4, 12, 5, 13, 6, 14, 7, 15}));
}
inline __attribute__((always_inline)) void store_interleaved(float* p, v16f a, v16f b) {
  storev(p, __builtin_shuffle(a, b, v16i{0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23}));
  storev(p + 16, __builtin_shuffle(a, b, v16i{8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14,
                                              30, 15, 31}));
}

// Start column of vector block jb of a row of W >= L columns: blocks of L,
// the last one moved left to end at W (it recomputes a few columns; results
// are stored, not accumulated, so that is harmless).
inline int64_t block_start(int64_t jb, int64_t L, int64_t W) { return std::min(jb * L, W - L); }

struct WindowArgs {
  float* const* out;   // [CB * S] output rows (n, c, s*i + t, :), c in the block, t < S
  const float* masks;  // [W blocks][taps][S*S][L], taps = rows * k
  const float* plane;  // features (n, first channel of the block, first window row, 0), or
                       // null: every block reads the padded copies
  int64_t plane_stride;  // between channels of features (H*W)
  const float* edges;  // [CB][rows][Wp]: padded rows, r zeros each side; only the
                       // columns of blocks that reach past the input are filled
                       // (all of them where plane is null)
  int64_t rows, k, W, Wp;  // rows: window rows inside the input
  int64_t out_stride;  // between output channels (Ho*Wo)
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
      // rows, beyond the hardware prefetchers' reach. Forward at
      // 2x256x50x76, 2 threads, 15 interleaved calls, three runs: median
      // 6.5-7.1 ms without, 5.5 with (1 thread 12.8 -> 10.3); at
      // 2x256x100x152 2-3% (its time is mostly the output's memory).
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
      // behind it. Forward, 2 threads, interleaved calls, four runs: median
      // 7.3-9.8 -> 5.7-7.4 ms at 2x256x50x76, 24.1-39.8 -> 22.2-36.2 ms at
      // 2x256x100x152.
#pragma GCC unroll 16
      for (int c = 0; c < CB * S; ++c) prefetch_floats<true>(a.out[c] + CB * a.out_stride + S * base, S * L);
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


// A channel-blocked kernel family for this CPU (and scale, k): vector width
// L, a kernel for blocks of CB channels that share mask loads, and a
// one-channel kernel for a group's remainder (same operations per element,
// so the same bits). Empty when none applies (no AVX2, scale other than 1 or
// 2, rows narrower than a vector): the caller takes the output-column kernels.
template <typename Args>
struct BlockKernels {
  int64_t L = 0, CB = 0;
  void (*block)(const Args&) = nullptr;
  void (*single)(const Args&) = nullptr;
};

// One function per ISA and template arguments: target() cannot be given to
// a template, and target_clones cannot choose the block size (the AVX-512
// build has 32 vector registers, AVX2 16).
#define CARAFE_ISA_FN(name, isa, Args, body) \
  __attribute__((target(isa))) void name(const Args& a) { body(a); }

// The eight functions of a channel-blocked family (body<V, CB, S>) and the
// chooser prefix##_kernels(s, W).
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define CARAFE_BLOCK_FAMILY(prefix, Args, body)                                        \
  CARAFE_ISA_FN(prefix##_v4_c4_s2, "arch=x86-64-v4", Args, (body<v16f, 4, 2>))         \
  CARAFE_ISA_FN(prefix##_v4_c1_s2, "arch=x86-64-v4", Args, (body<v16f, 1, 2>))         \
  CARAFE_ISA_FN(prefix##_v4_c8_s1, "arch=x86-64-v4", Args, (body<v16f, 8, 1>))         \
  CARAFE_ISA_FN(prefix##_v4_c1_s1, "arch=x86-64-v4", Args, (body<v16f, 1, 1>))         \
  CARAFE_ISA_FN(prefix##_v3_c2_s2, "arch=x86-64-v3", Args, (body<v8f, 2, 2>))          \
  CARAFE_ISA_FN(prefix##_v3_c1_s2, "arch=x86-64-v3", Args, (body<v8f, 1, 2>))          \
  CARAFE_ISA_FN(prefix##_v3_c4_s1, "arch=x86-64-v3", Args, (body<v8f, 4, 1>))          \
  CARAFE_ISA_FN(prefix##_v3_c1_s1, "arch=x86-64-v3", Args, (body<v8f, 1, 1>))          \
  BlockKernels<Args> prefix##_kernels(int64_t s, int64_t W) {                          \
    if (cpu_has_v4() && W >= 16) {                                                     \
      if (s == 2) return {16, 4, prefix##_v4_c4_s2, prefix##_v4_c1_s2};                \
      if (s == 1) return {16, 8, prefix##_v4_c8_s1, prefix##_v4_c1_s1};                \
    }                                                                                  \
    if (cpu_has_v3() && W >= 8) {                                                      \
      if (s == 2) return {8, 2, prefix##_v3_c2_s2, prefix##_v3_c1_s2};                 \
      if (s == 1) return {8, 4, prefix##_v3_c4_s1, prefix##_v3_c1_s1};                 \
    }                                                                                  \
    return {};                                                                         \
  }
#else
#define CARAFE_BLOCK_FAMILY(prefix, Args, body) \
  BlockKernels<Args> prefix##_kernels(int64_t, int64_t) { return {}; }
#endif

CARAFE_BLOCK_FAMILY(window_fwd, WindowArgs, window_forward_body)

inline __attribute__((always_inline)) void deinterleave(v8f a, v8f b, v8f& even, v8f& odd) {
  even = __builtin_shuffle(a, b, v8i{0, 2, 4, 6, 8, 10, 12, 14});
  odd = __builtin_shuffle(a, b, v8i{1, 3, 5, 7, 9, 11, 13, 15});
}
inline __attribute__((always_inline)) void deinterleave(v16f a, v16f b, v16f& even, v16f& odd) {
  even = __builtin_shuffle(a, b, v16i{0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30});
  odd = __builtin_shuffle(a, b, v16i{1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31});
}

// ---- float32 grad_masks: one feature load for the s*s outputs of a window ----
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
// Against one pass per window row over padded copies of the feature rows
// (the kernel before): backward without grad_features, 2 threads,
// interleaved calls, median ms: 2x256x50x76 7.2 -> 5.2 and 9.0 -> 6.8;
// 2x256x100x152 26.0 -> 22.3, 25.1 -> 23.4 and 28.6 -> 27.0, where the
// sums mostly wait on feature and grad_output lines from memory.
constexpr int64_t kGradMaskChunk = 32;

struct GradMaskItemArgs {
  float* const* out;       // [k * K * S] grad_masks rows (ky, kx, t): (ky*K + kx)*S + t
  const float* go;         // grad_output (n, first channel of g, s*i, 0)
  int64_t go_stride, Wo;   // between channels (Ho*Wo), between output rows t (Wo)
  const float* feats;      // features of the group's first channel; column -r of a row is
                           // feats + f_rows[row] - r, channels f_stride apart
  int64_t f_stride;
  const int64_t* f_rows;   // [rows] offsets of the window rows inside the input
  int64_t ky_lo, rows;
  int64_t count, W;        // channels of the group, input width
  int64_t jb_begin, jb_end;  // the column blocks to compute (block_start)
  const float* next_go;    // the next item's grad_output (its first block's columns), or null
  const float* next_feat;  // the next item's newest feature row (its first block, column -r), or null
  float* scratch;          // [kGradMaskChunk][S*S][L] + [rows][S*S*K][L] floats
  bool accumulate;         // add to the sums already in out (of the channels before these)
};

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
    const int64_t shared =
        a.accumulate && jb > a.jb_begin ? std::max<int64_t>(0, block_start(jb - 1, L, a.W) + L - base) : 0;
    if (jb + 1 < blocks) {
      // the next block's output lines, for writing (see the forward)
      const int64_t next = block_start(jb + 1, L, a.W);
      for (int64_t ky = a.ky_lo; ky < a.ky_lo + rows; ++ky) {
#pragma GCC unroll 16
        for (int o = 0; o < K * S; ++o) prefetch_floats<true>(a.out[ky * K * S + o] + S * next, S * L);
      }
    }
    for (int64_t c0 = 0; c0 < count; c0 += CH) {
      const int64_t n = std::min(CH, count - c0);
      const bool last = c0 + CH >= count;
      // The next unit's lines (the next block's, or the next item's after
      // the last block) go to L2 during this one, one line per channel and
      // window row: the DRAM reads spread over all the sums instead of
      // bursting when a block starts (there, the prefetches waited for
      // line-fill buffers). Lines: grad_output rows t (S*L floats each),
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
        if (c0 == 0 && a.accumulate) {
          // the sums so far, as stored (interleaved by u): exact, so the
          // additions continue as if the channels were one group
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
      };
      pass(0, std::true_type{});
      for (int64_t row = 1; row < rows; ++row) pass(row, std::false_type{});
    }
  }
}

using GradMaskItemFn = void (*)(const GradMaskItemArgs&);
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define CARAFE_GM_FN(isa, tag, V, K, S) \
  CARAFE_ISA_FN(gm_item_##tag##_k##K##_s##S, isa, GradMaskItemArgs, (grad_masks_item_body<V, K, S>))
CARAFE_GM_FN("arch=x86-64-v4", v4, v16f, 1, 2)
CARAFE_GM_FN("arch=x86-64-v4", v4, v16f, 3, 2)
CARAFE_GM_FN("arch=x86-64-v4", v4, v16f, 5, 2)
CARAFE_GM_FN("arch=x86-64-v4", v4, v16f, 1, 1)
CARAFE_GM_FN("arch=x86-64-v4", v4, v16f, 3, 1)
CARAFE_GM_FN("arch=x86-64-v4", v4, v16f, 5, 1)
CARAFE_GM_FN("arch=x86-64-v4", v4, v16f, 7, 1)
CARAFE_GM_FN("arch=x86-64-v3", v3, v8f, 1, 2)
CARAFE_GM_FN("arch=x86-64-v3", v3, v8f, 3, 2)
CARAFE_GM_FN("arch=x86-64-v3", v3, v8f, 1, 1)
CARAFE_GM_FN("arch=x86-64-v3", v3, v8f, 3, 1)
CARAFE_GM_FN("arch=x86-64-v3", v3, v8f, 5, 1)
#undef CARAFE_GM_FN
#endif

// The grad_masks kernel for this CPU, k and scale (registers: s*s*k sums +
// s*s + 1 must fit 32 with AVX-512, 16 with AVX2); null when none applies,
// and the output-column kernels run.
struct GradMaskItemKernel {
  int64_t L = 0;
  GradMaskItemFn fn = nullptr;
};
GradMaskItemKernel grad_mask_item_kernel(int64_t k, int64_t s, int64_t W) {
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define CARAFE_GM_CASE(tag, L, K, S) \
  if (k == K && s == S) return {L, gm_item_##tag##_k##K##_s##S};
  if (cpu_has_v4() && W >= 16) {
    CARAFE_GM_CASE(v4, 16, 1, 2) CARAFE_GM_CASE(v4, 16, 3, 2) CARAFE_GM_CASE(v4, 16, 5, 2)
    CARAFE_GM_CASE(v4, 16, 1, 1) CARAFE_GM_CASE(v4, 16, 3, 1) CARAFE_GM_CASE(v4, 16, 5, 1)
    CARAFE_GM_CASE(v4, 16, 7, 1)
  }
  if (cpu_has_v3() && W >= 8) {
    CARAFE_GM_CASE(v3, 8, 1, 2) CARAFE_GM_CASE(v3, 8, 3, 2)
    CARAFE_GM_CASE(v3, 8, 1, 1) CARAFE_GM_CASE(v3, 8, 3, 1) CARAFE_GM_CASE(v3, 8, 5, 1)
  }
#undef CARAFE_GM_CASE
#endif
  (void)k;
  (void)s;
  (void)W;
  return {};
}

// ---- float32 grad_features: unshifted tap sums, then one shifted sum per row ----
// grad_features[n, c, y, x] = sum_{ky, kx, t, u} masks[(ky, kx)][s*i + t][q] * grad_out[c][s*i + t][q]
// with i = y - ky + r (window row), q = s*(x - kx + r) + u (output column).
// The product at output column q does not depend on kx - r; only the input
// column its term lands on does. So, vectorised over q:
//   A[c][kx][q] = sum_{ky, t} masks[(ky, kx)][s*i + t][q] * grad_out[c][s*i + t][q]
// with every grad_output vector loaded once for the k taps kx, every mask
// vector once for the CB channels of a block, and the CB*k sums in registers
// over all (ky, t) (CB + k loads for CB*k FMAs, no shuffles); then
//   grad_features[c][y][x] = sum_u sum_kx A[c][kx][s*(x - kx + r) + u],
// one pass per row over A rows zero-padded by s*r, where the s neighbours u
// are added by one deinterleave. A tap left or right of the input lands in A
// only at columns that no x reads, so its weight (finite or not) never
// reaches a result (mmcv's rule); window rows outside the input are skipped.
// Against the kernel before (products per window, deinterleaved, stored and
// summed shifted once per window row, with scalar row ends): backward at
// 2x256x50x76, 2 threads, interleaved calls: median 21.7 -> 16.6 ms; at
// 2x256x100x152 105 -> 97 ms.
struct GradFeatTapArgs {
  const float* go;            // grad_output plane (n, c, 0, 0) of the block's first channel
  const float* const* mrows;  // [rows] masks (n, g*k*k + ky*k, s*i, 0), window rows ky inside,
                              //   newest first (ky = 0: the largest i)
  const int64_t* go_rows;     // [rows] offset of output row s*i in a grad_output plane
  int64_t rows;
  int64_t plane, Wo;          // Ho*Wo: between taps and between channels; Wo: between rows t
  float* const* A;            // [CB] A[c]: k rows of Wa floats, A[c][kx][q] at kx*Wa + pad + q
  int64_t Wa, pad;            // pad >= s*r zeros before and after the Wo columns
  float* const* out;          // [CB] grad_features rows (n, c, y, :)
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

// The grad_features kernels for this CPU, k and scale (BlockKernels): CB*k
// sums, CB grad_output vectors and one mask vector must fit in the registers
// (32 with AVX-512, 16 with AVX2). Empty when none applies: the pair-sum
// kernels run.

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define CARAFE_GF_PAIR(isa, tag, V, CB, K, S)                                                \
  CARAFE_ISA_FN(gf_taps_##tag##_c##CB##_k##K##_s##S, isa, GradFeatTapArgs,                   \
                (grad_feat_taps_body<V, CB, K, S>))                                          \
  CARAFE_ISA_FN(gf_taps_##tag##_c1_k##K##_s##S, isa, GradFeatTapArgs,                        \
                (grad_feat_taps_body<V, 1, K, S>))
#define CARAFE_GF_SCALES(isa, tag, V, CB, K) \
  CARAFE_GF_PAIR(isa, tag, V, CB, K, 1)      \
  CARAFE_GF_PAIR(isa, tag, V, CB, K, 2)
// one channel at a time only (k = 7 with AVX2: 16 registers)
#define CARAFE_GF_SINGLE(isa, tag, V, K)                                                            \
  CARAFE_ISA_FN(gf_taps_##tag##_c1_k##K##_s1, isa, GradFeatTapArgs, (grad_feat_taps_body<V, 1, K, 1>)) \
  CARAFE_ISA_FN(gf_taps_##tag##_c1_k##K##_s2, isa, GradFeatTapArgs, (grad_feat_taps_body<V, 1, K, 2>))
CARAFE_GF_SCALES("arch=x86-64-v4", v4, v16f, 8, 1)
CARAFE_GF_SCALES("arch=x86-64-v4", v4, v16f, 4, 3)
CARAFE_GF_SCALES("arch=x86-64-v4", v4, v16f, 4, 5)
CARAFE_GF_SCALES("arch=x86-64-v4", v4, v16f, 2, 7)
CARAFE_GF_SCALES("arch=x86-64-v4", v4, v16f, 2, 9)
CARAFE_GF_SCALES("arch=x86-64-v3", v3, v8f, 4, 1)
CARAFE_GF_SCALES("arch=x86-64-v3", v3, v8f, 2, 3)
CARAFE_GF_SCALES("arch=x86-64-v3", v3, v8f, 2, 5)
CARAFE_GF_SINGLE("arch=x86-64-v3", v3, v8f, 7)
CARAFE_GF_SINGLE("arch=x86-64-v3", v3, v8f, 9)
#undef CARAFE_GF_SCALES
#undef CARAFE_GF_SINGLE
#undef CARAFE_GF_PAIR
#endif

BlockKernels<GradFeatTapArgs> grad_feat_tap_kernels(int64_t k, int64_t s, int64_t W) {
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define CARAFE_GF_CASE(tag, L, CB, K, S) \
  if (k == K && s == S) return {L, CB, gf_taps_##tag##_c##CB##_k##K##_s##S, gf_taps_##tag##_c1_k##K##_s##S};
#define CARAFE_GF_CASES(tag, L, CB, K) CARAFE_GF_CASE(tag, L, CB, K, 1) CARAFE_GF_CASE(tag, L, CB, K, 2)
#define CARAFE_GF_SINGLE_CASE(tag, L, K, S) \
  if (k == K && s == S) return {L, 1, gf_taps_##tag##_c1_k##K##_s##S, gf_taps_##tag##_c1_k##K##_s##S};
#define CARAFE_GF_SINGLE_CASES(tag, L, K) CARAFE_GF_SINGLE_CASE(tag, L, K, 1) CARAFE_GF_SINGLE_CASE(tag, L, K, 2)
  if (cpu_has_v4() && W >= 16) {
    CARAFE_GF_CASES(v4, 16, 8, 1)
    CARAFE_GF_CASES(v4, 16, 4, 3)
    CARAFE_GF_CASES(v4, 16, 4, 5)
    CARAFE_GF_CASES(v4, 16, 2, 7)
    CARAFE_GF_CASES(v4, 16, 2, 9)
  }
  if (cpu_has_v3() && W >= 8) {
    CARAFE_GF_CASES(v3, 8, 4, 1)
    CARAFE_GF_CASES(v3, 8, 2, 3)
    CARAFE_GF_CASES(v3, 8, 2, 5)
    CARAFE_GF_SINGLE_CASES(v3, 8, 7)
    CARAFE_GF_SINGLE_CASES(v3, 8, 9)
  }
#undef CARAFE_GF_SINGLE_CASES
#undef CARAFE_GF_SINGLE_CASE
#undef CARAFE_GF_CASES
#undef CARAFE_GF_CASE
#endif
  (void)k;
  (void)s;
  (void)W;
  return {};
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

// Taps left or right of the input are skipped (the forward's rule): their
// grad_masks entries are zero, not grad_output times the zero padding
// (inf * 0 would be NaN). Tap kx of output column q reads q/s + kx - r;
// this zeroes those columns of one grad_masks row (Wo entries) of tap kx.
// Only columns [lo, hi) are touched (default: all).
template <typename T>
void zero_outside_columns(T* row, int64_t kx, const Dims& d, int64_t lo = 0, int64_t hi = -1) {
  if (hi < 0) hi = d.Wo;
  const int64_t r = kernel_radius(d.k);
  const int64_t left_end = std::min(d.Wo, d.s * std::max<int64_t>(0, r - kx));
  const int64_t right_begin = std::max(left_end, std::min(d.Wo, d.s * (d.W + r - kx)));
  std::fill(row + lo, row + std::max(lo, std::min(hi, left_end)), T(0));
  std::fill(row + std::min(hi, std::max(lo, right_begin)), row + hi, T(0));
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

// Forward with the float32 window kernels (see window_forward_body). Items
// (n, i, g, block), block fastest: consecutive items of a thread share the
// laid-out mask rows of (n, i, g), which are built once for them. A group
// whose channel count is not a multiple of the block size ends with
// one-channel calls (same arithmetic per output, so the same bits).
// T = float16/bfloat16: the mask rows are converted as they are laid out,
// the item's feature rows into the padded copies (whole rows, so the kernel
// reads only those), and the kernel writes float rows in cache that are
// rounded into the output: the float32 arithmetic on the converted values,
// rounded once, without float32 copies of the tensors.
template <typename T>
void forward_window(const at::Tensor& features, const at::Tensor& masks, at::Tensor& output,
                    const Dims& d, const BlockKernels<WindowArgs>& wk) {
  constexpr bool kFloat = std::is_same_v<T, float>;
  const T* f = features.const_data_ptr<T>();
  const T* m = masks.const_data_ptr<T>();
  T* out = output.mutable_data_ptr<T>();
  const int64_t S = d.s, L = wk.L, CB = wk.CB, k = d.k, W = d.W, r = kernel_radius(k);
  const int64_t Wp = W + 2 * r, jblocks = (W + L - 1) / L, cblocks = (d.cpg + CB - 1) / CB;
  at::parallel_for(0, d.N * d.H * d.G * cblocks, grain_for(d.kk * S * d.Wo * CB),
                   [&](int64_t b, int64_t e) {
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
      const int64_t rows = ky_hi - ky_lo, taps = rows * k;
      if (nig != laid_out) {
        for (int64_t ky = ky_lo; ky < ky_hi; ++ky) {
          for (int64_t kx = 0; kx < k; ++kx) {
            const int64_t tap = (ky - ky_lo) * k + kx;
            // columns j whose tap kx reads inside the input: 0 <= j + kx - r < W
            const int64_t jlo = std::max<int64_t>(0, r - kx), jhi = std::min(W, W + r - kx);
            for (int64_t t = 0; t < S; ++t) {
              const T* mt = m + ((n * d.mC + mask_channel(g, ky, kx, k)) * d.Ho + i * S + t) * d.Wo;
              const float* src;
              if constexpr (kFloat) {
                src = mt;
              } else {
                convert_row(mt, mrow.data(), d.Wo);
                src = mrow.data();
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
        laid_out = nig;
      }
      const int64_t c0 = g * d.cpg + blk * CB;
      const int64_t count = std::min(CB, (g + 1) * d.cpg - c0);
      // padded columns read by the blocks that reach past the input: the
      // first block's and the last two's when r < L, else all
      const int64_t left_end = r < L ? std::min(Wp, L + 2 * r) : Wp;
      const int64_t right_begin = std::max(left_end, Wp - 2 * L - 2 * r);
      for (int64_t cc = 0; cc < count; ++cc) {
        const T* plane = f + (n * d.C + c0 + cc) * d.H * W;
        for (int64_t ky = ky_lo; ky < ky_hi; ++ky) {
          float* row = F.data() + (cc * rows + ky - ky_lo) * Wp;
          const T* src = plane + (i + ky - r) * W;
          if constexpr (kFloat) {
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
}

template <typename scalar_t>
void forward_impl(const at::Tensor& features, const at::Tensor& masks, at::Tensor& output,
                  const Dims& d) {
  if constexpr (std::is_same_v<scalar_t, float>) {
    const BlockKernels<WindowArgs> wk = window_fwd_kernels(d.s, d.W);
    if (wk.block) return forward_window<float>(features, masks, output, d, wk);
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

// float32 grad_masks with the item kernels (grad_masks_item_body). Item
// (n, i, g) writes the k*k*s mask rows of output rows s*i .. s*i+s-1; rows
// are owned by one item (no race, no atomics) and each element is summed
// over the group's channels in channel order.
// accumulate: add to the sums in gm (of channels before these, as one group).
void grad_masks_items_float(const float* go, const float* f, float* gm, const Dims& d,
                            const GradMaskItemKernel& wk, bool accumulate = false) {
  const int64_t S = d.s, k = d.k, W = d.W, r = kernel_radius(k), Wp = W + 2 * r, cpg = d.cpg;
  const int64_t HoWo = d.Ho * d.Wo, HW = d.H * W, L = wk.L, blocks = (W + L - 1) / L;
  const int64_t scratch = kGradMaskChunk * S * S * L + k * S * S * k * L;
  // Column strips of `strip` blocks, items (n, g, strip, i), i fastest: an
  // item reads k feature rows and s grad_output rows of its strip for the
  // group's channels, and the next item k - 1 of the same feature rows, to
  // be found in cache. About 512 KiB of rows per item (at 2x256x100x152
  // whole rows are 1.4 MB, with the item's grad_output streaming through).
  // Backward without grad_features, 2 threads, interleaved calls, median ms
  // by strip width in 16-column blocks: 2x256x100x152: 1: 25.8, 3: 22.3,
  // all: 26.1 (then 2: 24.1, 3: 23.4, 5: 25.0); 2x256x50x76: 1: 5.9,
  // 2: 5.2, all: 4.9.
  const int64_t per_block = cpg * (k + S * S) * L * int64_t(sizeof(float));
  const int64_t strip = std::max<int64_t>(1, (int64_t(512) << 10) / per_block);
  // the last block overlaps the one before (block_start): both in the last strip
  const int64_t strips = std::max<int64_t>(1, (blocks - 1 + strip - 1) / strip);
  at::parallel_for(0, d.N * d.G * strips * d.H, grain_for(d.kk * S * S * W * cpg / strips),
                   [&](int64_t b, int64_t e) {
    std::vector<float> F, buf(scratch + 16);
    float* const sc = aligned64(buf);
    std::vector<float*> out(k * k * S);
    std::vector<int64_t> f_rows(k);
    for (int64_t item = b; item < e; ++item) {
      const int64_t i = item % d.H, st = (item / d.H) % strips;
      const int64_t g = (item / (d.H * strips)) % d.G, n = item / (d.H * strips * d.G);
      const int64_t jb_begin = st * strip, jb_end = st + 1 == strips ? blocks : jb_begin + strip;
      // output columns of the strip
      const int64_t q_lo = S * block_start(jb_begin, L, W), q_hi = S * (block_start(jb_end - 1, L, W) + L);
      // window rows inside the input: y = i + ky - r in [0, H)
      const int64_t ky_lo = std::max<int64_t>(0, r - i), ky_hi = std::min(k, d.H + r - i);
      const int64_t rows = ky_hi - ky_lo;
      for (int64_t ky = 0; ky < k; ++ky) {
        for (int64_t kx = 0; kx < k; ++kx) {
          for (int64_t t = 0; t < S; ++t) {
            float* row = gm + ((n * d.mC + mask_channel(g, ky, kx, k)) * d.Ho + i * S + t) * d.Wo;
            out[(ky * k + kx) * S + t] = row;
            // window rows outside the input: zero gradient
            if (ky < ky_lo || ky >= ky_hi) std::fill(row + q_lo, row + q_hi, 0.f);
          }
        }
      }
      // The kernel reads r columns left of each row and r right of it. In
      // the tensor those are a neighbouring row's (harmless: their lanes
      // are zeroed below), except before the tensor's first element and
      // after its last: such items read zero-padded copies instead.
      const int64_t first = (n * d.C + g * cpg) * HW + (i + ky_lo - r) * W - r;
      const int64_t end = (n * d.C + (g + 1) * cpg - 1) * HW + (i + ky_hi - 1 - r) * W + W + r;
      const float* feats = f + (n * d.C + g * cpg) * HW;
      int64_t f_stride = HW;
      if (first >= 0 && end <= d.N * d.C * HW) {
        for (int64_t row = 0; row < rows; ++row) f_rows[row] = (i + ky_lo + row - r) * W;
      } else {
        F.assign(cpg * rows * Wp, 0.f);
        for (int64_t c = 0; c < cpg; ++c) {
          for (int64_t row = 0; row < rows; ++row) {
            const float* src = feats + c * HW + (i + ky_lo + row - r) * W;
            std::copy(src, src + W, F.data() + (c * rows + row) * Wp + r);
          }
        }
        for (int64_t row = 0; row < rows; ++row) f_rows[row] = row * Wp;
        feats = F.data() + r;
        f_stride = rows * Wp;
      }
      const float* go_i = go + (n * d.C + g * cpg) * HoWo + i * S * d.Wo;
      const int64_t col = block_start(jb_begin, L, W);
      const float* next_go = i + 1 < d.H ? go_i + S * d.Wo + S * col : nullptr;
      const float* next_feat = i + 1 + r < d.H && f_stride == HW && col >= r
                                   ? feats + (i + 1 + r) * W + col - r : nullptr;
      wk.fn(GradMaskItemArgs{out.data(), go_i, HoWo, d.Wo, feats, f_stride, f_rows.data(), ky_lo,
                             rows, cpg, W, jb_begin, jb_end, next_go, next_feat, sc,
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
}

// float32 grad_features with the tap-sum kernels (see grad_feat_taps_body).
// Item (n, g, chunk, y) writes row y of the chunk's channels, whole: rows
// are owned by one item (no race, no atomics) and each element is summed in
// a fixed order. Channel chunks of 8 blocks, rows y fastest: the grad_output
// rows that k consecutive rows y read stay in cache between them.
void grad_features_taps_float(const float* go, const float* m, float* gf, const Dims& d,
                              const BlockKernels<GradFeatTapArgs>& wk) {
  const int64_t S = d.s, k = d.k, W = d.W, r = kernel_radius(k), Wo = d.Wo, HoWo = d.Ho * d.Wo;
  // A rows: values at [pad, pad + Wo), S*r zeros (at least) either side;
  // pad and the row length multiples of 16 floats (whole cache lines)
  const int64_t pad = (S * r + 15) / 16 * 16, Wa = (pad + Wo + S * r + 15) / 16 * 16;
  const int64_t CB = wk.CB, chunk = 8 * CB, chunks = (d.cpg + chunk - 1) / chunk;
  at::parallel_for(0, d.N * d.G * chunks * d.H, grain_for(d.kk * S * Wo * chunk),
                   [&](int64_t b, int64_t e) {
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
        mrows[rows] = m + ((n * d.mC + g * d.kk + ky * k) * d.Ho + S * i) * Wo;
        go_rows[rows++] = S * i * Wo;
      }
      const int64_t c_begin = g * d.cpg + ch * chunk, c_end = std::min(c_begin + chunk, (g + 1) * d.cpg);
      for (int64_t c0 = c_begin; c0 < c_end; c0 += CB) {
        const int64_t count = std::min(CB, c_end - c0);
        for (int64_t cc = 0; cc < count; ++cc) {
          out[cc] = gf + ((n * d.C + c0 + cc) * d.H + y) * W;
          // the next item's row of this channel, for writing (see the forward)
          if (y + 1 < d.H) prefetch_floats<true>(out[cc] + W, W);
        }
        if (count == CB) {
          const float* plane0 = go + (n * d.C + c0) * HoWo;
          wk.block(GradFeatTapArgs{plane0, mrows.data(), go_rows.data(), rows, HoWo, Wo,
                                   A.data(), Wa, pad, out.data(), W, r});
        } else {
          for (int64_t cc = 0; cc < count; ++cc) {
            wk.single(GradFeatTapArgs{go + (n * d.C + c0 + cc) * HoWo, mrows.data(), go_rows.data(), rows, HoWo,
                                      Wo, A.data() + cc, Wa, pad, out.data() + cc, W, r});
          }
        }
      }
    }
  });
}

template <typename scalar_t>
void backward_impl(const at::Tensor& grad_output, const at::Tensor& features,
                   const at::Tensor& masks, at::Tensor& grad_features, at::Tensor& grad_masks,
                   const Dims& d, bool accumulate_masks = false) {
  using acc_t = at::opmath_type<scalar_t>;
  const scalar_t* go = grad_output.const_data_ptr<scalar_t>();
  const scalar_t* f = features.const_data_ptr<scalar_t>();
  const scalar_t* m = masks.const_data_ptr<scalar_t>();
  scalar_t* gf = grad_features.mutable_data_ptr<scalar_t>();
  scalar_t* gm = grad_masks.mutable_data_ptr<scalar_t>();
  const int64_t Ho = d.Ho, Wo = d.Wo, Up = upsampled_len(d), mC = d.kk * d.G, cpg = d.cpg;
  const int64_t HoWo = Ho * Wo, pad = grad_pad(d), Wp = Wo + 2 * pad;

  bool masks_done = false;
  if constexpr (std::is_same_v<scalar_t, float>) {
    const GradMaskItemKernel ik = grad_mask_item_kernel(d.k, d.s, d.W);
    if (ik.fn) {
      grad_masks_items_float(go, f, gm, d, ik, accumulate_masks);
      masks_done = true;
    }
  }
  TORCH_CHECK(masks_done || !accumulate_masks, "carafe: grad_masks cannot accumulate here");
  // grad_masks[n, g*k*k + ky*k + kx, p, q] = sum_{c in g} grad_out[n, c, p, q] * U_{c,ky}[q + s*kx]:
  // a sum over the group's channels. Item (n, i, g, ky) upsamples row
  // tap_coord(i, ky) of every channel of the group once, then writes the k*s
  // mask rows of taps (ky, *) at output rows i*s .. i*s+s-1. Items own
  // disjoint rows: no race, no atomics, a fixed summation order.
  if (!masks_done) at::parallel_for(0, d.N * d.H * d.G * d.k, grain_for(d.k * d.s * Wo * cpg),
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
        for (int64_t kx = 0; kx < d.k; ++kx) zero_outside_columns(dst_rows[kx], kx, d);
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
  // With float accumulators (float32 tensors), blocks of
  // kChannelBlock channels share each padded mask vector load
  // (channel_block_sum4), as in the forward.
  if constexpr (std::is_same_v<scalar_t, float>) {
    const BlockKernels<GradFeatTapArgs> tk = grad_feat_tap_kernels(d.k, d.s, d.W);
    if (tk.block) return grad_features_taps_float(go, m, gf, d, tk);
  }
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

// A new CPU tensor for a result this op writes in full. Large outputs are
// fresh mmap'ed memory from the allocator, so their first write faults in
// every 4 KiB page: for a 124 MB float32 output that cost ~45 ms at 2 threads
// on the Intel Xeon of benchmarks/results, more than the forward's sums.
// Asking for transparent huge pages on the still-untouched range (what
// PyTorch's THP_MEM_ALLOC_ENABLE=1 does for every allocation) cuts that
// ~5x where the kernel allows them (THP "madvise" or "always"); elsewhere
// the call is refused and nothing changes.
at::Tensor empty_for_write(at::IntArrayRef sizes, const at::TensorOptions& options) {
  at::Tensor t = at::empty(sizes, options);
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  constexpr uintptr_t huge = uintptr_t(2) << 20;
  const uintptr_t begin = reinterpret_cast<uintptr_t>(t.data_ptr());
  const uintptr_t first = (begin + huge - 1) & ~(huge - 1);
  const uintptr_t last = (begin + t.nbytes()) & ~(huge - 1);
  if (last > first) madvise(reinterpret_cast<void*>(first), last - first, MADV_HUGEPAGE);
#endif
  return t;
}

// ---- float16 and bfloat16: the float32 kernels on float32 copies ----
// Half-precision tensors are summed in float32 either way (as on the GPU and
// in mmcv); converting a block of channels to float32, running the float32
// kernels and rounding the results once gives that arithmetic at the float32
// kernels' speed. The element-wise loops the half types had before took
// 7-40x float32's time (2x256x50x76, 2 threads: bfloat16 forward 169 ms and
// backward 197 ms, float16 237 and 482 ms, float32 about 9 and 11 ms). The
// backward goes this way, and the forward where the window kernels do not
// apply (forward_window converts rows in cache instead, with no copies).
// Work goes by (sample, group) and blocks of channels, so the float32 copies
// stay bounded whatever the tensor size; the blocking depends on the shape
// only, so results do not depend on the thread count. Where the float32
// grad_masks kernel applies, it adds each block's sums to those of the blocks
// before (bit for bit one pass over the group), so backward blocks are small:
// kHalfBlockBytesAccumulating, at least 32 channels (its chunk), plus two
// k*k-channel mask planes (bfloat16 backward at 2x256x100x152: 43 MiB on top
// of its 21 MiB of gradients, where copies of up to 32 MiB per block, with
// per-block sums added afterwards, took 68 MiB in the same time; float32's
// backward: none). Elsewhere blocks of kHalfBlockBytes sum alone and the
// sums are added.
constexpr int64_t kHalfBlockBytes = int64_t(32) << 20;
template <typename T>
constexpr bool kIsHalf = std::is_same_v<T, at::Half> || std::is_same_v<T, at::BFloat16>;
constexpr int64_t kHalfBlockBytesAccumulating = int64_t(8) << 20;

// Channels per block: the group's channels split evenly into blocks whose
// float32 features and output (forward) or grad_output and features
// (backward) fit in `bytes`, at least `least`.
int64_t half_block_channels(const Dims& d, int64_t bytes = kHalfBlockBytes, int64_t least = 8) {
  if (d.cpg <= 0) return 1;  // no channels: no blocks (and no division by zero)
  const int64_t per_channel = (d.H * d.W + d.Ho * d.Wo) * int64_t(sizeof(float));
  const int64_t most = std::max<int64_t>(least, bytes / std::max<int64_t>(per_channel, 1));
  const int64_t blocks = (d.cpg + most - 1) / most;
  return (d.cpg + blocks - 1) / blocks;
}

// (1, count, rows, cols) float32 view of buf's first elements
at::Tensor float_view(const at::Tensor& buf, int64_t count, int64_t rows, int64_t cols) {
  return buf.narrow(0, 0, count * rows * cols).view({1, count, rows, cols});
}

// For each (sample n, group g) and block of up to `block` of its channels:
// fn(n, c, db, m32), c the block's first channel, db its Dims (one sample,
// one group, the block's channels), m32 the group's masks as float32
// (1, k*k, Ho, Wo), converted once per (n, g); then group_done(n, g).
template <typename Fn, typename GroupDone>
void for_channel_blocks(const at::Tensor& masks, const Dims& d, int64_t block, Fn fn,
                        GroupDone group_done) {
  for (int64_t n = 0; n < d.N; ++n) {
    for (int64_t g = 0; g < d.G; ++g) {
      const at::Tensor m32 = masks[n].narrow(0, g * d.kk, d.kk).unsqueeze(0).to(at::kFloat);
      for (int64_t c0 = 0; c0 < d.cpg; c0 += block) {
        const int64_t count = std::min(block, d.cpg - c0);
        fn(n, g * d.cpg + c0, make_dims<int64_t>(1, count, d.H, d.W, d.k, 1, d.s), m32);
      }
      group_done(n, g);
    }
  }
}

// features (N, C, H, W), masks (N, k*k*G, Ho, Wo), output (N, C, Ho, Wo): float16/bfloat16,
// contiguous
void forward_half_via_float(const at::Tensor& features, const at::Tensor& masks,
                            at::Tensor& output, const Dims& d) {
  const int64_t block = half_block_channels(d);
  const at::TensorOptions fopt = features.options().dtype(at::kFloat);
  const at::Tensor fbuf = at::empty({block * d.H * d.W}, fopt);
  const at::Tensor obuf = empty_for_write({block * d.Ho * d.Wo}, fopt);
  for_channel_blocks(masks, d, block, [&](int64_t n, int64_t c, const Dims& db, const at::Tensor& m32) {
    at::Tensor f32 = float_view(fbuf, db.C, d.H, d.W), o32 = float_view(obuf, db.C, d.Ho, d.Wo);
    f32[0].copy_(features[n].narrow(0, c, db.C));
    forward_impl<float>(f32, m32, o32, db);
    output[n].narrow(0, c, db.C).copy_(o32[0]);
  }, [](int64_t, int64_t) {});
}

// grad_output (N, C, Ho, Wo), features, masks; grad_features and grad_masks
// written whole. grad_masks sums the group's channels in float32: where the
// float32 grad_masks kernel applies, each block adds to the sums of the
// blocks before it (the same additions in the same order as one float32
// pass over the group, so blocks can be small); elsewhere in float32 per
// block, then over the blocks in block order. Rounded once.
void backward_half_via_float(const at::Tensor& grad_output, const at::Tensor& features,
                             const at::Tensor& masks, at::Tensor& grad_features,
                             at::Tensor& grad_masks, const Dims& d) {
  const bool accumulate = grad_mask_item_kernel(d.k, d.s, d.W).fn != nullptr;
  const int64_t block = accumulate ? half_block_channels(d, kHalfBlockBytesAccumulating, 32)
                                   : half_block_channels(d);
  const at::TensorOptions fopt = features.options().dtype(at::kFloat);
  const at::Tensor gobuf = at::empty({block * d.Ho * d.Wo}, fopt);
  const at::Tensor fbuf = at::empty({block * d.H * d.W}, fopt);
  const at::Tensor gfbuf = empty_for_write({block * d.H * d.W}, fopt);
  const at::Tensor gm_sum = empty_for_write({1, d.kk, d.Ho, d.Wo}, fopt);
  const at::Tensor gm_part =
      d.cpg > block && !accumulate ? empty_for_write({1, d.kk, d.Ho, d.Wo}, fopt) : gm_sum;
  for_channel_blocks(masks, d, block, [&](int64_t n, int64_t c, const Dims& db, const at::Tensor& m32) {
    const bool first = c % d.cpg == 0;  // the group's first block
    at::Tensor go32 = float_view(gobuf, db.C, d.Ho, d.Wo), f32 = float_view(fbuf, db.C, d.H, d.W);
    at::Tensor gf32 = float_view(gfbuf, db.C, d.H, d.W);
    at::Tensor gm32 = first || accumulate ? gm_sum : gm_part;
    go32[0].copy_(grad_output[n].narrow(0, c, db.C));
    f32[0].copy_(features[n].narrow(0, c, db.C));
    backward_impl<float>(go32, f32, m32, gf32, gm32, db, accumulate && !first);
    if (!first && !accumulate) gm_sum.add_(gm_part);
    grad_features[n].narrow(0, c, db.C).copy_(gf32[0]);
  }, [&](int64_t n, int64_t g) { grad_masks[n].narrow(0, g * d.kk, d.kk).copy_(gm_sum[0]); });
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
  at::Tensor output = empty_for_write({d.N, d.C, d.Ho, d.Wo}, features.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, features.scalar_type(),
                                  "carafe_forward_cpu",
                                  [&] {
    // Half types are dispatched here, not in forward_impl, so that its
    // element-wise loops are not compiled for them.
    if constexpr (kIsHalf<scalar_t>) {
      // the window kernels converting rows in cache where they apply (s = 1, 2
      // on AVX2/AVX-512), else the float32 op on float32 copies
      const BlockKernels<WindowArgs> wk = window_fwd_kernels(d.s, d.W);
      if (wk.block) {
        forward_window<scalar_t>(f, m, output, d, wk);
      } else {
        forward_half_via_float(f, m, output, d);
      }
    } else {
      forward_impl<scalar_t>(f, m, output, d);
    }
  });
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
  at::Tensor grad_features = empty_for_write(features.sizes(), features.options());
  at::Tensor grad_masks = empty_for_write(masks.sizes(), masks.options());
  if (d.cpg == 0) {  // no channels: grad_masks sums over none (the kernels size work per channel)
    grad_masks.zero_();
    return {grad_features, grad_masks};
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, features.scalar_type(), "carafe_backward_cpu",
      [&] {
        if constexpr (kIsHalf<scalar_t>) {  // as in the forward
          backward_half_via_float(go, f, m, grad_features, grad_masks, d);
        } else {
          backward_impl<scalar_t>(go, f, m, grad_features, grad_masks, d);
        }
      });
  return {grad_features, grad_masks};
}

}  // namespace

TORCH_LIBRARY_IMPL(carafe, CPU, m) {
  m.impl("carafe", &carafe_forward_cpu);
  m.impl("carafe_backward", &carafe_backward_cpu);
}

}  // namespace carafe
