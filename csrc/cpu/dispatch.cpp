// CPU kernels of carafe::carafe and carafe::carafe_backward: the dtype
// dispatch, the choice of path, and the one registration of the CPU
// implementations (the schemas are in ../carafe.cpp).
//
// Layout: NCHW throughout (inputs are made contiguous; outputs are contiguous
// NCHW). Work is split with at::parallel_for over rows; every element is
// summed in a fixed order by one thread (no atomics), so results do not depend
// on the thread count. The files:
// - vec.h: vector types, CPU detection (CARAFE_CPU_CAPABILITY), kernel tables;
// - float32 on x86-64 with AVX2 or AVX-512, scale 1 or 2 (the FPN case), one
//   function per ISA, k and block size, chosen from a table at run time;
//   AVX-512 and AVX2 compute each element with the same operations in the
//   same order:
//   - forward_kernels.cpp, forward and grad_masks.cpp, grad_masks: the
//     "window" kernels, vectorised over input columns, one feature vector
//     load feeding the s*s outputs of its window;
//   - grad_features.cpp, k in {1, 3, 5, 7, 9}: per-tap sums over output
//     columns, then one shifted sum per row;
// - generic.cpp (with pair_sum.h): everything else (float64, other scales,
//   narrow rows, CPUs without AVX2), as sums of products of whole rows;
// - half.cpp: float16 and bfloat16 run the float32 kernels and round each
//   result once.
// Taps outside the input are skipped on all four sides (mmcv's rule), so a
// non-finite weight there never reaches a result.
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <cstdint>
#include <tuple>
#include <type_traits>

#if defined(__linux__)
#include <sys/mman.h>
#endif

#include "../carafe.h"
#include "half.h"
#include "kernels.h"

