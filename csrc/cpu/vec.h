// Vector types and helpers of the CPU kernels, the choice of instruction set
// (CPU detection, CARAFE_CPU_CAPABILITY) and the tables kernels are chosen
// from. The files of csrc/cpu/ share functions in carafe::cpu, declared
// hidden: they are called directly, not through the extension's exports.
#pragma once

#include <c10/util/Exception.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

// The AVX2 and AVX-512 kernels need GCC on x86-64 (function attributes target
// and target_clones, x86 intrinsics); elsewhere only the portable loops are
// built. This is the one test of that.
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define CARAFE_X86_KERNELS 1
#include <immintrin.h>
#else
#define CARAFE_X86_KERNELS 0
#endif

#if CARAFE_X86_KERNELS
// One portable binary, with an AVX2+FMA clone chosen at load time on CPUs
// that have it: the pair-sum micro-kernel is where the generic path's time goes.
#define CARAFE_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#define CARAFE_TARGET_V4 __attribute__((target("arch=x86-64-v4")))
#define CARAFE_TARGET_V3 __attribute__((target("arch=x86-64-v3")))
#else
#define CARAFE_CLONES
#endif

namespace carafe {
namespace __attribute__((visibility("hidden"))) cpu {

  // GCC vector extensions: ymm/zmm operations in the AVX2/AVX-512 kernels, pairs
  // of SSE operations in the baseline clones.
  typedef float v8f __attribute__((vector_size(32)));
  typedef float v16f __attribute__((vector_size(64)));
  typedef int v8i __attribute__((vector_size(32)));
  typedef int v16i __attribute__((vector_size(64)));

  template <typename V>
  inline constexpr int64_t lanes = sizeof(V) / sizeof(float);

  template <typename V>
  inline __attribute__((always_inline)) V loadv(const float* p) {
    V v;
    __builtin_memcpy(&v, p, sizeof(v));
    return v;
  }
  template <typename V>
  inline __attribute__((always_inline)) void storev(float* p, V v) {
    __builtin_memcpy(p, &v, sizeof(v));
  }
  inline v8f load8(const float* p) { return loadv<v8f>(p); }
  inline void store8(float* p, v8f v) { storev(p, v); }

  // Prefetches p[0 .. n), one line per 16 floats from p (for writing: kWrite).
  template <bool kWrite = false>
  inline __attribute__((always_inline)) void prefetch_floats(const float* p, int64_t n) {
    for (int64_t i = 0; i < n; i += 16) __builtin_prefetch(p + i, kWrite ? 1 : 0);
  }
  // Prefetches the line of p into L2 (not L1). Inline asm on x86-64: GCC 12
  // dropped __builtin_prefetch(p, 0, 2) calls in grad_masks_item_body
  // (grad_masks.cpp).
  inline __attribute__((always_inline)) void prefetch_l2(const float* p) {
#if defined(__GNUC__) && defined(__x86_64__)
    asm volatile("prefetcht1 %0" : : "m"(*reinterpret_cast<const char*>(p)));
#else
    __builtin_prefetch(p, 0, 2);
#endif
  }

  // The first 64-byte aligned element of v, whose size must include 15 spare
  // floats: a kernel's whole-vector loads and stores of it are then whole lines.
  inline float* aligned64(std::vector<float> & v) {
    return v.data() + ((64 - reinterpret_cast<uintptr_t>(v.data()) % 64) % 64) / 4;
  }

  // Start column of vector block jb of a row of W >= L columns: blocks of L,
  // the last one moved left to end at W (it recomputes a few columns; results
  // are stored, not accumulated, so that is harmless).
  inline int64_t block_start(int64_t jb, int64_t L, int64_t W) { return std::min(jb * L, W - L); }

  // Stores lanes a[l] and b[l] at p[2l] and p[2l + 1] (2*lanes<V> entries).
  inline __attribute__((always_inline)) void store_interleaved(float* p, v8f a, v8f b) {
    store8(p, __builtin_shuffle(a, b, v8i{0, 8, 1, 9, 2, 10, 3, 11}));
    store8(p + 8, __builtin_shuffle(a, b, v8i{4, 12, 5, 13, 6, 14, 7, 15}));
  }
  inline __attribute__((always_inline)) void store_interleaved(float* p, v16f a, v16f b) {
    storev(p,
           __builtin_shuffle(a, b, v16i{0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23}));
    storev(p + 16, __builtin_shuffle(
                       a, b, v16i{8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31}));
  }

