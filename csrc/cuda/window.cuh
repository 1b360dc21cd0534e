// The parts the window kernels (forward_kernels.cuh, backward_kernels.cuh)
// are built from: the warp vote that sends a warp down the loop without
// bounds tests, single accesses to neighbouring outputs (Vec), and a
// thread's window and work item.
#pragma once

#include <cstdint>

#include "../carafe_index.h"

namespace carafe {
namespace kernels {

#if !defined(__CUDACC__)
// The vote of the host emulation (tests/cuda_emulation/), the only host
// compile of these kernels: it runs a warp's lanes in turn up to each vote,
// and `item` / 32 tells which lanes vote together (see warp_all).
bool emulated_warp_all(bool p, int64_t item);
#endif

// Whether p holds for every active thread of the warp. The kernels choose
// their bounds-test-free loop with it: a warp whose threads disagree would
// otherwise run both copies of the loop, one after the other. Border threads
// are few (6.5% at 2x256x100x152, k = 5) but spread over 29% of the warps
// (52% at 2x256x50x76), since warps run across row ends. `item` is the
// calling thread's work item (the grid-stride loop's idx); the GPU ignores
// it. A warp's lanes hold 32 consecutive items, aligned to 32, in every
// iteration (blocks of 256 threads, a stride of whole blocks), so item / 32
// names the warp and the iteration: under the emulation a lane votes with
// the lanes whose item / 32 is its own.
template <typename index_t>
__device__ __forceinline__ bool warp_all(bool p, index_t item) {
#if defined(__CUDA_ARCH__)
  (void)item;
  return __all_sync(__activemask(), p);
#elif defined(__CUDACC__)
  (void)item;  // nvcc's host pass parses the device code, never runs it
  return p;
#else
  return emulated_warp_all(p, int64_t(item));
#endif
}

// U neighbouring elements of a row, read or written as one access (8 bytes
// for a float pair, 4 for a half pair). Callers check the alignment first
// (is_aligned).
template <typename T, int U>
struct alignas(sizeof(T) * U) Vec {
  T v[U];
};
template <typename V, typename T>
__device__ __forceinline__ V load_vec(const T* p) {
  return *reinterpret_cast<const V*>(p);
}
template <typename V, typename T>
__device__ __forceinline__ void store_vec(T* p, const V& x) {
  *reinterpret_cast<V*>(p) = x;
}
template <int U, typename T>
inline bool is_aligned(const T* p) {
  return reinterpret_cast<std::uintptr_t>(p) % (sizeof(T) * U) == 0;
}

// Outputs per thread of the window kernels. S > 0 (s == S): the S outputs
// q = j*S .. j*S+S-1 of an output row, which share the window centred on
// input column j. S == 0: one output, s read at run time.
template <int S>
constexpr int kOutputsPerThread = S > 0 ? S : 1;

// A window kernel thread's place: the input pixel (ci, cj) its window is
// centred on and its first output pixel (row p, column q0), from its column
// index `col` in [0, window_columns).
template <typename index_t, int S>
__device__ __forceinline__ index_t window_columns(const Dims<index_t>& d) {
  return S > 0 ? d.W : d.Wo;
}
template <typename index_t, int S>
struct WindowPlace {
  index_t ci, cj, pix;  // window centre; p * Wo + q0
  __device__ __forceinline__ WindowPlace(index_t p, index_t col, const Dims<index_t>& d)
      : ci(source_coord(p, S > 0 ? index_t(S) : d.s)),
        cj(S > 0 ? col : source_coord(col, d.s)),
        pix(p * d.Wo + (S > 0 ? col * index_t(S) : col)) {}
  // Whether every tap of a K*K window lies inside the input.
  template <int K>
  __device__ __forceinline__ bool interior(const Dims<index_t>& d) const {
    return in_bounds(ci - K / 2, d.H) && in_bounds(ci + K / 2, d.H) && in_bounds(cj - K / 2, d.W) &&
           in_bounds(cj + K / 2, d.W);
  }
};

// A window kernel thread's work item, from its linear index, fastest first:
// window column, output row p, `inner` (a channel chunk or a tap row, of
// `inners`), group g, sample n; with kInnerFirst, `inner` before p.
// Consecutive threads take consecutive columns, so a warp's loads and
// stores along a row coalesce.
template <typename index_t, int S>
struct WindowItem {
  WindowPlace<index_t, S> at;
  index_t inner, g, n;
};
template <int S, bool kInnerFirst, typename index_t>
__device__ __forceinline__ WindowItem<index_t, S> window_item(index_t idx, index_t inners,
                                                              const Dims<index_t>& d) {
  const index_t cols = window_columns<index_t, S>(d);
  // sizes of the two middle indices, the faster first
  const index_t n1 = kInnerFirst ? inners : d.Ho, n2 = kInnerFirst ? d.Ho : inners;
  const index_t col = idx % cols;
  index_t rest = idx / cols;
  const index_t first = rest % n1;
  rest /= n1;
  const index_t second = rest % n2;
  rest /= n2;
  const index_t p = kInnerFirst ? second : first, inner = kInnerFirst ? first : second;
  return {WindowPlace<index_t, S>(p, col, d), inner, rest % d.G, rest / d.G};
}

}  // namespace kernels
}  // namespace carafe