namespace carafe::cpu {

// Large outputs are fresh mmap'ed memory from the allocator, so their first
// write faults in every 4 KiB page, which at the benchmark shapes costs more
// than the forward's sums. Asking for transparent huge pages on the
// still-untouched range (what PyTorch's THP_MEM_ALLOC_ENABLE=1 does for every
// allocation) makes that several times cheaper where the kernel allows them
// (THP "madvise" or "always"); elsewhere the call is refused and nothing
// changes.
at::Tensor empty_for_write(at::IntArrayRef sizes, const at::TensorOptions& options) {
  at::Tensor t = at::empty(sizes, options);
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  constexpr uintptr_t huge = uintptr_t(2) << 20;
  const uintptr_t begin = reinterpret_cast<uintptr_t>(t.data_ptr());
  const uintptr_t first = (begin + huge - 1) & ~(huge - 1);
  const uintptr_t last = (begin + t.nbytes()) & ~(huge - 1);
  if (last > first) madvise(reinterpret_cast<void*>(first), last - first, MADV_HUGEPAGE);
#endif
  return t;
}

void forward_float(const at::Tensor& features, const at::Tensor& masks, at::Tensor& output,
                   const Dims& d) {
  if (!forward_window<float>(features, masks, output, d)) {
    forward_blocked_float(features, masks, output, d);
  }
}

void backward_float(const at::Tensor& grad_output, const at::Tensor& features,
                    const at::Tensor& masks, at::Tensor& grad_features, at::Tensor& grad_masks,
                    const Dims& d, bool accumulate_masks) {
  const float* go = grad_output.const_data_ptr<float>();
  const float* f = features.const_data_ptr<float>();
  const float* m = masks.const_data_ptr<float>();
  float* gf = grad_features.mutable_data_ptr<float>();
  float* gm = grad_masks.mutable_data_ptr<float>();
  const bool masks_done = grad_masks_window(go, f, gm, d, accumulate_masks);
  TORCH_CHECK(masks_done || !accumulate_masks, "carafe: grad_masks cannot accumulate here");
  if (!masks_done) grad_masks_generic(go, f, gm, d);
  if (!grad_features_taps(go, m, gf, d)) grad_features_generic(go, m, gf, d);
}

namespace {

// The path of each dtype:
// - float32: the window and tap-sum kernels where they apply, else generic;
// - float64: generic;
// - float16, bfloat16: the forward's window kernels on rows converted in
//   cache where they apply, else the float32 op on float32 copies of blocks
//   of channels (half.cpp). Dispatched here, so that the generic loops are
//   not compiled for them.
template <typename T>
constexpr bool kIsHalf = std::is_same_v<T, at::Half> || std::is_same_v<T, at::BFloat16>;

template <typename scalar_t>
void forward(const at::Tensor& f, const at::Tensor& m, at::Tensor& output, const Dims& d) {
  if constexpr (kIsHalf<scalar_t>) {
    if (!forward_window<scalar_t>(f, m, output, d)) forward_half_via_float(f, m, output, d);
  } else if constexpr (std::is_same_v<scalar_t, float>) {
    forward_float(f, m, output, d);
  } else {
    forward_generic<scalar_t>(f, m, output, d);
  }
}

template <typename scalar_t>
void backward(const at::Tensor& go, const at::Tensor& f, const at::Tensor& m,
              at::Tensor& grad_features, at::Tensor& grad_masks, const Dims& d) {
  if constexpr (kIsHalf<scalar_t>) {
    backward_half_via_float(go, f, m, grad_features, grad_masks, d);
  } else if constexpr (std::is_same_v<scalar_t, float>) {
    backward_float(go, f, m, grad_features, grad_masks, d);
  } else {
    grad_masks_generic(go.const_data_ptr<scalar_t>(), f.const_data_ptr<scalar_t>(),
                       grad_masks.mutable_data_ptr<scalar_t>(), d);
    grad_features_generic(go.const_data_ptr<scalar_t>(), m.const_data_ptr<scalar_t>(),
                          grad_features.mutable_data_ptr<scalar_t>(), d);
  }
}

Dims dims_of(const at::Tensor& features, int64_t k, int64_t G, int64_t s) {
  return make_dims<int64_t>(features.size(0), features.size(1), features.size(2), features.size(3),
                            k, G, s);
}

at::Tensor carafe_forward_cpu(const at::Tensor& features, const at::Tensor& masks,
                              int64_t kernel_size, int64_t group_size, int64_t scale_factor) {
  check_forward_args(features, masks, kernel_size, group_size, scale_factor);
  const Dims d = dims_of(features, kernel_size, group_size, scale_factor);
  const at::Tensor f = features.contiguous(), m = masks.contiguous();
  at::Tensor output = empty_for_write({d.N, d.C, d.Ho, d.Wo}, features.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, features.scalar_type(),
                                  "carafe_forward_cpu",
                                  [&] { forward<scalar_t>(f, m, output, d); });
  return output;
}

std::tuple<at::Tensor, at::Tensor> carafe_backward_cpu(const at::Tensor& grad_output,
                                                       const at::Tensor& features,
                                                       const at::Tensor& masks, int64_t kernel_size,
                                                       int64_t group_size, int64_t scale_factor) {
  check_backward_args(grad_output, features, masks, kernel_size, group_size, scale_factor);
  const Dims d = dims_of(features, kernel_size, group_size, scale_factor);
  const at::Tensor go = grad_output.contiguous(), f = features.contiguous(), m = masks.contiguous();
  at::Tensor grad_features = empty_for_write(features.sizes(), features.options());
  at::Tensor grad_masks = empty_for_write(masks.sizes(), masks.options());
  if (d.cpg == 0) {  // no channels: grad_masks sums over none (the kernels size work per channel)
    grad_masks.zero_();
    return {grad_features, grad_masks};
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, features.scalar_type(), "carafe_backward_cpu",
      [&] { backward<scalar_t>(go, f, m, grad_features, grad_masks, d); });
  return {grad_features, grad_masks};
}

}  // namespace

TORCH_LIBRARY_IMPL(carafe, CPU, m) {
  m.impl("carafe", &carafe_forward_cpu);
  m.impl("carafe_backward", &carafe_backward_cpu);
}

}  // namespace carafe::cpu
