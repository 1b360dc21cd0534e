// The generic path: float64, and float32 where no window or tap-sum kernel
// applies (scales other than 1 and 2, narrow rows, CPUs without AVX2).
//
// It reduces to one micro-kernel, pair_sum_row: out[q] = sum_i a_i[q] * b_i[q]
// over a list of row pairs (pair_sum.h), on rows made contiguous and
// unshifted by small per-thread row buffers:
// - U: a feature row, zero-padded and nearest-upsampled, so that tap kx of
//   output column q reads U[q + s*kx] (fill_upsampled_row);
// - for grad_features, zero-padded copies of mask and grad_output rows.
// No k*k-expanded buffer is ever built. float and double are accumulated in
// their own precision.
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>

#include <algorithm>
#include <cmath>
#include <type_traits>
#include <vector>

#include "kernels.h"
#include "pair_sum.h"

namespace carafe::cpu {
namespace {

// Length of an upsampled feature row U: s*W plus s*r zeros on either side.
inline int64_t upsampled_len(const Dims& d) { return d.s * (d.W + d.k - 1); }
// Zero margin of the padded output-width rows used for grad_features.
inline int64_t grad_pad(const Dims& d) { return d.s * kernel_radius(d.k); }

// U <- the zero-padded, nearest-upsampled copy of one feature row:
// U[j] = row[j/s - r] for 0 <= j/s - r < W, else 0 (upsampled_len(d) entries).
// Position j = s*xs + u holds input column tap_coord(xs, 0) = xs - r, so U is
// r*s zeros, W runs of s copies, r*s zeros: loops without division or bounds
// tests, which the compiler vectorises.
template <typename T>
void fill_upsampled_row(const T* __restrict__ row, const Dims& d, T* __restrict__ U) {
  const int64_t s = d.s, W = d.W;
  const int64_t first = -tap_coord(int64_t(0), int64_t(0), d.k);  // xs of input column 0 (= r)
  std::fill(U, U + first * s, T(0));
  T* mid = U + first * s;
  if (s == 1) {
    for (int64_t x = 0; x < W; ++x) mid[x] = row[x];
  } else if (s == 2) {
    for (int64_t x = 0; x < W; ++x) {
      const T v = row[x];
      mid[2 * x] = v;
      mid[2 * x + 1] = v;
    }
  } else {
    for (int64_t x = 0; x < W; ++x) {
      const T v = row[x];
      for (int64_t u = 0; u < s; ++u) mid[x * s + u] = v;
    }
  }
  std::fill(mid + W * s, U + upsampled_len(d), T(0));
}

// dst <- row (Wo entries) with grad_pad(d) zeros on either side.
template <typename T>
void fill_padded_row(const T* __restrict__ row, const Dims& d, T* __restrict__ dst) {
  const int64_t pad = grad_pad(d), Wo = d.Wo;
  std::fill(dst, dst + pad, T(0));
  for (int64_t q = 0; q < Wo; ++q) dst[pad + q] = row[q];
  std::fill(dst + pad + Wo, dst + 2 * pad + Wo, T(0));
}

// The forward's feature side for input row i of one channel (plane): U <-
// the upsampled rows of the window rows inside the input (window row ky at
// U + ky*Up), and b_rows[j] <- what tap j = (ky, kx) reads, kx fastest.
// Returns the number of taps. Taps on rows outside the input read zeros:
// they are left out.
template <typename T>
int64_t gather_feature_rows(const T* plane, const Dims& d, int64_t i, T* U, const T** b_rows) {
  const int64_t Up = upsampled_len(d);
  int64_t pairs = 0;
  for (int64_t ky = 0; ky < d.k; ++ky) {
    const int64_t y = tap_coord(i, ky, d.k);
    if (!in_bounds(y, d.H)) continue;
    T* row = U + ky * Up;
    fill_upsampled_row(plane + y * d.W, d, row);
    for (int64_t kx = 0; kx < d.k; ++kx) b_rows[pairs++] = row + d.s * kx;
  }
  return pairs;
}

// The forward's mask side: a_rows[j] <- the mask rows of output row p (of
// sample n, group g; p / s = i) for the same taps, in the same order as
// gather_feature_rows.
//
// Taps left or right of the input are multiplied by U's zero padding. mmcv's
// rule (and the CUDA kernels') is to skip them, so a non-finite weight there
// must not reach the output (0 * inf is NaN). For finite weights 0 * w == 0
// and nothing needs doing; only a row with a non-finite weight on such a tap
// has its mask rows copied into `clean` with those weights set to 0, and the
// same vectorised sums run over the copies: the output is then bitwise what
// weights of 0 there give. (Recomputing the edge columns of every channel
// instead costs as much as the vectorised sums themselves.)
template <typename T>
void gather_mask_rows(const T* m, const Dims& d, int64_t n, int64_t g, int64_t i, int64_t p,
                      int64_t pairs, const T** a_rows, std::vector<T>& clean) {
  int64_t tap = 0;
  for (int64_t ky = 0; ky < d.k; ++ky) {
    if (!in_bounds(tap_coord(i, ky, d.k), d.H)) continue;
    for (int64_t kx = 0; kx < d.k; ++kx) a_rows[tap++] = m + mask_row(d, n, g, ky, kx, p);
  }
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
  if (each_outside([&](int64_t j, int64_t q) { return std::isfinite(a_rows[j][q]); })) return;
  clean.resize(pairs * Wo);
  for (int64_t j = 0; j < pairs; ++j) {
    std::copy(a_rows[j], a_rows[j] + Wo, clean.data() + j * Wo);
    a_rows[j] = clean.data() + j * Wo;
  }
  each_outside([&](int64_t j, int64_t q) {
    clean[j * Wo + q] = T(0);
    return true;
  });
}

}  // namespace

// float32 over blocks of kChannelBlock channels of one group: the mask rows
// of a tap are read once per block (channel_block_sum4). Items (n, i, g,
// block), block fastest within a group; a group whose channel count is not
// a multiple of the block size ends with a smaller block that takes the
// one-channel path.
void forward_blocked_float(const at::Tensor& features, const at::Tensor& masks, at::Tensor& output,
                           const Dims& d) {
  const float* f = features.const_data_ptr<float>();
  const float* m = masks.const_data_ptr<float>();
  float* out = output.mutable_data_ptr<float>();
  const int64_t Ho = d.Ho, Wo = d.Wo, Up = upsampled_len(d), cpg = d.cpg;
  const int64_t blocks = (cpg + kChannelBlock - 1) / kChannelBlock;
  at::parallel_for(
      0, d.N * d.H * d.G * blocks, grain_for(d.kk * d.s * Wo * kChannelBlock),
      [&](int64_t b, int64_t e) {
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
            pairs = gather_feature_rows(plane, d, i, U.data() + cc * d.k * Up,
                                        b_rows.data() + cc * d.kk);
            b_of[cc] = b_rows.data() + cc * d.kk;
          }
          for (int64_t t = 0; t < d.s; ++t) {
            const int64_t p = i * d.s + t;
            gather_mask_rows(m, d, n, g, i, p, pairs, a_rows.data(), clean);
            for (int64_t cc = 0; cc < count; ++cc)
              dst[cc] = out + ((n * d.C + c0 + cc) * Ho + p) * Wo;
            const bool blocked =
                count == kChannelBlock && channel_block_sum4(dst, a_rows.data(), b_of, pairs, Wo);
            for (int64_t cc = 0; cc < count; ++cc) {
              if (!blocked) pair_sum_row(dst[cc], a_rows.data(), b_of[cc], pairs, Wo);
            }
          }
        }
      });
}

