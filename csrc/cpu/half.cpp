// float16 and bfloat16 on the CPU. Half-precision tensors are summed in
// float32 (as on the GPU and in mmcv); they run the float32 kernels on
// float32 values and round each result once, which gives that arithmetic at
// the float32 kernels' speed (element-wise loops on the half types, which do
// not vectorise, take many times float32's time):
// - the forward where the window kernels apply converts rows in cache
//   (forward_window, with convert_row below);
// - elsewhere, and for the backward, blocks of channels are copied to
//   float32, run through the float32 op, and the results rounded
//   (forward_half_via_float, backward_half_via_float).
#include "half.h"

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <algorithm>
#include <type_traits>

namespace carafe::cpu {

// ---- rows of float16/bfloat16 to float and back ----
// Conversions round as c10's do (round to nearest even; a bfloat16 NaN
// becomes 0x7fc0), so results equal the float32 op's rounded by Tensor.to().
// Element-wise c10 conversions do not vectorise; these take 16 (AVX-512) or
// 8 (AVX2 with F16C) at a time.
namespace {

#if CARAFE_X86_KERNELS
// GCC 12 warns inside its own AVX-512 intrinsics ("__Y may be used
// uninitialized", GCC bug 105593)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
// One vector of each conversion: the 16 elements (AVX-512) or 8 (AVX2) at s
// converted into d.
// bfloat16 -> float: the 16 bits become the top half of the float's
inline __attribute__((always_inline)) CARAFE_TARGET_V4 void bf16_to_float16(const uint16_t* s,
                                                                            float* d) {
  const __m512i w = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(s)));
  _mm512_storeu_ps(d, _mm512_castsi512_ps(_mm512_slli_epi32(w, 16)));
}
inline __attribute__((always_inline)) CARAFE_TARGET_V3 void bf16_to_float8(const uint16_t* s,
                                                                           float* d) {
  const __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(s)));
  _mm256_storeu_ps(d, _mm256_castsi256_ps(_mm256_slli_epi32(w, 16)));
}
// float -> bfloat16, c10's round_to_nearest_even: (u + 0x7fff + lsb) >> 16, NaN 0x7fc0
inline __attribute__((always_inline)) CARAFE_TARGET_V4 void float_to_bf16_16(const float* s,
                                                                             uint16_t* d) {
  const __m512 v = _mm512_loadu_ps(s);
  const __m512i u = _mm512_castps_si512(v);
  const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
  __m512i r =
      _mm512_srli_epi32(_mm512_add_epi32(u, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7fff))), 16);
  r = _mm512_mask_mov_epi32(r, _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q), _mm512_set1_epi32(0x7fc0));
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(d), _mm512_cvtepi32_epi16(r));
}
inline __attribute__((always_inline)) CARAFE_TARGET_V3 void float_to_bf16_8(const float* s,
                                                                            uint16_t* d) {
  const __m256 v = _mm256_loadu_ps(s);
  const __m256i u = _mm256_castps_si256(v);
  const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
  __m256i r =
      _mm256_srli_epi32(_mm256_add_epi32(u, _mm256_add_epi32(lsb, _mm256_set1_epi32(0x7fff))), 16);
  r = _mm256_blendv_epi8(r, _mm256_set1_epi32(0x7fc0),
                         _mm256_castps_si256(_mm256_cmp_ps(v, v, _CMP_UNORD_Q)));
  // values < 2^16: the saturating pack keeps them
  _mm_storeu_si128(reinterpret_cast<__m128i*>(d),
                   _mm_packus_epi32(_mm256_castsi256_si128(r), _mm256_extracti128_si256(r, 1)));
}
// float16 <-> float: the hardware conversions (F16C; rounding to nearest even)
inline __attribute__((always_inline)) CARAFE_TARGET_V4 void half_to_float16(const uint16_t* s,
                                                                            float* d) {
  _mm512_storeu_ps(d, _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(s))));
}
inline __attribute__((always_inline)) CARAFE_TARGET_V3 void half_to_float8(const uint16_t* s,
                                                                           float* d) {
  _mm256_storeu_ps(d, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(s))));
}
inline __attribute__((always_inline)) CARAFE_TARGET_V4 void float_to_half16(const float* s,
                                                                            uint16_t* d) {
  _mm256_storeu_si256(
      reinterpret_cast<__m256i*>(d),
      _mm512_cvtps_ph(_mm512_loadu_ps(s), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
}
inline __attribute__((always_inline)) CARAFE_TARGET_V3 void float_to_half8(const float* s,
                                                                           uint16_t* d) {
  _mm_storeu_si128(
      reinterpret_cast<__m128i*>(d),
      _mm256_cvtps_ph(_mm256_loadu_ps(s), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
}

// d[i] = convert(s[i]) for i < n, a Step (16 elements) at a time, the last
// vector moved back to end at n (overlapping the one before: the same values
// written again); returns how many were done (n, or 0 when n < 16).
template <typename Src, typename Dst, void (*Step)(const Src*, Dst*)>
CARAFE_TARGET_V4 int64_t convert_v4(const Src* s, Dst* d, int64_t n) {
  constexpr int64_t V = 16;
  if (n < V) return 0;
  for (int64_t j = 0; j < n; j += V) {
    const int64_t i = std::min<int64_t>(j, n - V);
    Step(s + i, d + i);
  }
  return n;
}
// The same with AVX2 (F16C), 8 elements at a time.
template <typename Src, typename Dst, void (*Step)(const Src*, Dst*)>
CARAFE_TARGET_V3 int64_t convert_v3(const Src* s, Dst* d, int64_t n) {
  constexpr int64_t V = 8;
  if (n < V) return 0;
  for (int64_t j = 0; j < n; j += V) {
    const int64_t i = std::min<int64_t>(j, n - V);
    Step(s + i, d + i);
  }
  return n;
}
#pragma GCC diagnostic pop
#endif

template <typename T>
using RawBits = std::conditional_t<std::is_same_v<T, float>, float, uint16_t>;

}  // namespace

template <typename From, typename To>
void convert_row(const From* src, To* dst, int64_t n) {
  static_assert(std::is_same_v<From, float> != std::is_same_v<To, float>, "float and a half type");
  int64_t i = 0;  // the first not converted
#if CARAFE_X86_KERNELS
  const auto* s = reinterpret_cast<const RawBits<From>*>(src);
  auto* d = reinterpret_cast<RawBits<To>*>(dst);
  const bool v4 = cpu_has_v4(), v3 = !v4 && cpu_has_v3() && __builtin_cpu_supports("f16c");
  using R = RawBits<From>;
  using W = RawBits<To>;
  if constexpr (std::is_same_v<From, at::BFloat16>) {
    i = v4   ? convert_v4<R, W, bf16_to_float16>(s, d, n)
        : v3 ? convert_v3<R, W, bf16_to_float8>(s, d, n)
             : 0;
  } else if constexpr (std::is_same_v<From, at::Half>) {
    i = v4   ? convert_v4<R, W, half_to_float16>(s, d, n)
        : v3 ? convert_v3<R, W, half_to_float8>(s, d, n)
             : 0;
  } else if constexpr (std::is_same_v<To, at::BFloat16>) {
    i = v4   ? convert_v4<R, W, float_to_bf16_16>(s, d, n)
        : v3 ? convert_v3<R, W, float_to_bf16_8>(s, d, n)
             : 0;
  } else {
    i = v4   ? convert_v4<R, W, float_to_half16>(s, d, n)
        : v3 ? convert_v3<R, W, float_to_half8>(s, d, n)
             : 0;
  }
#endif
  for (; i < n; ++i) dst[i] = static_cast<To>(src[i]);
}
template void convert_row(const at::BFloat16*, float*, int64_t);
template void convert_row(const at::Half*, float*, int64_t);
template void convert_row(const float*, at::BFloat16*, int64_t);
template void convert_row(const float*, at::Half*, int64_t);

// ---- the float32 op on float32 copies of blocks of channels ----
// Work goes by (sample, group) and blocks of channels, so the float32 copies
// stay bounded whatever the tensor size; the blocking depends on the shape
// only, so results do not depend on the thread count. Where the float32
// grad_masks kernel applies, it adds each block's sums to those of the blocks
// before (bit for bit one pass over the group), so backward blocks are small:
// kHalfBlockBytesAccumulating, at least 32 channels (its chunk), plus two
// k*k-channel mask planes (bfloat16 backward at 2x256x100x152: 43 MiB on top
// of its 21 MiB of gradients; float32's backward: none). Elsewhere blocks of
// kHalfBlockBytes sum alone and the sums are added.
namespace {

constexpr int64_t kHalfBlockBytes = int64_t(32) << 20;
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

}  // namespace

void forward_half_via_float(const at::Tensor& features, const at::Tensor& masks, at::Tensor& output,
                            const Dims& d) {
  const int64_t block = half_block_channels(d);
  const at::TensorOptions fopt = features.options().dtype(at::kFloat);
  const at::Tensor fbuf = at::empty({block * d.H * d.W}, fopt);
  const at::Tensor obuf = empty_for_write({block * d.Ho * d.Wo}, fopt);
  for_channel_blocks(
      masks, d, block,
      [&](int64_t n, int64_t c, const Dims& db, const at::Tensor& m32) {
        at::Tensor f32 = float_view(fbuf, db.C, d.H, d.W), o32 = float_view(obuf, db.C, d.Ho, d.Wo);
        f32[0].copy_(features[n].narrow(0, c, db.C));
        forward_float(f32, m32, o32, db);
        output[n].narrow(0, c, db.C).copy_(o32[0]);
      },
      [](int64_t, int64_t) {});
}

// grad_masks sums the group's channels in float32: where the float32
// grad_masks kernel applies, each block adds to the sums of the blocks
// before it (the same additions in the same order as one float32 pass over
// the group, so blocks can be small); elsewhere in float32 per block, then
// over the blocks in block order. Rounded once.
void backward_half_via_float(const at::Tensor& grad_output, const at::Tensor& features,
                             const at::Tensor& masks, at::Tensor& grad_features,
                             at::Tensor& grad_masks, const Dims& d) {
  const bool accumulate = grad_masks_window_applies(d);
  const int64_t block =
      accumulate ? half_block_channels(d, kHalfBlockBytesAccumulating, 32) : half_block_channels(d);
  const at::TensorOptions fopt = features.options().dtype(at::kFloat);
  const at::Tensor gobuf = at::empty({block * d.Ho * d.Wo}, fopt);
  const at::Tensor fbuf = at::empty({block * d.H * d.W}, fopt);
  const at::Tensor gfbuf = empty_for_write({block * d.H * d.W}, fopt);
  const at::Tensor gm_sum = empty_for_write({1, d.kk, d.Ho, d.Wo}, fopt);
  const at::Tensor gm_part =
      d.cpg > block && !accumulate ? empty_for_write({1, d.kk, d.Ho, d.Wo}, fopt) : gm_sum;
  for_channel_blocks(
      masks, d, block,
      [&](int64_t n, int64_t c, const Dims& db, const at::Tensor& m32) {
        const bool first = c % d.cpg == 0;  // the group's first block
        at::Tensor go32 = float_view(gobuf, db.C, d.Ho, d.Wo),
                   f32 = float_view(fbuf, db.C, d.H, d.W);
        at::Tensor gf32 = float_view(gfbuf, db.C, d.H, d.W);
        at::Tensor gm32 = first || accumulate ? gm_sum : gm_part;
        go32[0].copy_(grad_output[n].narrow(0, c, db.C));
        f32[0].copy_(features[n].narrow(0, c, db.C));
        backward_float(go32, f32, m32, gf32, gm32, db, accumulate && !first);
        if (!first && !accumulate) gm_sum.add_(gm_part);
        grad_features[n].narrow(0, c, db.C).copy_(gf32[0]);
      },
      [&](int64_t n, int64_t g) { grad_masks[n].narrow(0, g * d.kk, d.kk).copy_(gm_sum[0]); });
}

}  // namespace carafe::cpu
