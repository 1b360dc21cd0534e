// The only place the carafe operator schemas are defined, and the one
// implementation of their argument checks. Device files (cpu/, cuda/) add
// implementations with TORCH_LIBRARY_IMPL; autograd and fake kernels are
// registered from Python (carafe/ops.py) with torch.library, the fake
// kernels checking their arguments with carafe::check_args.
#include <Python.h>

#include <ATen/core/Tensor.h>
#include <c10/core/SymBool.h>
#include <c10/core/SymInt.h>
#include <c10/util/Exception.h>
#include <torch/library.h>

#include <limits>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "carafe.h"

extern "C" {
// `import carafe._C` loads this shared library, which runs the static
// registrations below; the module itself is empty, so no pybind11 is needed.
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {
      PyModuleDef_HEAD_INIT, "_C", "CARAFE operator kernels (registered in torch.ops.carafe)", -1,
      nullptr};
  return PyModule_Create(&module_def);
}
}

namespace carafe {
namespace {

// Python's spelling of a dtype (str(torch.float32) is "torch.float32"), so
// that messages name dtypes as the caller's Python code does.
std::string dtype_name(at::ScalarType t) {
  switch (t) {
    case at::kHalf:
      return "torch.float16";
    case at::kBFloat16:
      return "torch.bfloat16";
    case at::kFloat:
      return "torch.float32";
    case at::kDouble:
      return "torch.float64";
    case at::kByte:
      return "torch.uint8";
    case at::kChar:
      return "torch.int8";
    case at::kShort:
      return "torch.int16";
    case at::kInt:
      return "torch.int32";
    case at::kLong:
      return "torch.int64";
    case at::kBool:
      return "torch.bool";
    case at::kComplexFloat:
      return "torch.complex64";
    case at::kComplexDouble:
      return "torch.complex128";
    default:
      return std::string("torch.") + c10::toString(t);
  }
}

std::string shape_str(c10::SymIntArrayRef sizes) {
  std::ostringstream os;
  os << sizes;  // "[2, 64, 3, 3]", as str(list(t.shape)) prints it
  return os.str();
}

bool is_supported_float(at::ScalarType t) {
  return t == at::kHalf || t == at::kBFloat16 || t == at::kFloat || t == at::kDouble;
}

// Whether a condition on sizes holds. The sizes of real tensors are plain
// integers. The fake kernels run these checks on the sizes of torch.compile's
// and torch.export's fake tensors, which may be symbolic: the condition is
// then decided on the example's sizes and kept as a guard of the traced graph
// (or, for data-dependent sizes, as a runtime assertion), as Python's `if`
// on such sizes does.
bool holds(const c10::SymBool& condition) { return condition.expect_true(__FILE__, __LINE__); }

// Whether size * factor (size >= 0, factor >= 1) fits in int64. Plain
// sizes: GCC/Clang's builtin (the CPU kernels need GCC or Clang already;
// c10's signed-integer wrapper is newer than torch 2.4). Symbolic sizes
// multiply without overflow, so the product is compared instead.
bool product_fits(const c10::SymInt& size, int64_t factor) {
  if (const std::optional<int64_t> n = size.maybe_as_int()) {
    int64_t product = 0;
    return !__builtin_mul_overflow(*n, factor, &product);
  }
  return holds((size * factor).sym_le(std::numeric_limits<int64_t>::max()));
}

}  // namespace

// Sizes are read as SymInts (sym_size), so that the same code serves the
// kernels and, through carafe::check_args, the fake kernels.
void check_forward_args(const at::Tensor& features, const at::Tensor& masks, int64_t kernel_size,
                        int64_t group_size, int64_t scale_factor) {
  TORCH_CHECK_VALUE(kernel_size >= 1 && kernel_size % 2 == 1,
                    "carafe: kernel_size must be an odd integer >= 1, got ", kernel_size);
  TORCH_CHECK_VALUE(group_size >= 1, "carafe: group_size must be an integer >= 1, got ",
                    group_size);
  TORCH_CHECK_VALUE(scale_factor >= 1, "carafe: scale_factor must be an integer >= 1, got ",
                    scale_factor);
  TORCH_CHECK_VALUE(features.dim() == 4,
                    "carafe: features must be a 4-D tensor (N, C, H, W), got shape ",
                    shape_str(features.sym_sizes()));
  TORCH_CHECK_VALUE(masks.dim() == 4,
                    "carafe: masks must be a 4-D tensor (N, kernel_size*kernel_size*group_size, "
                    "H*scale_factor, W*scale_factor), got shape ",
                    shape_str(masks.sym_sizes()));
  TORCH_CHECK_VALUE(is_supported_float(features.scalar_type()),
                    "carafe: features must be float16, bfloat16, float32 or float64, got ",
                    dtype_name(features.scalar_type()));
  TORCH_CHECK_VALUE(masks.scalar_type() == features.scalar_type(),
                    "carafe: masks must have the dtype of features (",
                    dtype_name(features.scalar_type()), "), got ", dtype_name(masks.scalar_type()));
  TORCH_CHECK_VALUE(masks.device() == features.device(),
                    "carafe: masks must be on the device of features (", features.device().str(),
                    "), got ", masks.device().str());
  const c10::SymInt &N = features.sym_size(0), &C = features.sym_size(1);
  const c10::SymInt &H = features.sym_size(2), &W = features.sym_size(3);
  TORCH_CHECK_VALUE(holds((C % group_size).sym_eq(0)),
                    "carafe: group_size must divide the number of feature channels C=", C,
                    ", got group_size=", group_size);
  // Products of user-given sizes are refused when they overflow int64: a
  // product that wraps round could match the masks' sizes and send the
  // kernels far out of bounds.
  int64_t kk = 0, mask_channels = 0;
  TORCH_CHECK_VALUE(!__builtin_mul_overflow(kernel_size, kernel_size, &kk) &&
                        !__builtin_mul_overflow(kk, group_size, &mask_channels),
                    "carafe: kernel_size*kernel_size*group_size must fit in int64, got "
                    "kernel_size=",
                    kernel_size, ", group_size=", group_size);
  TORCH_CHECK_VALUE(product_fits(H, scale_factor) && product_fits(W, scale_factor),
                    "carafe: H*scale_factor and W*scale_factor must fit in int64, got H=", H,
                    ", W=", W, ", scale_factor=", scale_factor);
  const c10::SymInt Ho = H * scale_factor, Wo = W * scale_factor;
  TORCH_CHECK_VALUE(holds(masks.sym_size(1).sym_eq(mask_channels)),
                    "carafe: masks must have kernel_size*kernel_size*group_size=", mask_channels,
                    " channels, got ", masks.sym_size(1));
  TORCH_CHECK_VALUE(holds(masks.sym_size(0).sym_eq(N)),
                    "carafe: masks must have the batch size of features (", N, "), got ",
                    masks.sym_size(0));
  TORCH_CHECK_VALUE(holds(masks.sym_size(2).sym_eq(Ho)) && holds(masks.sym_size(3).sym_eq(Wo)),
                    "carafe: masks must have spatial size (H*scale_factor, W*scale_factor)=(", Ho,
                    ", ", Wo, "), got (", masks.sym_size(2), ", ", masks.sym_size(3), ")");
}

void check_backward_args(const at::Tensor& grad_output, const at::Tensor& features,
                         const at::Tensor& masks, int64_t kernel_size, int64_t group_size,
                         int64_t scale_factor) {
  check_forward_args(features, masks, kernel_size, group_size, scale_factor);
  const std::vector<c10::SymInt> expected = {features.sym_size(0), features.sym_size(1),
                                             features.sym_size(2) * scale_factor,
                                             features.sym_size(3) * scale_factor};
  bool same_shape = grad_output.dim() == 4;
  for (int64_t i = 0; same_shape && i < 4; ++i) {
    same_shape = holds(grad_output.sym_size(i).sym_eq(expected[i]));
  }
  TORCH_CHECK_VALUE(same_shape, "carafe: grad_output must have shape ", shape_str(expected),
                    ", got ", shape_str(grad_output.sym_sizes()));
  TORCH_CHECK_VALUE(grad_output.scalar_type() == features.scalar_type(),
                    "carafe: grad_output must have the dtype of features (",
                    dtype_name(features.scalar_type()), "), got ",
                    dtype_name(grad_output.scalar_type()));
  TORCH_CHECK_VALUE(grad_output.device() == features.device(),
                    "carafe: grad_output must be on the device of features (",
                    features.device().str(), "), got ", grad_output.device().str());
}

namespace {

// carafe::check_args: the checks above as an op, for the fake kernels.
void check_args(const at::Tensor& features, const at::Tensor& masks, int64_t kernel_size,
                int64_t group_size, int64_t scale_factor,
                const std::optional<at::Tensor>& grad_output) {
  if (grad_output.has_value()) {
    check_backward_args(*grad_output, features, masks, kernel_size, group_size, scale_factor);
  } else {
    check_forward_args(features, masks, kernel_size, group_size, scale_factor);
  }
}

}  // namespace
}  // namespace carafe