// out[n, c, p, :] = sum_{ky, kx} masks[n, g*k*k + ky*k + kx, p, :] * U_{c, ky}[s*kx :]
// Items (n, i, c), c fastest: one item writes the s output rows that come
// from input row i for channel c; neighbouring items reuse the same mask
// rows from cache.
template <typename scalar_t>
void forward_generic(const at::Tensor& features, const at::Tensor& masks, at::Tensor& output,
                     const Dims& d) {
  const scalar_t* f = features.const_data_ptr<scalar_t>();
  const scalar_t* m = masks.const_data_ptr<scalar_t>();
  scalar_t* out = output.mutable_data_ptr<scalar_t>();
  const int64_t Ho = d.Ho, Wo = d.Wo, Up = upsampled_len(d);
  at::parallel_for(0, d.N * d.H * d.C, grain_for(d.kk * d.s * Wo), [&](int64_t b, int64_t e) {
    std::vector<scalar_t> U(d.k * Up), clean;
    std::vector<const scalar_t*> a_rows(d.kk), b_rows(d.kk);
    for (int64_t item = b; item < e; ++item) {
      const int64_t c = item % d.C, i = (item / d.C) % d.H, n = item / (d.C * d.H);
      const int64_t g = channel_group(c, d.cpg);
      const scalar_t* plane = f + (n * d.C + c) * d.H * d.W;
      const int64_t pairs = gather_feature_rows(plane, d, i, U.data(), b_rows.data());
      for (int64_t t = 0; t < d.s; ++t) {
        const int64_t p = i * d.s + t;
        gather_mask_rows(m, d, n, g, i, p, pairs, a_rows.data(), clean);
        pair_sum_row(out + ((n * d.C + c) * Ho + p) * Wo, a_rows.data(), b_rows.data(), pairs, Wo);
      }
    }
  });
}
template void forward_generic<double>(const at::Tensor&, const at::Tensor&, at::Tensor&,
                                      const Dims&);