  // The inverse: even and odd lanes of the 2*lanes<V> entries a, b.
  inline __attribute__((always_inline)) void deinterleave(v8f a, v8f b, v8f & even, v8f & odd) {
    even = __builtin_shuffle(a, b, v8i{0, 2, 4, 6, 8, 10, 12, 14});
    odd = __builtin_shuffle(a, b, v8i{1, 3, 5, 7, 9, 11, 13, 15});
  }
  inline __attribute__((always_inline)) void deinterleave(v16f a, v16f b, v16f & even, v16f & odd) {
    even = __builtin_shuffle(a, b, v16i{0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30});
    odd = __builtin_shuffle(a, b, v16i{1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31});
  }

#if CARAFE_X86_KERNELS
  // The highest instruction set the kernels chosen at run time may use: 2
  // AVX-512, 1 AVX2, 0 neither. CARAFE_CPU_CAPABILITY=avx2 or =default (read
  // once, as ATen reads ATEN_CPU_CAPABILITY) lowers it, so that the AVX2 and
  // portable paths can be tested on an AVX-512 machine; the target_clones
  // functions (CARAFE_CLONES) keep the clone chosen at load time.
  inline int capability_cap() {
    static const int cap = [] {
      const char* v = std::getenv("CARAFE_CPU_CAPABILITY");
      const std::string s = v ? v : "avx512";
      TORCH_CHECK(s == "avx512" || s == "avx2" || s == "default",
                  "CARAFE_CPU_CAPABILITY must be one of avx512, avx2, default; got '", s, "'");
      return s == "avx512" ? 2 : s == "avx2" ? 1 : 0;
    }();
    return cap;
  }
  // x86-64-v4's AVX-512 subsets; libgcc also checks that the OS saves the registers.
  inline bool cpu_has_v4() {
    static const bool yes =
        __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
        __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq");
    return yes && capability_cap() >= 2;
  }
  inline bool cpu_has_v3() {
    static const bool yes = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    return yes && capability_cap() >= 1;
  }

  // A kernel body compiled for one instruction set: on_v4<Args, body> for
  // AVX-512, on_v3 for AVX2+FMA; the body is always_inline, so it is compiled
  // for the wrapper's instruction set. A function per ISA and body instance,
  // not target_clones (one body for every ISA): the vector width and block
  // sizes differ by ISA (the AVX-512 build has 32 vector registers, AVX2 16).
  template <typename Args, void (*Body)(const Args&)>
  CARAFE_TARGET_V4 void on_v4(const Args& a) {
    Body(a);
  }
  template <typename Args, void (*Body)(const Args&)>
  CARAFE_TARGET_V3 void on_v3(const Args& a) {
    Body(a);
  }

  // on_v4 for a body on 16-float vectors, on_v3 for 8-float ones.
  template <typename V, typename Args, void (*Body)(const Args&)>
  constexpr void (*on_isa())(const Args&) {
    if constexpr (lanes<V> == 16) {
      return &on_v4<Args, Body>;
    } else {
      return &on_v3<Args, Body>;
    }
  }
#endif

  // A channel-blocked kernel family for this CPU (and scale, k): vector width
  // L, a kernel for blocks of CB channels that share mask loads, and a
  // one-channel kernel for a block's remainder (same operations per element,
  // so the same bits). Empty when none applies (no AVX2, a scale or k without
  // kernels, rows narrower than a vector): the caller takes the generic path.
  template <typename Args>
  struct BlockKernels {
    int64_t L = 0, CB = 0;
    void (*block)(const Args&) = nullptr;
    void (*single)(const Args&) = nullptr;
  };

#if CARAFE_X86_KERNELS
  // One row of a kernel table: the kernels (with their vector width L: 16 for
  // AVX-512, 8 for AVX2) for kernel size k (0: any) and scale s.
  template <typename Kernels>
  struct KernelRow {
    int64_t k, s;
    Kernels kernels;
  };

  // The first row of `table` for k and s whose instruction set this CPU runs
  // (as far as CARAFE_CPU_CAPABILITY allows) on rows of W columns (W >= L);
  // Kernels{} (none) when no row does. Tables list AVX-512 rows first.
  template <typename Kernels, size_t N>
  Kernels choose_kernels(const KernelRow<Kernels>(&table)[N], int64_t k, int64_t s, int64_t W) {
    for (const KernelRow<Kernels>& row : table) {
      const bool isa = row.kernels.L == 16 ? cpu_has_v4() : cpu_has_v3();
      if (isa && W >= row.kernels.L && (row.k == 0 || row.k == k) && row.s == s) {
        return row.kernels;
      }
    }
    return {};
  }
#endif

}  // namespace cpu
}  // namespace carafe
