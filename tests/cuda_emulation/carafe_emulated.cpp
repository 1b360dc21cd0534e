// The CUDA kernels of csrc/cuda/carafe_kernels.cuh compiled for the host and
// run under a sequential emulation of the CUDA grid, as ops
// carafe_cuda_emulation::{forward,backward}. Lets tests check the GPU
// kernels' arithmetic (both index widths, unrolled and generic kernel sizes,
// the grid-stride loop) on machines without a GPU. Built by
// tests/test_cuda_emulation.py with torch.utils.cpp_extension.load.
#include <cxxabi.h>
#include <dlfcn.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <tuple>
#include <vector>

// What the kernels use of CUDA: the grid built-ins, qualifiers, min().
struct EmulatedDim3 {
  unsigned int x = 1, y = 1, z = 1;
};
static thread_local EmulatedDim3 threadIdx, blockIdx, blockDim, gridDim;
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
using std::min;

#include <ATen/Dispatch.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include "cuda/carafe_kernels.cuh"

namespace {

using namespace carafe::kernels;
using carafe::Dims;

// The kernels launched since the last kernels_launched() call, by name (the
// symbol of the kernel's instantiation, demangled): lets the tests check
// which kernel the launch code chose.
std::vector<std::string> launched;

std::string kernel_name(void* kernel) {
  Dl_info info;
  if (dladdr(kernel, &info) == 0 || info.dli_sname == nullptr) return "?";
  int status = 0;
  char* demangled = abi::__cxa_demangle(info.dli_sname, nullptr, nullptr, &status);
  std::string name = status == 0 ? demangled : info.dli_sname;
  std::free(demangled);
  return name.substr(0, name.find('('));
}

// Runs every (block, thread) of a launch in turn. Fewer blocks than threads
// would need (at most `max_blocks`), so the grid-stride loops run too.
template <typename Kernel, typename... Args>
void emulate_launch(int64_t total, int64_t max_blocks, Kernel kernel, Args... args) {
  if (total == 0) return;
  launched.push_back(kernel_name(reinterpret_cast<void*>(kernel)));
  const int64_t blocks = std::min<int64_t>(blocks_for(total), max_blocks);
  gridDim.x = static_cast<unsigned int>(blocks);
  blockDim.x = kThreads;
  for (int64_t b = 0; b < blocks; ++b) {
    for (int t = 0; t < kThreads; ++t) {
      blockIdx.x = static_cast<unsigned int>(b);
      threadIdx.x = static_cast<unsigned int>(t);
      kernel(args...);
    }
  }
}

template <typename scalar_t, typename index_t>
void forward_typed(const at::Tensor& f, const at::Tensor& m, at::Tensor& out, int64_t k,
                   int64_t G, int64_t s, int64_t max_blocks) {
  // the launch choice of carafe_kernel.cu (launch_forward), emulated
  launch_forward(dims_of<index_t>(f, k, G, s), f.const_data_ptr<scalar_t>(),
                 m.const_data_ptr<scalar_t>(), out.mutable_data_ptr<scalar_t>(),
                 [&](int64_t threads, auto kernel, auto... args) {
                   emulate_launch(threads, max_blocks, kernel, args...);
                 });
}

template <typename scalar_t, typename index_t>
void backward_typed(const at::Tensor& go, const at::Tensor& f, const at::Tensor& m, at::Tensor& gf,
                    at::Tensor& gm, int64_t k, int64_t G, int64_t s, int64_t max_blocks) {
  const Dims<index_t> d = dims_of<index_t>(f, k, G, s);
  // the launch choice of carafe_kernel.cu (launch_grad_masks), emulated
  launch_grad_masks(d, go.const_data_ptr<scalar_t>(), f.const_data_ptr<scalar_t>(),
                    gm.mutable_data_ptr<scalar_t>(),
                    [&](int64_t threads, auto kernel, auto... args) {
                      emulate_launch(threads, max_blocks, kernel, args...);
                    });
  launch_grad_features(d, go.const_data_ptr<scalar_t>(), m.const_data_ptr<scalar_t>(),
                       gf.mutable_data_ptr<scalar_t>(),
                       [&](int64_t threads, auto kernel, auto... args) {
                         emulate_launch(threads, max_blocks, kernel, args...);
                       });
}

// index_bits 32 or 64 forces that index width; 0 chooses it as
// carafe_kernel.cu does (fits_int32 over the op's tensors).
template <typename F>
void with_index_type(int64_t index_bits, std::initializer_list<int64_t> numels, F&& f) {
  TORCH_CHECK(index_bits == 0 || index_bits == 32 || index_bits == 64,
              "index_bits must be 0, 32 or 64, got ", index_bits);
  dispatch_index_type(index_bits == 32 || (index_bits == 0 && fits_int32(numels)), f);
}

at::Tensor forward(const at::Tensor& features, const at::Tensor& masks, int64_t k, int64_t G,
                   int64_t s, int64_t index_bits, int64_t max_blocks) {
  const at::Tensor f = features.contiguous(), m = masks.contiguous();
  at::Tensor out = at::empty({f.size(0), f.size(1), f.size(2) * s, f.size(3) * s}, f.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, f.scalar_type(), "emu_forward", [&] {
    with_index_type(index_bits, {f.numel(), m.numel(), out.numel()}, [&](auto index) {
      forward_typed<scalar_t, decltype(index)>(f, m, out, k, G, s, max_blocks);
    });
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> backward(const at::Tensor& grad_output,
                                            const at::Tensor& features, const at::Tensor& masks,
                                            int64_t k, int64_t G, int64_t s, int64_t index_bits,
                                            int64_t max_blocks) {
  const at::Tensor go = grad_output.contiguous(), f = features.contiguous(),
                   m = masks.contiguous();
  at::Tensor gf = at::empty(f.sizes(), f.options()), gm = at::empty(m.sizes(), m.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, f.scalar_type(), "emu_backward", [&] {
    with_index_type(index_bits, {f.numel(), m.numel(), go.numel()}, [&](auto index) {
      backward_typed<scalar_t, decltype(index)>(go, f, m, gf, gm, k, G, s, max_blocks);
    });
  });
  return {gf, gm};
}

// Which kernels the last launches ran with which index width is in their
// names (kernels_launched); the launch geometry itself, for the tests:
int64_t launch_blocks(int64_t threads) { return blocks_for(threads); }
bool index_fits_int32(std::vector<int64_t> numels) {
  return std::all_of(numels.begin(), numels.end(), [](int64_t n) { return fits_int32({n}); });
}

std::vector<std::string> kernels_launched() {
  std::vector<std::string> names;
  names.swap(launched);
  return names;
}

}  // namespace

TORCH_LIBRARY(carafe_cuda_emulation, m) {
  m.def("forward(Tensor features, Tensor masks, int kernel_size, int group_size, "
        "int scale_factor, int index_bits, int max_blocks) -> Tensor", &forward);
  m.def("backward(Tensor grad_output, Tensor features, Tensor masks, int kernel_size, "
        "int group_size, int scale_factor, int index_bits, int max_blocks) -> (Tensor, Tensor)",
        &backward);
  m.def("launch_blocks(int threads) -> int", &launch_blocks);
  m.def("index_fits_int32(int[] numels) -> bool", &index_fits_int32);
  m.def("kernels_launched() -> str[]", &kernels_launched);
}
