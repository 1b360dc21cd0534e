// CUDA kernels of carafe::carafe and carafe::carafe_backward.
//
// Design (compare mmcv, which transposes to NHWC in 3 of its 4 forward
// launches and accumulates its backward with atomics):
// - one launch per result, reading and writing NCHW directly; consecutive
//   threads own consecutive output columns, so loads of masks and stores of
//   outputs are coalesced;
// - forward: a thread loads the k*k weights of its pixel once into registers
//   and reuses them over kChannelsPerThread channels of its group (k = 1, 3,
//   5, 7 are compiled with unrolled taps; any other odd k takes a generic path);
// - backward: both gradients are gathers (each thread owns one result
//   element and sums in a fixed order): deterministic, no atomics;
// - float16/bfloat16 accumulate in float (at::opmath_type);
// - 32-bit index arithmetic when every tensor is small enough, else 64-bit;
// - the current stream and a device guard; every launch checked.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <ATen/cuda/CUDAContext.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <tuple>

#include "../carafe.h"
#include "../carafe_index.h"

namespace carafe {
namespace {

constexpr int kThreads = 256;
// Channels one forward thread computes with the same k*k weights: cuts mask
// traffic by this factor while leaving enough threads to fill the GPU.
constexpr int kChannelsPerThread = 16;

template <typename index_t>
struct Dims {
  index_t N, C, H, W, k, G, s, Ho, Wo, cpg, mC;  // mC = k*k*G mask channels
};

template <typename index_t>
__device__ __forceinline__ index_t global_thread() {
  return index_t(blockIdx.x) * index_t(blockDim.x) + index_t(threadIdx.x);
}
template <typename index_t>
__device__ __forceinline__ index_t grid_stride() {
  return index_t(gridDim.x) * index_t(blockDim.x);
}

// out[n, c, p, q] for one (n, g, channel chunk, pixel) per thread.
template <typename scalar_t, typename index_t, int K>
__global__ void __launch_bounds__(kThreads)
    carafe_forward_kernel(const scalar_t* __restrict__ features,
                          const scalar_t* __restrict__ masks, scalar_t* __restrict__ output,
                          const Dims<index_t> d, const index_t chunks, const index_t total) {
  using acc_t = at::opmath_type<scalar_t>;
  const index_t k = K > 0 ? index_t(K) : d.k;
  const index_t HoWo = d.Ho * d.Wo, HW = d.H * d.W;
  for (index_t idx = global_thread<index_t>(); idx < total; idx += grid_stride<index_t>()) {
    const index_t pix = idx % HoWo;
    index_t rest = idx / HoWo;
    const index_t chunk = rest % chunks;
    rest /= chunks;
    const index_t g = rest % d.G, n = rest / d.G;
    const index_t p = pix / d.Wo, q = pix % d.Wo;
    const index_t ci = source_coord(p, d.s), cj = source_coord(q, d.s);
    const index_t c_begin = g * d.cpg + chunk * kChannelsPerThread;
    const index_t c_end = min(c_begin + index_t(kChannelsPerThread), (g + 1) * d.cpg);
    const scalar_t* mpix = masks + n * d.mC * HoWo + pix;
    if constexpr (K > 0) {
      acc_t w[K * K];
      index_t off[K * K];
      bool ok[K * K];
#pragma unroll
      for (int ky = 0; ky < K; ++ky) {
#pragma unroll
        for (int kx = 0; kx < K; ++kx) {
          const index_t y = tap_coord(ci, index_t(ky), k), x = tap_coord(cj, index_t(kx), k);
          const int t = ky * K + kx;
          ok[t] = in_bounds(y, d.H) && in_bounds(x, d.W);
          w[t] = static_cast<acc_t>(mpix[mask_channel(g, index_t(ky), index_t(kx), k) * HoWo]);
          off[t] = ok[t] ? y * d.W + x : 0;
        }
      }
      for (index_t c = c_begin; c < c_end; ++c) {
        const scalar_t* plane = features + (n * d.C + c) * HW;
        acc_t acc = 0;
#pragma unroll
        for (int t = 0; t < K * K; ++t) {
          // Skipped, not multiplied by zero: a non-finite value at the clamped
          // offset must not leak into the sum.
          if (ok[t]) acc += w[t] * static_cast<acc_t>(plane[off[t]]);
        }
        output[(n * d.C + c) * HoWo + pix] = static_cast<scalar_t>(acc);
      }
    } else {
      for (index_t c = c_begin; c < c_end; ++c) {
        const scalar_t* plane = features + (n * d.C + c) * HW;
        acc_t acc = 0;
        for (index_t ky = 0; ky < k; ++ky) {
          const index_t y = tap_coord(ci, ky, k);
          if (!in_bounds(y, d.H)) continue;
          for (index_t kx = 0; kx < k; ++kx) {
            const index_t x = tap_coord(cj, kx, k);
            if (!in_bounds(x, d.W)) continue;
            acc += static_cast<acc_t>(mpix[mask_channel(g, ky, kx, k) * HoWo]) *
                   static_cast<acc_t>(plane[y * d.W + x]);
          }
        }
        output[(n * d.C + c) * HoWo + pix] = static_cast<scalar_t>(acc);
      }
    }
  }
}

// grad_masks[n, mc, p, q] = sum_{c in group(mc)} grad_out[n, c, p, q] * features[n, c, y, x]
// for the tap (ky, kx) of mask channel mc; one element per thread.
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

// grad_features[n, c, y, x]: the adjoint of the forward gather, as a gather
// over every (tap, output pixel) that read (y, x); one element per thread.
template <typename scalar_t, typename index_t>
__global__ void __launch_bounds__(kThreads)
    carafe_grad_features_kernel(const scalar_t* __restrict__ grad_output,
                                const scalar_t* __restrict__ masks,
                                scalar_t* __restrict__ grad_features, const Dims<index_t> d,
                                const index_t total) {
  using acc_t = at::opmath_type<scalar_t>;
  const index_t HoWo = d.Ho * d.Wo, HW = d.H * d.W, k = d.k, s = d.s;
  for (index_t idx = global_thread<index_t>(); idx < total; idx += grid_stride<index_t>()) {
    const index_t yx = idx % HW, nc = idx / HW;
    const index_t y = yx / d.W, x = yx % d.W;
    const index_t c = nc % d.C, n = nc / d.C;
    const index_t g = channel_group(c, d.cpg);
    const scalar_t* go = grad_output + nc * HoWo;
    const scalar_t* m = masks + n * d.mC * HoWo;
    acc_t acc = 0;
    for (index_t ky = 0; ky < k; ++ky) {
      const index_t i = center_reading(y, ky, k);
      if (!in_bounds(i, d.H)) continue;
      for (index_t kx = 0; kx < k; ++kx) {
        const index_t j = center_reading(x, kx, k);
        if (!in_bounds(j, d.W)) continue;
        const scalar_t* mt = m + mask_channel(g, ky, kx, k) * HoWo;
        for (index_t t = 0; t < s; ++t) {
          const index_t row = (i * s + t) * d.Wo + j * s;
          for (index_t u = 0; u < s; ++u) {
            acc += static_cast<acc_t>(mt[row + u]) * static_cast<acc_t>(go[row + u]);
          }
        }
      }
    }
    grad_features[idx] = static_cast<scalar_t>(acc);
  }
}

unsigned int blocks_for(int64_t total) {
  // Grid-stride loops cover the rest; this many blocks fill any current GPU.
  const int64_t blocks = (total + kThreads - 1) / kThreads;
  return static_cast<unsigned int>(std::min<int64_t>(blocks, int64_t(1) << 20));
}

// 32-bit indices are faster. They are safe when every tensor has at most
// 2^30 elements: then a linear index (< 2^30) plus one grid stride (at most
// 2^20 blocks * 256 threads = 2^28) stays below 2^31.
bool fits_int32(std::initializer_list<int64_t> numels) {
  for (int64_t n : numels) {
    if (n > (int64_t(1) << 30)) return false;
  }
  return true;
}

template <typename index_t>
Dims<index_t> make_dims(const at::Tensor& features, int64_t k, int64_t G, int64_t s) {
  const int64_t N = features.size(0), C = features.size(1), H = features.size(2),
                W = features.size(3);
  return Dims<index_t>{index_t(N),     index_t(C),     index_t(H),     index_t(W),
                       index_t(k),     index_t(G),     index_t(s),     index_t(H * s),
                       index_t(W * s), index_t(C / G), index_t(k * k * G)};
}

template <typename scalar_t, typename index_t, int K>
void launch_forward(const at::Tensor& f, const at::Tensor& m, at::Tensor& out,
                    const Dims<index_t>& d, cudaStream_t stream) {
  const index_t chunks = (d.cpg + kChannelsPerThread - 1) / kChannelsPerThread;
  const int64_t total = int64_t(d.N) * d.G * chunks * d.Ho * d.Wo;
  if (total == 0) return;
  carafe_forward_kernel<scalar_t, index_t, K><<<blocks_for(total), kThreads, 0, stream>>>(
      f.const_data_ptr<scalar_t>(), m.const_data_ptr<scalar_t>(),
      out.mutable_data_ptr<scalar_t>(), d, chunks, index_t(total));
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template <typename scalar_t, typename index_t>
void forward_cuda_typed(const at::Tensor& f, const at::Tensor& m, at::Tensor& out, int64_t k,
                        int64_t G, int64_t s, cudaStream_t stream) {
  const Dims<index_t> d = make_dims<index_t>(f, k, G, s);
  switch (k) {
    case 1: return launch_forward<scalar_t, index_t, 1>(f, m, out, d, stream);
    case 3: return launch_forward<scalar_t, index_t, 3>(f, m, out, d, stream);
    case 5: return launch_forward<scalar_t, index_t, 5>(f, m, out, d, stream);
    case 7: return launch_forward<scalar_t, index_t, 7>(f, m, out, d, stream);
    default: return launch_forward<scalar_t, index_t, 0>(f, m, out, d, stream);
  }
}

template <typename scalar_t, typename index_t>
void backward_cuda_typed(const at::Tensor& go, const at::Tensor& f, const at::Tensor& m,
                         at::Tensor& gf, at::Tensor& gm, int64_t k, int64_t G, int64_t s,
                         cudaStream_t stream) {
  const Dims<index_t> d = make_dims<index_t>(f, k, G, s);
  const int64_t total_m = gm.numel(), total_f = gf.numel();
  if (total_m > 0) {
    carafe_grad_masks_kernel<scalar_t, index_t><<<blocks_for(total_m), kThreads, 0, stream>>>(
        go.const_data_ptr<scalar_t>(), f.const_data_ptr<scalar_t>(),
        gm.mutable_data_ptr<scalar_t>(), d, index_t(total_m));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  if (total_f > 0) {
    carafe_grad_features_kernel<scalar_t, index_t><<<blocks_for(total_f), kThreads, 0, stream>>>(
        go.const_data_ptr<scalar_t>(), m.const_data_ptr<scalar_t>(),
        gf.mutable_data_ptr<scalar_t>(), d, index_t(total_f));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
}

at::Tensor carafe_forward_cuda(const at::Tensor& features, const at::Tensor& masks,
                               int64_t kernel_size, int64_t group_size, int64_t scale_factor) {
  check_forward_args(features, masks, kernel_size, group_size, scale_factor);
  const c10::cuda::CUDAGuard device_guard(features.device());
  const at::Tensor f = features.contiguous(), m = masks.contiguous();
  at::Tensor out = at::empty({f.size(0), f.size(1), f.size(2) * scale_factor,
                              f.size(3) * scale_factor},
                             f.options());
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  const bool small = fits_int32({f.numel(), m.numel(), out.numel()});
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, f.scalar_type(), "carafe_forward_cuda",
                                  [&] {
                                    if (small) {
                                      forward_cuda_typed<scalar_t, int32_t>(
                                          f, m, out, kernel_size, group_size, scale_factor, stream);
                                    } else {
                                      forward_cuda_typed<scalar_t, int64_t>(
                                          f, m, out, kernel_size, group_size, scale_factor, stream);
                                    }
                                  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> carafe_backward_cuda(const at::Tensor& grad_output,
                                                        const at::Tensor& features,
                                                        const at::Tensor& masks,
                                                        int64_t kernel_size, int64_t group_size,
                                                        int64_t scale_factor) {
  check_backward_args(grad_output, features, masks, kernel_size, group_size, scale_factor);
  const c10::cuda::CUDAGuard device_guard(features.device());
  const at::Tensor go = grad_output.contiguous(), f = features.contiguous(),
                   m = masks.contiguous();
  at::Tensor gf = at::empty(f.sizes(), f.options());
  at::Tensor gm = at::empty(m.sizes(), m.options());
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  const bool small = fits_int32({f.numel(), m.numel(), go.numel()});
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, f.scalar_type(),
                                  "carafe_backward_cuda", [&] {
                                    if (small) {
                                      backward_cuda_typed<scalar_t, int32_t>(
                                          go, f, m, gf, gm, kernel_size, group_size,
                                          scale_factor, stream);
                                    } else {
                                      backward_cuda_typed<scalar_t, int64_t>(
                                          go, f, m, gf, gm, kernel_size, group_size,
                                          scale_factor, stream);
                                    }
                                  });
  return {gf, gm};
}

}  // namespace

TORCH_LIBRARY_IMPL(carafe, CUDA, m) {
  m.impl("carafe", &carafe_forward_cuda);
  m.impl("carafe_backward", &carafe_backward_cuda);
}

}  // namespace carafe
