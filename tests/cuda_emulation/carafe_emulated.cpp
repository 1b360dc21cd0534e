// The CUDA kernels of csrc/cuda/carafe_kernels.cuh compiled for the host and
// run under a sequential emulation of the CUDA grid, as ops
// carafe_cuda_emulation::{forward,backward}. Lets tests check the GPU
// kernels' arithmetic (both index widths, unrolled and generic kernel sizes,
// the grid-stride loop, the loops with and without bounds tests) on machines
// without a GPU. Built by tests/test_cuda_emulation.py with
// torch.utils.cpp_extension.load.
//
// The kernels choose their bounds-test-free loop by a warp vote (warp_all),
// so a warp's lanes cannot simply run one after the other: each lane would
// see only its own vote, and a warp that a GPU sends down the bounds-tested
// loop would take the interior one. The 32 lanes of a warp therefore run as
// fibers (ucontext): each runs up to its next vote or its end, then the
// lanes at the vote of the same warp-iteration learn the outcome together,
// as __all_sync(__activemask(), p) gives it, and run on. Every vote is
// counted (launch_counts), so the tests can tell which loops ran.
#include <cxxabi.h>
#include <dlfcn.h>
#include <ucontext.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <limits>
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
// Per launch since the last launch_counts() call: its threads of work, its
// blocks, and the warp votes won (the warp-iteration ran the
// bounds-test-free loop) and lost.
std::vector<std::array<int64_t, 4>> counts;

constexpr int kWarpSize = 32;
static_assert(kThreads % kWarpSize == 0, "blocks of whole warps");
// A lane's stack. The kernels keep their sums and mask values in arrays
// (at k = 7 in double: 49 values) and call nothing deep; this leaves room
// for an unoptimised build too.
constexpr size_t kLaneStack = 256 * 1024;

struct Lane {
  ucontext_t context;
  bool finished = false;
  bool waiting = false;  // at a vote, for the others
  bool vote = false;     // its own predicate, then the warp's outcome
  int64_t item = 0;      // the work item it votes on (warp_all's `item`)
};

// The warp being run: its lanes, the scheduler's context and the kernel call.
struct Warp {
  ucontext_t scheduler;
  Lane lanes[kWarpSize];
  int current = 0;
  unsigned int first_thread = 0;  // threadIdx.x of lane 0
  std::function<void()> body;
  int64_t won = 0, lost = 0;
};
thread_local Warp* running = nullptr;
thread_local std::vector<char> lane_stacks;

void lane_main() {
  Warp& warp = *running;
  warp.body();
  warp.lanes[warp.current].finished = true;
  // returning resumes uc_link: the scheduler
}

// Runs one warp of a launch (threadIdx.x = first_thread ..
// first_thread + 31 of block blockIdx.x): every lane up to a vote, the
// vote of the lanes of the earliest warp-iteration waiting, and so on until
// all lanes have finished.
void run_warp(Warp& warp) {
  lane_stacks.resize(kWarpSize * kLaneStack);
  for (int l = 0; l < kWarpSize; ++l) {
    Lane& lane = warp.lanes[l];
    lane.finished = lane.waiting = false;
    getcontext(&lane.context);
    lane.context.uc_stack.ss_sp = lane_stacks.data() + l * kLaneStack;
    lane.context.uc_stack.ss_size = kLaneStack;
    lane.context.uc_link = &warp.scheduler;
    makecontext(&lane.context, lane_main, 0);
  }
  running = &warp;
  for (;;) {
    // every lane that is not waiting at a vote runs on: to its next vote or its end
    for (int l = 0; l < kWarpSize; ++l) {
      if (warp.lanes[l].finished || warp.lanes[l].waiting) continue;
      warp.current = l;
      threadIdx.x = warp.first_thread + l;
      swapcontext(&warp.scheduler, &warp.lanes[l].context);
    }
    // The lanes at the vote of the earliest warp-iteration vote together;
    // lanes waiting at a later one skipped this vote (a branch around it),
    // as on the GPU, where they wait for the others to reconverge.
    int64_t round = std::numeric_limits<int64_t>::max();
    for (int l = 0; l < kWarpSize; ++l) {
      const Lane& lane = warp.lanes[l];
      if (!lane.waiting) continue;
      // what makes item / 32 name the warp-iteration (see warp_all)
      if (lane.item % kWarpSize != l) {
        running = nullptr;
        TORCH_CHECK(false, "lane ", l, " of a warp votes on work item ", lane.item,
                    ": a warp's items are not 32 consecutive ones, aligned to 32");
      }
      round = std::min(round, lane.item / kWarpSize);
    }
    if (round == std::numeric_limits<int64_t>::max()) break;  // all finished
    bool all = true;
    for (const Lane& lane : warp.lanes) {
      if (lane.waiting && lane.item / kWarpSize == round) all = all && lane.vote;
    }
    ++(all ? warp.won : warp.lost);
    for (Lane& lane : warp.lanes) {
      if (lane.waiting && lane.item / kWarpSize == round) {
        lane.vote = all;
        lane.waiting = false;
      }
    }
  }
  running = nullptr;
}

