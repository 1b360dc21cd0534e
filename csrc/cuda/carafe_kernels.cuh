// The CUDA kernels of carafe::carafe / carafe::carafe_backward, separate
// from their launches (carafe_kernel.cu) so that the same code can also be
// compiled for the host and run under a CPU emulation of the CUDA grid
// (tests/cuda_emulation/): the kernels' index arithmetic and the choice of
// kernel (launch_forward, launch_grad_masks, launch_grad_features) are then
// tested on machines without a GPU. Device-only constructs are limited to
// what that emulation provides (blockIdx, threadIdx, blockDim, gridDim, min,
// and the warp vote of warp_all).
//
// Where the time goes (measured on an H100 before these window kernels: the
// forward at 2x256x100x152, k=5, s=2 took 610 us, 10x its memory floor, and
// float16 took as long as float32): not bytes but instructions. Every
// feature value a thread loads fed one multiply-add, each tap carried an
// in-bounds test, and the 25 multiply-adds of an output formed one
// dependent chain. Hence:
// - a thread computes the s outputs of an output row that share one window
//   (for s = 2: one feature load feeds two multiply-adds, two independent
//   sums), and loads/stores those neighbours as one access (Vec);
// - a warp whose threads' windows all lie inside the input runs a copy of the
//   loop with no bounds tests (kInterior), other warps the tested one;
// - k and s are template parameters for the common cases (k = 1, 3, 5, 7;
//   s = 2), run-time values otherwise;
// - enough threads: grad_masks, whose threads each sum a whole channel
//   group, gives each thread one row of taps, not the whole window.
// The sums run in the same order in every variant, so they give the same bits.
#pragma once

#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <initializer_list>
#include <type_traits>

#include "../carafe_index.h"

