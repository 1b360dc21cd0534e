// CUDA kernels of carafe::carafe and carafe::carafe_backward.
//
// Design (compare mmcv, which transposes to NHWC in 3 of its 4 forward
// launches and accumulates its backward with atomics):
// - one launch per result, reading and writing NCHW directly; consecutive
//   threads own consecutive output columns, so loads of masks and stores of
//   outputs are coalesced;
// - forward: a thread loads the k*k weights of its outputs once into
//   registers and reuses them over kChannelsPerThread channels of its group;
//   for s = 2 a thread computes the two outputs that share a window (the
//   kernels: forward_kernels.cuh, backward_kernels.cuh; how one is chosen:
//   carafe_kernels.cuh);
// - backward: both gradients are gathers (each thread owns one result
//   element and sums in a fixed order): deterministic, no atomics;
// - float16/bfloat16 accumulate in float (at::opmath_type);
// - 32-bit index arithmetic when every tensor is small enough, else 64-bit
//   (and the grid's size): both as grid.cuh chooses them, with its test-only
//   switches;
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
#include "carafe_kernels.cuh"

namespace carafe {
namespace {

using namespace kernels;

// A <<<>>> launch on `stream` for the launch_* choices of carafe_kernels.cuh.
struct StreamLaunch {
  cudaStream_t stream;
  template <typename Kernel, typename... Args>
  void operator()(int64_t threads, Kernel kernel, Args... args) const {
    if (threads == 0) return;
    kernel<<<launch_blocks(threads), kThreads, 0, stream>>>(args...);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
};

template <typename scalar_t, typename index_t>
void forward_cuda_typed(const at::Tensor& f, const at::Tensor& m, at::Tensor& out, int64_t k,
                        int64_t G, int64_t s, cudaStream_t stream) {
  launch_forward(dims_of<index_t>(f, k, G, s), f.const_data_ptr<scalar_t>(),
                 m.const_data_ptr<scalar_t>(), out.mutable_data_ptr<scalar_t>(),
                 StreamLaunch{stream});
}

template <typename scalar_t, typename index_t>
void backward_cuda_typed(const at::Tensor& go, const at::Tensor& f, const at::Tensor& m,
                         at::Tensor& gf, at::Tensor& gm, int64_t k, int64_t G, int64_t s,
                         cudaStream_t stream) {
  const Dims<index_t> d = dims_of<index_t>(f, k, G, s);
  launch_grad_masks(d, go.const_data_ptr<scalar_t>(), f.const_data_ptr<scalar_t>(),
                    gm.mutable_data_ptr<scalar_t>(), StreamLaunch{stream});
  launch_grad_features(d, go.const_data_ptr<scalar_t>(), m.const_data_ptr<scalar_t>(),
                       gf.mutable_data_ptr<scalar_t>(), StreamLaunch{stream});
}

at::Tensor carafe_forward_cuda(const at::Tensor& features, const at::Tensor& masks,
                               int64_t kernel_size, int64_t group_size, int64_t scale_factor) {
  check_forward_args(features, masks, kernel_size, group_size, scale_factor);
  const c10::cuda::CUDAGuard device_guard(features.device());
  const at::Tensor f = features.contiguous(), m = masks.contiguous();
  at::Tensor out = at::empty(
      {f.size(0), f.size(1), f.size(2) * scale_factor, f.size(3) * scale_factor}, f.options());
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, f.scalar_type(), "carafe_forward_cuda", [&] {
        dispatch_index_type(use_int32({f.numel(), m.numel(), out.numel()}), [&](auto index) {
          forward_cuda_typed<scalar_t, decltype(index)>(f, m, out, kernel_size, group_size,
                                                        scale_factor, stream);
        });
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
  const at::Tensor go = grad_output.contiguous(), f = features.contiguous(), m = masks.contiguous();
  at::Tensor gf = at::empty(f.sizes(), f.options());
  at::Tensor gm = at::empty(m.sizes(), m.options());
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, f.scalar_type(), "carafe_backward_cuda", [&] {
        dispatch_index_type(use_int32({f.numel(), m.numel(), go.numel()}), [&](auto index) {
          backward_cuda_typed<scalar_t, decltype(index)>(go, f, m, gf, gm, kernel_size, group_size,
                                                         scale_factor, stream);
        });
      });
  return {gf, gm};
}

}  // namespace

TORCH_LIBRARY_IMPL(carafe, CUDA, m) {
  m.impl("carafe", &carafe_forward_cuda);
  m.impl("carafe_backward", &carafe_backward_cuda);
}

}  // namespace carafe