TORCH_LIBRARY(carafe, m) {
  // Content-Aware ReAssembly of FEatures (arXiv 1905.02188), mmcv semantics:
  // features (N, C, H, W), masks (N, k*k*G, s*H, s*W) -> (N, C, s*H, s*W).
  m.def(
      "carafe(Tensor features, Tensor masks, int kernel_size, int group_size, "
      "int scale_factor) -> Tensor");
  // Both gradients in one call: (grad_features, grad_masks).
  m.def(
      "carafe_backward(Tensor grad_output, Tensor features, Tensor masks, int kernel_size, "
      "int group_size, int scale_factor) -> (Tensor, Tensor)");
  // The argument checks of the two ops (of carafe_backward when grad_output
  // is given), raising their ValueErrors; nothing else. The fake kernels
  // (carafe/ops.py) call it, so the checks are written once, here.
  m.def(
      "check_args(Tensor features, Tensor masks, int kernel_size, int group_size, "
      "int scale_factor, Tensor? grad_output=None) -> ()");
}

// CompositeImplicitAutograd: one kernel for every device, called as is with
// meta and fake tensors (it reads only their sizes, dtypes and devices), so
// that tracing neither needs a fake kernel for it nor records it in a graph.
TORCH_LIBRARY_IMPL(carafe, CompositeImplicitAutograd, m) {
  m.impl("check_args", &carafe::check_args);
}