std::string kernel_name(void* kernel) {
  Dl_info info;
  if (dladdr(kernel, &info) == 0 || info.dli_sname == nullptr) return "?";
  int status = 0;
  char* demangled = abi::__cxa_demangle(info.dli_sname, nullptr, nullptr, &status);
  std::string name = status == 0 ? demangled : info.dli_sname;
  std::free(demangled);
  return name.substr(0, name.find('('));
}

// Runs every warp of a launch in turn, on the grid carafe_kernel.cu launches
// (launch_blocks) or on at most `max_blocks` blocks, a test's cap so that the
// grid-stride loops repeat.
template <typename Kernel, typename... Args>
void emulate_launch(int64_t total, int64_t max_blocks, Kernel kernel, Args... args) {
  if (total == 0) return;
  launched.push_back(kernel_name(reinterpret_cast<void*>(kernel)));
  const int64_t blocks = std::min<int64_t>(launch_blocks(total), max_blocks);
  gridDim.x = static_cast<unsigned int>(blocks);
  blockDim.x = kThreads;
  Warp warp;
  warp.body = [&] { kernel(args...); };
  for (int64_t b = 0; b < blocks; ++b) {
    blockIdx.x = static_cast<unsigned int>(b);
    for (int w = 0; w < kThreads / kWarpSize; ++w) {
      warp.first_thread = static_cast<unsigned int>(w * kWarpSize);
      run_warp(warp);
    }
  }
  counts.push_back({total, blocks, warp.won, warp.lost});
}

template <typename scalar_t, typename index_t>
void forward_typed(const at::Tensor& f, const at::Tensor& m, at::Tensor& out, int64_t k, int64_t G,
                   int64_t s, int64_t max_blocks) {
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
// carafe_kernel.cu does (use_int32 over the op's tensors).
template <typename F>
void with_index_type(int64_t index_bits, std::initializer_list<int64_t> numels, F&& f) {
  TORCH_CHECK(index_bits == 0 || index_bits == 32 || index_bits == 64,
              "index_bits must be 0, 32 or 64, got ", index_bits);
  dispatch_index_type(index_bits == 32 || (index_bits == 0 && use_int32(numels)), f);
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
  const at::Tensor go = grad_output.contiguous(), f = features.contiguous(), m = masks.contiguous();
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
int64_t grid_blocks(int64_t threads) { return launch_blocks(threads); }
bool index_fits_int32(std::vector<int64_t> numels) {
  return std::all_of(numels.begin(), numels.end(), [](int64_t n) { return fits_int32({n}); });
}

std::vector<std::string> kernels_launched() {
  std::vector<std::string> names;
  names.swap(launched);
  return names;
}

// (launches, 4) int64: per launch since the last call, in launch order: the
// threads of work, the blocks of the grid (fewer than threads / 256: the
// grid-stride loop repeats), the warp votes that took the bounds-test-free
// loop and those that did not (both 0 for kernels that do not vote).
at::Tensor launch_counts() {
  at::Tensor out = at::empty({int64_t(counts.size()), 4}, at::kLong);
  auto rows = out.accessor<int64_t, 2>();
  for (size_t i = 0; i < counts.size(); ++i) {
    for (int j = 0; j < 4; ++j) rows[i][j] = counts[i][j];
  }
  counts.clear();
  return out;
}

}  // namespace

// warp_all's vote, in the lane that runs: its predicate and work item for the
// scheduler (run_warp), then the warp's outcome once it resumes.
bool carafe::kernels::emulated_warp_all(bool p, int64_t item) {
  Lane& lane = running->lanes[running->current];
  lane.vote = p;
  lane.item = item;
  lane.waiting = true;
  swapcontext(&lane.context, &running->scheduler);
  return lane.vote;
}

TORCH_LIBRARY(carafe_cuda_emulation, m) {
  m.def(
      "forward(Tensor features, Tensor masks, int kernel_size, int group_size, "
      "int scale_factor, int index_bits, int max_blocks) -> Tensor",
      &forward);
  m.def(
      "backward(Tensor grad_output, Tensor features, Tensor masks, int kernel_size, "
      "int group_size, int scale_factor, int index_bits, int max_blocks) -> (Tensor, Tensor)",
      &backward);
  m.def("launch_blocks(int threads) -> int", &grid_blocks);
  m.def("index_fits_int32(int[] numels) -> bool", &index_fits_int32);
  m.def("kernels_launched() -> str[]", &kernels_launched);
  m.def("launch_counts() -> Tensor", &launch_counts);
}