// grad_masks[n, g*k*k + ky*k + kx, p, q] = sum_{c in g} grad_out[n, c, p, q] * U_{c,ky}[q + s*kx]:
// a sum over the group's channels. Item (n, i, g, ky) upsamples row
// tap_coord(i, ky) of every channel of the group once, then writes the k*s
// mask rows of taps (ky, *) at output rows i*s .. i*s+s-1. Items own
// disjoint rows: no race, no atomics, a fixed summation order.
template <typename scalar_t>
void grad_masks_generic(const scalar_t* go, const scalar_t* f, scalar_t* gm, const Dims& d) {
  const int64_t Wo = d.Wo, Up = upsampled_len(d), cpg = d.cpg, HoWo = d.Ho * Wo;
  at::parallel_for(
      0, d.N * d.H * d.G * d.k, grain_for(d.k * d.s * Wo * cpg), [&](int64_t b, int64_t e) {
        std::vector<scalar_t> U(cpg * Up);
        std::vector<const scalar_t*> a_rows(cpg), b_rows(cpg);
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
            for (int64_t kx = 0; kx < d.k; ++kx) dst_rows[kx] = gm + mask_row(d, n, g, ky, kx, p);
            if (!row_ok) {  // the taps read outside the input: zero gradient
              for (int64_t kx = 0; kx < d.k; ++kx)
                std::fill(dst_rows[kx], dst_rows[kx] + Wo, scalar_t(0));
              continue;
            }
            for (int64_t c = 0; c < cpg; ++c)
              a_rows[c] = go + (n * d.C + g * cpg + c) * HoWo + p * Wo;
            bool done = false;
            if constexpr (std::is_same_v<scalar_t, float>) {
              // the k taps at once (k = 3, 5, 7; rows of 16 columns or more)
              for (int64_t c = 0; c < cpg; ++c) b_rows[c] = U.data() + c * Up;
              done =
                  shift_sum_rows(d.k, dst_rows.data(), a_rows.data(), b_rows.data(), cpg, d.s, Wo);
            }
            for (int64_t kx = 0; kx < d.k && !done; ++kx) {
              for (int64_t c = 0; c < cpg; ++c) b_rows[c] = U.data() + c * Up + d.s * kx;
              pair_sum_row(dst_rows[kx], a_rows.data(), b_rows.data(), cpg, Wo);
            }
            for (int64_t kx = 0; kx < d.k; ++kx) zero_outside_columns(dst_rows[kx], kx, d);
          }
        }
      });
}
template void grad_masks_generic<float>(const float*, const float*, float*, const Dims&);
template void grad_masks_generic<double>(const double*, const double*, double*, const Dims&);

