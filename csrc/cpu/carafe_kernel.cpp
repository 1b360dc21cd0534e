// CPU kernels of carafe::carafe and carafe::carafe_backward.
//
// Layout: NCHW throughout (inputs are made contiguous; outputs are
// contiguous NCHW). Work is split with at::parallel_for over rows, and every
// inner loop is a contiguous multiply-add over an output row that the compiler
// vectorises: a feature row is first copied into a small zero-padded,
// nearest-upsampled row buffer U (see fill_upsampled_rows), so that tap kx of output
// column q reads U[q + s*kx]. No k*k-expanded buffer is ever built; besides its
// output the forward only uses per-thread buffers of a few rows.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>
#include <tuple>
#include <type_traits>
#include <vector>

#include "../carafe.h"
#include "../carafe_index.h"

namespace carafe {
namespace {

// One portable binary, with an AVX2+FMA clone chosen at load time on CPUs
// that have it: the inner loops below are where all the time goes.
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define CARAFE_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define CARAFE_CLONES
#endif

// out[q] = sum_{ky: row_ok[ky]} sum_{kx < k} a[ky*k + kx][q] * b[ky*b_stride + s*kx + q],
// for q < n. The forward's inner loop (a = mask rows, b = upsampled feature
// rows).
template <typename T, typename Acc>
void tap_sum_row(Acc* __restrict__ out, const T* const* a, const Acc* b, int64_t b_stride,
                 const char* row_ok, int64_t k, int64_t s, int64_t n) {
  for (int64_t q = 0; q < n; ++q) {
    Acc acc = 0;
    for (int64_t ky = 0; ky < k; ++ky) {
      if (!row_ok[ky]) continue;
      for (int64_t kx = 0; kx < k; ++kx) {
        acc += static_cast<Acc>(a[ky * k + kx][q]) * b[ky * b_stride + s * kx + q];
      }
    }
    out[q] = acc;
  }
}

// float32: 32 output columns at a time in four 8-wide vector registers,
// summed over all k*k taps before one store (the accumulator never goes
// through memory). GCC vector extensions: the AVX2 clone uses ymm FMAs, the
// baseline clone pairs of SSE ops. A row whose width is not a multiple of 32
// ends with a block that overlaps the previous one (outputs are written, not
// accumulated, so recomputing a few is harmless); rows under 32 use the loop above.
typedef float v8f __attribute__((vector_size(32)));
inline v8f load8(const float* p) {
  v8f v;
  __builtin_memcpy(&v, p, sizeof(v));
  return v;
}
inline void store8(float* p, v8f v) { __builtin_memcpy(p, &v, sizeof(v)); }

CARAFE_CLONES void tap_sum_row(float* __restrict__ out, const float* const* a, const float* b,
                               int64_t b_stride, const char* row_ok, int64_t k, int64_t s,
                               int64_t n) {
  constexpr int64_t B = 32;
  if (n < B) return tap_sum_row<float, float>(out, a, b, b_stride, row_ok, k, s, n);
  for (int64_t q0 = 0; q0 < n; q0 += B) {
    const int64_t base = std::min(q0, n - B);
    v8f acc0 = {}, acc1 = {}, acc2 = {}, acc3 = {};
    for (int64_t ky = 0; ky < k; ++ky) {
      if (!row_ok[ky]) continue;
      const float* brow = b + ky * b_stride + base;
      for (int64_t kx = 0; kx < k; ++kx) {
        const float* ar = a[ky * k + kx] + base;
        const float* br = brow + s * kx;
        acc0 += load8(ar) * load8(br);
        acc1 += load8(ar + 8) * load8(br + 8);
        acc2 += load8(ar + 16) * load8(br + 16);
        acc3 += load8(ar + 24) * load8(br + 24);
      }
    }
    store8(out + base, acc0);
    store8(out + base + 8, acc1);
    store8(out + base + 16, acc2);
    store8(out + base + 24, acc3);
  }
}

// acc[i] += a[i] * b[i] for i < n.
CARAFE_CLONES void fma_row(float* __restrict__ acc, const float* __restrict__ a,
                           const float* __restrict__ b, int64_t n) {
  for (int64_t i = 0; i < n; ++i) acc[i] += a[i] * b[i];
}
CARAFE_CLONES void fma_row(double* __restrict__ acc, const double* __restrict__ a,
                           const double* __restrict__ b, int64_t n) {
  for (int64_t i = 0; i < n; ++i) acc[i] += a[i] * b[i];
}
// float16 / bfloat16 operands, accumulated in float.
template <typename Acc, typename A, typename B>
void fma_row(Acc* __restrict__ acc, const A* __restrict__ a, const B* __restrict__ b, int64_t n) {
  for (int64_t i = 0; i < n; ++i) acc[i] += static_cast<Acc>(a[i]) * static_cast<Acc>(b[i]);
}

struct Dims {
  int64_t N, C, H, W, k, G, s;
  int64_t Ho() const { return H * s; }
  int64_t Wo() const { return W * s; }
  int64_t kk() const { return k * k; }
  int64_t cpg() const { return C / G; }
  // Length of a padded upsampled row U: s*W plus s*r on either side.
  int64_t Up() const { return s * (W + k - 1); }
};

// U <- the zero-padded, nearest-upsampled copy of one feature row:
// U[j] = row[j/s - r] for 0 <= j/s - r < W, else 0; U has s*(W + 2r) entries.
// Position j = s*xs + u holds input column tap_coord(xs, 0) = xs - r, so the
// row is written as r*s zeros, W runs of s copies, r*s zeros: loops without
// division or bounds tests, that the compiler vectorises.
template <typename scalar_t, typename acc_t>
void fill_upsampled_row(const scalar_t* __restrict__ row, const Dims& d, acc_t* __restrict__ U) {
  const int64_t r = kernel_radius(d.k), s = d.s, W = d.W;
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
  std::fill(mid + W * s, mid + (W + r) * s, acc_t(0));
}

// Fill U[ky] (ky < k) with the upsampled copy of feature row tap_coord(i, ky)
// of one channel plane; row_ok[ky] says whether that row lies inside the input
// (if not, every tap on it reads zero and is skipped).
template <typename scalar_t, typename acc_t>
void fill_upsampled_rows(const scalar_t* plane, int64_t i, const Dims& d, acc_t* U,
                         char* row_ok) {
  for (int64_t ky = 0; ky < d.k; ++ky) {
    const int64_t y = tap_coord(i, ky, d.k);
    row_ok[ky] = in_bounds(y, d.H);
    if (row_ok[ky]) fill_upsampled_row(plane + y * d.W, d, U + ky * d.Up());
  }
}

// Grain: about 32K multiply-adds per task, so tiny inputs stay on one thread.
int64_t grain_for(int64_t madds_per_item) {
  return std::max<int64_t>(1, (int64_t(1) << 15) / std::max<int64_t>(1, madds_per_item));
}

template <typename scalar_t>
void forward_impl(const at::Tensor& features, const at::Tensor& masks, at::Tensor& output,
                  const Dims& d) {
  using acc_t = at::opmath_type<scalar_t>;
  const scalar_t* f = features.const_data_ptr<scalar_t>();
  const scalar_t* m = masks.const_data_ptr<scalar_t>();
  scalar_t* out = output.mutable_data_ptr<scalar_t>();
  const int64_t Ho = d.Ho(), Wo = d.Wo(), Up = d.Up(), mC = d.kk() * d.G;

  // Items (n, i, c), c fastest: one item writes the s output rows that come
  // from input row i for channel c; neighbouring items reuse the same mask
  // rows from cache.
  at::parallel_for(0, d.N * d.H * d.C, grain_for(d.kk() * d.s * Wo), [&](int64_t b, int64_t e) {
    std::vector<acc_t> U(d.k * Up), acc(Wo);
    std::vector<char> row_ok(d.k);
    std::vector<const scalar_t*> mrows(d.kk());
    for (int64_t item = b; item < e; ++item) {
      const int64_t c = item % d.C, i = (item / d.C) % d.H, n = item / (d.C * d.H);
      const int64_t g = channel_group(c, d.cpg());
      fill_upsampled_rows(f + (n * d.C + c) * d.H * d.W, i, d, U.data(), row_ok.data());
      for (int64_t t = 0; t < d.s; ++t) {
        const int64_t p = i * d.s + t;
        for (int64_t ky = 0; ky < d.k; ++ky) {
          for (int64_t kx = 0; kx < d.k; ++kx) {
            mrows[ky * d.k + kx] = m + ((n * mC + mask_channel(g, ky, kx, d.k)) * Ho + p) * Wo;
          }
        }
        scalar_t* orow = out + ((n * d.C + c) * Ho + p) * Wo;
        if constexpr (std::is_same_v<scalar_t, acc_t>) {
          tap_sum_row(orow, mrows.data(), U.data(), Up, row_ok.data(), d.k, d.s, Wo);
        } else {
          tap_sum_row(acc.data(), mrows.data(), U.data(), Up, row_ok.data(), d.k, d.s, Wo);
          for (int64_t q = 0; q < Wo; ++q) orow[q] = static_cast<scalar_t>(acc[q]);
        }
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
  const int64_t Ho = d.Ho(), Wo = d.Wo(), Up = d.Up(), mC = d.kk() * d.G, cpg = d.cpg();

  // grad_masks[n, g*kk + ky*k + kx, p, q] = sum_{c in g} grad_out[n, c, p, q] * U_c[ky][q + s*kx].
  // Items (n, i, g) own disjoint mask rows, so there is no race and no atomic;
  // each sums over its group's channels in a fixed order (deterministic).
  at::parallel_for(0, d.N * d.H * d.G, grain_for(d.kk() * d.s * Wo * cpg), [&](int64_t b, int64_t e) {
    std::vector<acc_t> U(d.k * Up), acc(d.kk() * d.s * Wo);
    std::vector<char> row_ok(d.k);
    for (int64_t item = b; item < e; ++item) {
      const int64_t g = item % d.G, i = (item / d.G) % d.H, n = item / (d.G * d.H);
      std::fill(acc.begin(), acc.end(), acc_t(0));
      for (int64_t c = g * cpg; c < (g + 1) * cpg; ++c) {
        fill_upsampled_rows(f + (n * d.C + c) * d.H * d.W, i, d, U.data(), row_ok.data());
        for (int64_t t = 0; t < d.s; ++t) {
          const scalar_t* gorow = go + ((n * d.C + c) * Ho + i * d.s + t) * Wo;
          for (int64_t ky = 0; ky < d.k; ++ky) {
            if (!row_ok[ky]) continue;
            for (int64_t kx = 0; kx < d.k; ++kx) {
              fma_row(acc.data() + ((ky * d.k + kx) * d.s + t) * Wo, gorow,
                      U.data() + ky * Up + d.s * kx, Wo);
            }
          }
        }
      }
      for (int64_t ky = 0; ky < d.k; ++ky) {
        for (int64_t kx = 0; kx < d.k; ++kx) {
          for (int64_t t = 0; t < d.s; ++t) {
            const acc_t* src = acc.data() + ((ky * d.k + kx) * d.s + t) * Wo;
            scalar_t* dst = gm + ((n * mC + mask_channel(g, ky, kx, d.k)) * Ho + i * d.s + t) * Wo;
            for (int64_t q = 0; q < Wo; ++q) dst[q] = static_cast<scalar_t>(src[q]);
          }
        }
      }
    }
  });

  // grad_features: the adjoint of the forward's gather, computed as a gather
  // too. Item (n, y, c) accumulates, in the upsampled domain G (the layout of
  // U), every (output row p, tap) that reads input row y, then folds each run
  // of s positions of G back onto one input column.
  at::parallel_for(0, d.N * d.H * d.C, grain_for(d.kk() * d.s * Wo), [&](int64_t b, int64_t e) {
    std::vector<acc_t> Gup(Up);
    for (int64_t item = b; item < e; ++item) {
      const int64_t c = item % d.C, y = (item / d.C) % d.H, n = item / (d.C * d.H);
      const int64_t g = channel_group(c, cpg);
      std::fill(Gup.begin(), Gup.end(), acc_t(0));
      for (int64_t ky = 0; ky < d.k; ++ky) {
        const int64_t i = center_reading(y, ky, d.k);
        if (!in_bounds(i, d.H)) continue;
        for (int64_t t = 0; t < d.s; ++t) {
          const int64_t p = i * d.s + t;
          const scalar_t* gorow = go + ((n * d.C + c) * Ho + p) * Wo;
          for (int64_t kx = 0; kx < d.k; ++kx) {
            const scalar_t* mrow = m + ((n * mC + mask_channel(g, ky, kx, d.k)) * Ho + p) * Wo;
            fma_row(Gup.data() + d.s * kx, mrow, gorow, Wo);
          }
        }
      }
      scalar_t* gfrow = gf + ((n * d.C + c) * d.H + y) * d.W;
      const int64_t r = kernel_radius(d.k);
      for (int64_t x = 0; x < d.W; ++x) {
        const acc_t* src = Gup.data() + (x + r) * d.s;
        acc_t sum = 0;
        for (int64_t u = 0; u < d.s; ++u) sum += src[u];
        gfrow[x] = static_cast<scalar_t>(sum);
      }
    }
  });
}

Dims dims_of(const at::Tensor& features, int64_t k, int64_t G, int64_t s) {
  return Dims{features.size(0), features.size(1), features.size(2), features.size(3), k, G, s};
}

at::Tensor carafe_forward_cpu(const at::Tensor& features, const at::Tensor& masks,
                              int64_t kernel_size, int64_t group_size, int64_t scale_factor) {
  check_forward_args(features, masks, kernel_size, group_size, scale_factor);
  const Dims d = dims_of(features, kernel_size, group_size, scale_factor);
  const at::Tensor f = features.contiguous(), m = masks.contiguous();
  at::Tensor output = at::empty({d.N, d.C, d.Ho(), d.Wo()}, features.options());
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
