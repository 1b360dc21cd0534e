// How the CUDA kernels' work maps onto a grid: the block size, the number of
// blocks of a launch, 32- or 64-bit index arithmetic, and the test-only
// switches that make small shapes take the rarer of these choices. Read by
// the launch code (carafe_kernels.cuh) and the kernels (global_thread,
// grid_stride).
#pragma once

#include <c10/util/Exception.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <initializer_list>

namespace carafe {
namespace kernels {

constexpr int kThreads = 256;

// Blocks of kThreads for `threads` threads of work. Grid-stride loops cover
// the rest; this many blocks fill any current GPU.
inline unsigned int blocks_for(int64_t threads) {
  const int64_t blocks = (threads + kThreads - 1) / kThreads;
  return static_cast<unsigned int>(std::min<int64_t>(blocks, int64_t(1) << 20));
}

// 32-bit indices are faster. They are safe when every tensor has at most
// 2^30 elements: then a linear index (< 2^30) plus one grid stride (at most
// 2^20 blocks * 256 threads = 2^28) stays below 2^31.
inline bool fits_int32(std::initializer_list<int64_t> numels) {
  for (int64_t n : numels) {
    if (n > (int64_t(1) << 30)) return false;
  }
  return true;
}

// Test-only switches of the launch code, read at every launch so that a test
// can set them for one call (os.environ / monkeypatch.setenv). Without them,
// a GPU reaches the 64-bit kernels only with a tensor of over 2^30 elements,
// and repeating grid-stride loops only with over 2^28 threads of work, too
// large to test every kernel at; with them, small shapes take those paths,
// on a GPU (carafe_kernel.cu) and under the host emulation
// (tests/cuda_emulation/) alike, since both call these.
//   CARAFE_TEST_CUDA_INDEX64=1       64-bit index kernels even where 32 bits fit
//   CARAFE_TEST_CUDA_MAX_BLOCKS=<n>  grids of at most n blocks (n >= 1)
// Unset or empty: the normal choice.
inline const char* test_switch(const char* name) {
  const char* value = std::getenv(name);
  return (value != nullptr && value[0] != '\0') ? value : nullptr;
}

inline bool force_index64() {
  const char* value = test_switch("CARAFE_TEST_CUDA_INDEX64");
  if (value == nullptr) return false;
  TORCH_CHECK(std::strcmp(value, "0") == 0 || std::strcmp(value, "1") == 0,
              "CARAFE_TEST_CUDA_INDEX64 must be 0 or 1, got '", value, "'");
  return value[0] == '1';
}

// The index width of a launch over tensors of these sizes: 32 bits where
// they fit, unless CARAFE_TEST_CUDA_INDEX64 forces 64.
inline bool use_int32(std::initializer_list<int64_t> numels) {
  return fits_int32(numels) && !force_index64();
}

// The grid of a launch: blocks_for(threads), at most CARAFE_TEST_CUDA_MAX_BLOCKS.
inline unsigned int launch_blocks(int64_t threads) {
  const unsigned int blocks = blocks_for(threads);
  const char* value = test_switch("CARAFE_TEST_CUDA_MAX_BLOCKS");
  if (value == nullptr) return blocks;
  char* end = nullptr;
  const long long cap = std::strtoll(value, &end, 10);
  TORCH_CHECK(*end == '\0' && cap >= 1,
              "CARAFE_TEST_CUDA_MAX_BLOCKS must be a whole number >= 1, got '", value, "'");
  return static_cast<unsigned int>(std::min<long long>(blocks, cap));
}

// Calls f(int32_t{}) when `narrow` (use_int32 said so), else f(int64_t{}):
// the index type the kernels are instantiated with.
template <typename F>
void dispatch_index_type(bool narrow, F&& f) {
  if (narrow) {
    f(int32_t{});
  } else {
    f(int64_t{});
  }
}

template <typename index_t>
__device__ __forceinline__ index_t global_thread() {
  return index_t(blockIdx.x) * index_t(blockDim.x) + index_t(threadIdx.x);
}
template <typename index_t>
__device__ __forceinline__ index_t grid_stride() {
  return index_t(gridDim.x) * index_t(blockDim.x);
}

}  // namespace kernels
}  // namespace carafe