// grad_features: the adjoint of the forward's gather, as a gather too.
// Input column x of row y receives, from every output row p = i*s + t whose
// window row ky reads y (i = center_reading(y, ky)) and every kx, the terms
// masks[tap][p][q] * grad_out[c][p][q] at q = s*(x - kx + r) + u, u < s.
// In "upsampled" coordinates J = s*x + u (0 <= J < Wo) that is the pair sum
// over (ky, t, kx) of rows shifted by s*(r - kx), then a fold of each run
// of s values of J onto x. Zero-padded row copies (grad_pad(d) = s*r on each
// side) make the shifts safe. Item (n, y, g) pads its k*k*s mask rows
// once and reuses them for every channel of the group. For float32, blocks
// of kChannelBlock channels share each padded mask vector load
// (channel_block_sum4), as in the forward.
template <typename scalar_t>
void grad_features_generic(const scalar_t* go, const scalar_t* m, scalar_t* gf, const Dims& d) {
  const int64_t Wo = d.Wo, cpg = d.cpg, HoWo = d.Ho * Wo, pad = grad_pad(d), Wp = Wo + 2 * pad;
  constexpr int64_t CB = std::is_same_v<scalar_t, float> ? kChannelBlock : 1;
  const int64_t rows_per_channel = d.k * d.s;  // padded grad_output rows (ky, t) of a channel
  at::parallel_for(0, d.N * d.H * d.G, grain_for(d.kk * d.s * Wo * cpg), [&](int64_t b, int64_t e) {
    std::vector<scalar_t> Mp(d.kk * d.s * Wp), Gp(CB * rows_per_channel * Wp), sum(CB * Wo);
    std::vector<const scalar_t*> a_rows(d.kk * d.s), b_rows(CB * d.kk * d.s);
    const scalar_t* const* b_of[CB];
    scalar_t* sums[CB];
    for (int64_t cc = 0; cc < CB; ++cc) {
      b_of[cc] = b_rows.data() + cc * d.kk * d.s;
      sums[cc] = sum.data() + cc * Wo;
    }
    for (int64_t item = b; item < e; ++item) {
      const int64_t g = item % d.G, y = (item / d.G) % d.H, n = item / (d.G * d.H);
      // the item's pairs: padded mask rows (a_rows) and the channels'
      // padded grad_output rows (b_rows), each shifted for its tap
      int64_t pairs = 0;
      for (int64_t ky = 0; ky < d.k; ++ky) {
        const int64_t i = center_reading(y, ky, d.k);
        if (!in_bounds(i, d.H)) continue;
        for (int64_t t = 0; t < d.s; ++t) {
          for (int64_t kx = 0; kx < d.k; ++kx) {
            scalar_t* mrow = Mp.data() + ((ky * d.s + t) * d.k + kx) * Wp;
            fill_padded_row(m + mask_row(d, n, g, ky, kx, i * d.s + t), d, mrow);
            // column J of the sum reads q = J - s*(kx - r), i.e. padded index
            // J + pad - s*kx + s*r = J + 2*pad - s*kx
            a_rows[pairs] = mrow + 2 * pad - d.s * kx;
            for (int64_t cc = 0; cc < CB; ++cc) {
              b_rows[cc * d.kk * d.s + pairs] =
                  Gp.data() + (cc * rows_per_channel + ky * d.s + t) * Wp + 2 * pad - d.s * kx;
            }
            ++pairs;
          }
        }
      }
      for (int64_t c0 = g * cpg; c0 < (g + 1) * cpg; c0 += CB) {
        const int64_t count = std::min<int64_t>(CB, (g + 1) * cpg - c0);
        for (int64_t cc = 0; cc < count; ++cc) {
          for (int64_t ky = 0; ky < d.k; ++ky) {
            const int64_t i = center_reading(y, ky, d.k);
            if (!in_bounds(i, d.H)) continue;
            for (int64_t t = 0; t < d.s; ++t) {
              fill_padded_row(go + (n * d.C + c0 + cc) * HoWo + (i * d.s + t) * Wo, d,
                              Gp.data() + (cc * rows_per_channel + ky * d.s + t) * Wp);
            }
          }
        }
        bool blocked = false;
        if constexpr (CB == kChannelBlock) {
          blocked = count == CB && channel_block_sum4(sums, a_rows.data(), b_of, pairs, Wo);
        }
        for (int64_t cc = 0; cc < count; ++cc) {
          if (!blocked) pair_sum_row(sums[cc], a_rows.data(), b_of[cc], pairs, Wo);
          // the fold: the s columns J = s*x + u of x
          scalar_t* gfrow = gf + ((n * d.C + c0 + cc) * d.H + y) * d.W;
          for (int64_t x = 0; x < d.W; ++x) {
            scalar_t total = 0;
            for (int64_t u = 0; u < d.s; ++u) total += sums[cc][x * d.s + u];
            gfrow[x] = total;
          }
        }
      }
    }
  });
}
template void grad_features_generic<float>(const float*, const float*, float*, const Dims&);
template void grad_features_generic<double>(const double*, const double*, double*, const Dims&);

}  // namespace carafe::cpu