namespace carafe {
namespace kernels {

constexpr int kThreads = 256;
// Channels one forward thread computes with the same mask values: cuts mask
// traffic by this factor while leaving enough threads to fill the GPU.
constexpr int kChannelsPerThread = 16;
// Channels of one grad_features thread, which each mask value it loads
// serves. Fewer than the forward's: the thread also keeps an address per
// channel, and at 16 channels it took 114 registers (16 warps per SM on an
// H100) against 80 (24 warps) at 8.
constexpr int kGradFeatureChannels = 8;

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
    return in_bounds(ci - K / 2, d.H) && in_bounds(ci + K / 2, d.H) &&
           in_bounds(cj - K / 2, d.W) && in_bounds(cj + K / 2, d.W);
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

// The forward over `channels` consecutive channels for one thread's U
// outputs: out[c, pix + u] = sum_t w[u][t] * plane[c, tap t of the window].
// Taps outside the input are skipped, not multiplied by zero: a non-finite
// value there must not leak into the sum.
template <bool kInterior, int K, int S, typename scalar_t, typename index_t, typename acc_t>
__device__ __forceinline__ void reassemble(const scalar_t* __restrict__ plane,
                                           scalar_t* __restrict__ out,
                                           const acc_t (&w)[kOutputsPerThread<S>][K * K],
                                           const WindowPlace<index_t, S>& at,
                                           index_t channels, const Dims<index_t>& d, index_t HW,
                                           index_t HoWo) {
  constexpr int U = kOutputsPerThread<S>, R = K / 2;
  using V = Vec<scalar_t, U>;
  const index_t corner = (at.ci - R) * d.W + (at.cj - R);  // may be < 0 at the border
  // Two channels per iteration for output pairs: twice the loads in flight
  // and 1.86 instead of 2.02 instructions per multiply-add (float32, k = 5),
  // at 125 registers, still two blocks per multiprocessor. The one-output
  // variant would drop from four blocks to two.
#pragma unroll(S > 0 ? 2 : 1)
  for (index_t c = 0; c < channels; ++c) {
    acc_t acc[U];
#pragma unroll
    for (int u = 0; u < U; ++u) acc[u] = 0;
#pragma unroll
    for (int ky = 0; ky < K; ++ky) {
#pragma unroll
      for (int kx = 0; kx < K; ++kx) {
        if (kInterior ||
            (in_bounds(at.ci - R + ky, d.H) && in_bounds(at.cj - R + kx, d.W))) {
          const acc_t f = static_cast<acc_t>(plane[corner + index_t(ky) * d.W + kx]);
#pragma unroll
          for (int u = 0; u < U; ++u) acc[u] += w[u][ky * K + kx] * f;
        }
      }
    }
    V o;
#pragma unroll
    for (int u = 0; u < U; ++u) o.v[u] = static_cast<scalar_t>(acc[u]);
    store_vec(out, o);
    plane += HW;
    out += HoWo;
  }
}

// out[n, c, p, q] for one (n, g, channel chunk, output row p, window column)
// per thread: its outputs' K*K mask values are loaded once into registers and
// reused over the chunk's channels.
template <typename scalar_t, typename index_t, int K, int S>
__global__ void __launch_bounds__(kThreads)
    carafe_forward_window_kernel(const scalar_t* __restrict__ features,
                                 const scalar_t* __restrict__ masks,
                                 scalar_t* __restrict__ output, const Dims<index_t> d,
                                 const index_t chunks, const index_t total) {
  using acc_t = at::opmath_type<scalar_t>;
  constexpr int U = kOutputsPerThread<S>;
  using V = Vec<scalar_t, U>;
  const index_t HoWo = d.Ho * d.Wo, HW = d.H * d.W;
  for (index_t idx = global_thread<index_t>(); idx < total; idx += grid_stride<index_t>()) {
    // all output rows of a chunk before the next chunk: each chunk's
    // feature planes and the masks (both re-read by every chunk) stay in L2
    const WindowItem<index_t, S> item = window_item<S, false>(idx, chunks, d);
    const WindowPlace<index_t, S>& at = item.at;
    const index_t chunk = item.inner, g = item.g, n = item.n;
    const index_t c_begin = g * d.cpg + chunk * kChannelsPerThread;
    const index_t channels = min(index_t(kChannelsPerThread), (g + 1) * d.cpg - c_begin);
    acc_t w[U][K * K];
    const scalar_t* mpix =
        masks + (n * d.mC + mask_channel(g, index_t(0), index_t(0), index_t(K))) * HoWo + at.pix;
#pragma unroll
    for (int t = 0; t < K * K; ++t) {
      const V mv = load_vec<V>(mpix + index_t(t) * HoWo);
#pragma unroll
      for (int u = 0; u < U; ++u) w[u][t] = static_cast<acc_t>(mv.v[u]);
    }
    const scalar_t* plane = features + (n * d.C + c_begin) * HW;
    scalar_t* out = output + (n * d.C + c_begin) * HoWo + at.pix;
    if (warp_all(at.template interior<K>(d), idx)) {
      reassemble<true, K, S>(plane, out, w, at, channels, d, HW, HoWo);
    } else {
      reassemble<false, K, S>(plane, out, w, at, channels, d, HW, HoWo);
    }
  }
}

// The forward for any odd k (run-time k and s): one (n, g, channel chunk,
// output pixel) per thread, the mask values reread for each channel.
template <typename scalar_t, typename index_t>
__global__ void __launch_bounds__(kThreads)
    carafe_forward_generic_kernel(const scalar_t* __restrict__ features,
                                  const scalar_t* __restrict__ masks,
                                  scalar_t* __restrict__ output, const Dims<index_t> d,
                                  const index_t chunks, const index_t total) {
  using acc_t = at::opmath_type<scalar_t>;
  const index_t k = d.k;
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

// grad_masks[n, mc, p, q] = sum_{c in group(mc)} grad_out[n, c, p, q] * features[n, c, y, x]
// for the tap (ky, kx) of mask channel mc; one element per thread (any k).
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

// The sums of the window grad_masks kernel over the group's channels for
// one row of taps (ky): acc[u][kx] += grad_out[c, pix + u] * plane[c, y, x + kx]
// with y = ci - R + ky, x = cj - R; taps outside the input stay 0.
template <bool kInterior, int K, int S, typename scalar_t, typename index_t, typename acc_t>
__device__ __forceinline__ void correlate_row(const scalar_t* __restrict__ go,
                                              const scalar_t* __restrict__ plane,
                                              acc_t (&acc)[kOutputsPerThread<S>][K],
                                              const WindowPlace<index_t, S>& at, index_t y,
                                              const Dims<index_t>& d, index_t HW,
                                              index_t HoWo) {
  constexpr int U = kOutputsPerThread<S>, R = K / 2;
  using V = Vec<scalar_t, U>;
  const index_t row = y * d.W + (at.cj - R);  // may be < 0 at the left border
  // Four channels per iteration: each thread loops over all the group's
  // channels, so it keeps the next channels' loads in flight to hide memory
  // latency. The order of the sums is unchanged.
#pragma unroll 4
  for (index_t c = 0; c < d.cpg; ++c) {
    const V gv = load_vec<V>(go);
#pragma unroll
    for (int kx = 0; kx < K; ++kx) {
      if (kInterior || in_bounds(at.cj - R + kx, d.W)) {
        const acc_t f = static_cast<acc_t>(plane[row + kx]);
#pragma unroll
        for (int u = 0; u < U; ++u) acc[u][kx] += static_cast<acc_t>(gv.v[u]) * f;
      }
    }
    go += HoWo;
    plane += HW;
  }
}

// grad_masks for one (n, g, tap row ky, output row, window column) per thread:
// the K taps of its row for its outputs, in registers over the channel sum.
// Each grad_output value is read once per tap row, each feature value once
// for the thread's outputs (the one-thread-per-mask-element kernel above
// reads grad_output K*K times and each feature value once per output). A
// row of taps rather than the whole window per thread: 5x the threads at
// k = 5 (304000 at 2x256x100x152, where a thread per window gave about one
// wave of the GPU, 60 blocks at 2x256x50x76), for the same loads per
// multiply-add. Channels are summed in the same order as there, so both
// give the same bits.
template <typename scalar_t, typename index_t, int K, int S>
__global__ void __launch_bounds__(kThreads)
    carafe_grad_masks_window_kernel(const scalar_t* __restrict__ grad_output,
                                    const scalar_t* __restrict__ features,
                                    scalar_t* __restrict__ grad_masks, const Dims<index_t> d,
                                    const index_t total) {
  using acc_t = at::opmath_type<scalar_t>;
  constexpr int U = kOutputsPerThread<S>, R = K / 2;
  using V = Vec<scalar_t, U>;
  const index_t HoWo = d.Ho * d.Wo, HW = d.H * d.W;
  for (index_t idx = global_thread<index_t>(); idx < total; idx += grid_stride<index_t>()) {
    // the K tap rows of an output row run side by side (neighbouring blocks),
    // so that grad_output, which each of them reads whole, comes from DRAM
    // about once: tap row by tap row it would be read K times (one image's
    // grad_output, 62 MB at 256x200x304, is larger than an H100's L2)
    const WindowItem<index_t, S> item = window_item<S, true>(idx, index_t(K), d);
    const WindowPlace<index_t, S>& at = item.at;
    const index_t ky = item.inner, g = item.g, n = item.n;
    const index_t y = at.ci - R + ky;
    acc_t acc[U][K];
#pragma unroll
    for (int u = 0; u < U; ++u) {
#pragma unroll
      for (int kx = 0; kx < K; ++kx) acc[u][kx] = 0;
    }
    if (in_bounds(y, d.H)) {  // else the whole row of taps is outside: zeros
      const index_t c_begin = g * d.cpg;
      const scalar_t* go = grad_output + (n * d.C + c_begin) * HoWo + at.pix;
      const scalar_t* plane = features + (n * d.C + c_begin) * HW;
      if (warp_all(in_bounds(at.cj - R, d.W) && in_bounds(at.cj + R, d.W), idx)) {
        correlate_row<true, K, S>(go, plane, acc, at, y, d, HW, HoWo);
      } else {
        correlate_row<false, K, S>(go, plane, acc, at, y, d, HW, HoWo);
      }
    }
    scalar_t* out = grad_masks + (n * d.mC + mask_channel(g, ky, index_t(0), index_t(K))) * HoWo +
                    at.pix;
#pragma unroll
    for (int kx = 0; kx < K; ++kx) {
      V o;
#pragma unroll
      for (int u = 0; u < U; ++u) o.v[u] = static_cast<scalar_t>(acc[u][kx]);
      store_vec(out + index_t(kx) * HoWo, o);
    }
  }
}

// The adjoint sums of one grad_features thread, as a gather over every
// (tap, output pixel) that read input pixel (y, x): for each tap (ky, kx)
// whose window centre (i, j) exists, the s*s output pixels of that centre,
// summed in the order ky, t, kx, u. Along a row of taps (kx) the centre
// moves left one column, so within output row i*s+t every read is a fixed
// offset from one pointer per channel: the addresses are computed once per
// (ky, t), not per load. acc[cc] collects channel c_begin + cc; coff[cc] is
// its grad_output plane offset (channels past the chunk's end repeat its
// last one, so the inner loop needs no test; their sums are not stored).
template <bool kInterior, int K, int S, typename scalar_t, typename index_t, typename acc_t>
__device__ __forceinline__ void gather_adjoint(const scalar_t* __restrict__ go,
                                               const scalar_t* __restrict__ m,
                                               acc_t (&acc)[kGradFeatureChannels],
                                               const index_t (&coff)[kGradFeatureChannels],
                                               index_t y, index_t x, index_t g,
                                               const Dims<index_t>& d, index_t HoWo) {
  constexpr int U = kOutputsPerThread<S>;
  using V = Vec<scalar_t, U>;
  const index_t k = K > 0 ? index_t(K) : d.k, s = S > 0 ? index_t(S) : d.s;
  const index_t j0 = center_reading(x, index_t(0), k);  // the centre column of kx = 0
  // Only the taps of a row (kx) are unrolled: unrolling ky and t too lets the
  // compiler hoist so many loads that the kernel spills (255 registers at
  // k = 5, s = 2, against about 110 this way).
#pragma unroll 1
  for (index_t ky = 0; ky < k; ++ky) {
    const index_t i = center_reading(y, ky, k);
    if (!kInterior && !in_bounds(i, d.H)) continue;
#pragma unroll 1
    for (index_t t = 0; t < s; ++t) {
      const index_t row0 = (i * s + t) * d.Wo + j0 * s;  // output pixel (i*s+t, j0*s)
      const scalar_t* mrow = m + mask_channel(g, ky, index_t(0), k) * HoWo + row0;
      const scalar_t* gorow[kGradFeatureChannels];
#pragma unroll
      for (int cc = 0; cc < kGradFeatureChannels; ++cc) gorow[cc] = go + coff[cc] + row0;
#pragma unroll
      for (index_t kx = 0; kx < k; ++kx) {
        if (!kInterior && !in_bounds(j0 - kx, d.W)) continue;
        const index_t back = kx * s;  // centre j0 - kx: s output columns left per tap
        // s consecutive outputs: one access when S is known, else one each
        for (index_t u = 0; u < s; u += U) {
          const V mv = load_vec<V>(mrow + kx * HoWo - back + u);
#pragma unroll
          for (int cc = 0; cc < kGradFeatureChannels; ++cc) {
            const V gv = load_vec<V>(gorow[cc] - back + u);
#pragma unroll
            for (int uu = 0; uu < U; ++uu) {
              acc[cc] += static_cast<acc_t>(mv.v[uu]) * static_cast<acc_t>(gv.v[uu]);
            }
          }
        }
      }
    }
  }
}

// grad_features for one (n, g, chunk of kGradFeatureChannels channels, input
// pixel) per thread: each mask value the pixel's adjoint reads is loaded once
// for the chunk's channels (a one-thread-per-element kernel would reload it
// for every channel). K, S = 0: k, s read at run time.
template <typename scalar_t, typename index_t, int K, int S>
__global__ void __launch_bounds__(kThreads)
    carafe_grad_features_chunk_kernel(const scalar_t* __restrict__ grad_output,
                                      const scalar_t* __restrict__ masks,
                                      scalar_t* __restrict__ grad_features,
                                      const Dims<index_t> d, const index_t chunks,
                                      const index_t total) {
  using acc_t = at::opmath_type<scalar_t>;
  const index_t HoWo = d.Ho * d.Wo, HW = d.H * d.W;
  const index_t r = kernel_radius(K > 0 ? index_t(K) : d.k);
  for (index_t idx = global_thread<index_t>(); idx < total; idx += grid_stride<index_t>()) {
    const index_t yx = idx % HW;
    index_t rest = idx / HW;
    const index_t chunk = rest % chunks;
    rest /= chunks;
    const index_t g = rest % d.G, n = rest / d.G;
    const index_t y = yx / d.W, x = yx % d.W;
    const index_t c_begin = g * d.cpg + chunk * kGradFeatureChannels;
    const index_t count = min(index_t(kGradFeatureChannels), (g + 1) * d.cpg - c_begin);
    const scalar_t* go = grad_output + (n * d.C + c_begin) * HoWo;
    const scalar_t* m = masks + n * d.mC * HoWo;
    acc_t acc[kGradFeatureChannels];
    index_t coff[kGradFeatureChannels];
#pragma unroll
    for (int cc = 0; cc < kGradFeatureChannels; ++cc) {
      acc[cc] = 0;
      coff[cc] = min(index_t(cc), count - 1) * HoWo;
    }
    if (warp_all(in_bounds(y - r, d.H) && in_bounds(y + r, d.H) && in_bounds(x - r, d.W) &&
                     in_bounds(x + r, d.W),
                 idx)) {
      gather_adjoint<true, K, S>(go, m, acc, coff, y, x, g, d, HoWo);
    } else {
      gather_adjoint<false, K, S>(go, m, acc, coff, y, x, g, d, HoWo);
    }
#pragma unroll
    for (int cc = 0; cc < kGradFeatureChannels; ++cc) {
      if (cc < count) {
        grad_features[(n * d.C + c_begin + cc) * HW + yx] = static_cast<scalar_t>(acc[cc]);
      }
    }
  }
}

template <typename index_t>
Dims<index_t> dims_of(const at::Tensor& features, int64_t k, int64_t G, int64_t s) {
  return make_dims<index_t>(features.size(0), features.size(1), features.size(2),
                            features.size(3), k, G, s);
}

// Chunks of CB channels per group (the last one may be short).
template <int CB = kChannelsPerThread, typename index_t>
index_t channel_chunks(const Dims<index_t>& d) {
  return (d.cpg + CB - 1) / CB;
}

// Calls f(std::integral_constant<int, K>) with K = k for the kernel sizes
// compiled with unrolled taps (1, 3, 5, 7), else K = 0 (the generic path).
template <typename F>
void dispatch_kernel_size(int64_t k, F&& f) {
  switch (k) {
    case 1: return f(std::integral_constant<int, 1>{});
    case 3: return f(std::integral_constant<int, 3>{});
    case 5: return f(std::integral_constant<int, 5>{});
    case 7: return f(std::integral_constant<int, 7>{});
    default: return f(std::integral_constant<int, 0>{});
  }
}

// Whether the window kernels may take s = 2's output pairs as single
// accesses: every pointer read or written in pairs is aligned to a pair (an
// input can be a view that starts at an odd element).
template <typename index_t, typename... T>
bool use_pairs(const Dims<index_t>& d, const T*... pair_pointers) {
  return d.s == 2 && (is_aligned<2>(pair_pointers) && ...);
}

// The launches below choose a kernel and call launch(threads, kernel, kernel
// arguments...): a real <<<>>> launch in carafe_kernel.cu, the grid emulation
// in the tests, so both run the same choice.
//
// Forward: the window kernel with output pairs for s = 2 and k <= 5 (k = 7
// pairs would need 98 mask values in registers), one output per thread for
// other s or k = 7, the generic kernel for other k.
template <typename scalar_t, typename index_t, typename Launch>
void launch_forward(const Dims<index_t>& d, const scalar_t* features, const scalar_t* masks,
                    scalar_t* output, Launch&& launch) {
  const index_t chunks = channel_chunks(d);
  const int64_t per_row = int64_t(d.N) * d.G * chunks * d.Ho;
  const bool pairs = use_pairs(d, masks, output) && d.k <= 5;
  dispatch_kernel_size(d.k, [&](auto K) {
    constexpr int k = decltype(K)::value;
    if constexpr (k == 0) {
      const int64_t threads = per_row * d.Wo;
      launch(threads, carafe_forward_generic_kernel<scalar_t, index_t>, features, masks, output,
             d, chunks, index_t(threads));
    } else {
      if constexpr (k <= 5) {
        if (pairs) {
          const int64_t threads = per_row * d.W;
          return launch(threads, carafe_forward_window_kernel<scalar_t, index_t, k, 2>,
                        features, masks, output, d, chunks, index_t(threads));
        }
      }
      const int64_t threads = per_row * d.Wo;
      launch(threads, carafe_forward_window_kernel<scalar_t, index_t, k, 0>, features, masks,
             output, d, chunks, index_t(threads));
    }
  });
}

// grad_masks: the window kernel (a row of taps per thread) for k in
// {1, 3, 5, 7}, pairs for s = 2; one thread per mask element for other k.
template <typename scalar_t, typename index_t, typename Launch>
void launch_grad_masks(const Dims<index_t>& d, const scalar_t* grad_output,
                       const scalar_t* features, scalar_t* grad_masks, Launch&& launch) {
  const int64_t per_row = int64_t(d.N) * d.G * d.Ho;
  const bool pairs = use_pairs(d, grad_output, grad_masks);
  dispatch_kernel_size(d.k, [&](auto K) {
    constexpr int k = decltype(K)::value;
    if constexpr (k == 0) {
      const int64_t threads = per_row * d.Wo * d.k * d.k;
      launch(threads, carafe_grad_masks_kernel<scalar_t, index_t>, grad_output, features,
             grad_masks, d, index_t(threads));
    } else if (pairs) {
      const int64_t threads = per_row * k * d.W;
      launch(threads, carafe_grad_masks_window_kernel<scalar_t, index_t, k, 2>, grad_output,
             features, grad_masks, d, index_t(threads));
    } else {
      const int64_t threads = per_row * k * d.Wo;
      launch(threads, carafe_grad_masks_window_kernel<scalar_t, index_t, k, 0>, grad_output,
             features, grad_masks, d, index_t(threads));
    }
  });
}

// grad_features: chunks of kGradFeatureChannels channels per input pixel; unrolled
// taps for k in {1, 3, 5, 7}, pairs for s = 2.
template <typename scalar_t, typename index_t, typename Launch>
void launch_grad_features(const Dims<index_t>& d, const scalar_t* grad_output,
                          const scalar_t* masks, scalar_t* grad_features, Launch&& launch) {
  const index_t chunks = channel_chunks<kGradFeatureChannels>(d);
  const int64_t threads = int64_t(d.N) * d.G * chunks * d.H * d.W;
  const bool pairs = use_pairs(d, grad_output, masks);
  dispatch_kernel_size(d.k, [&](auto K) {
    constexpr int k = decltype(K)::value;
    if (pairs) {
      launch(threads, carafe_grad_features_chunk_kernel<scalar_t, index_t, k, 2>, grad_output,
             masks, grad_features, d, chunks, index_t(threads));
    } else {
      launch(threads, carafe_grad_features_chunk_kernel<scalar_t, index_t, k, 0>, grad_output,
             masks, grad_features, d, chunks, index_t(threads));
    }
  });
}

}  // namespace kernels
}  // namespace carafe
