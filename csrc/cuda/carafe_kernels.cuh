// The CUDA kernels of carafe::carafe / carafe::carafe_backward and the
// choice of kernel for a call (launch_forward, launch_grad_masks,
// launch_grad_features), separate from the launches themselves
// (carafe_kernel.cu) so that the same code can also be compiled for the host
// and run under a CPU emulation of the CUDA grid (tests/cuda_emulation/): the
// kernels' index arithmetic and the choice of kernel are then tested on
// machines without a GPU. Device-only constructs are limited to what that
// emulation provides (blockIdx, threadIdx, blockDim, gridDim, min, and the
// warp vote of warp_all).
//
//   grid.cuh              block size, grid size, index width, test switches
//   window.cuh            warp vote, paired accesses, a thread's window
//   forward_kernels.cuh   the forward kernels
//   backward_kernels.cuh  the grad_masks and grad_features kernels
//   this file             which kernel runs, on how many threads
//
// The kernels are bound by instructions, not bytes: in a kernel with one
// output per thread, every feature value a thread loads feeds one
// multiply-add, each tap carries an in-bounds test, and the k*k
// multiply-adds of an output form one dependent chain, so float16 runs no
// faster than float32. Hence:
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

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <type_traits>

#include "../carafe_index.h"
#include "backward_kernels.cuh"
#include "forward_kernels.cuh"
#include "grid.cuh"
#include "window.cuh"

namespace carafe {
namespace kernels {

template <typename index_t>
Dims<index_t> dims_of(const at::Tensor& features, int64_t k, int64_t G, int64_t s) {
  return make_dims<index_t>(features.size(0), features.size(1), features.size(2), features.size(3),
                            k, G, s);
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
    case 1:
      return f(std::integral_constant<int, 1>{});
    case 3:
      return f(std::integral_constant<int, 3>{});
    case 5:
      return f(std::integral_constant<int, 5>{});
    case 7:
      return f(std::integral_constant<int, 7>{});
    default:
      return f(std::integral_constant<int, 0>{});
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
      launch(threads, carafe_forward_generic_kernel<scalar_t, index_t>, features, masks, output, d,
             chunks, index_t(threads));
    } else {
      if constexpr (k <= 5) {
        if (pairs) {
          const int64_t threads = per_row * d.W;
          return launch(threads, carafe_forward_window_kernel<scalar_t, index_t, k, 2>, features,
                        masks, output, d, chunks, index_t(threads));
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
