// The only place the carafe operator schemas are defined. Device files
// (cpu/, cuda/) add implementations with TORCH_LIBRARY_IMPL; autograd and fake
// kernels are registered from Python (carafe/ops.py) with torch.library.
#include <Python.h>

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>
#include <torch/library.h>

#include <sstream>
#include <string>

#include "carafe.h"

extern "C" {
// `import carafe._C` loads this shared library, which runs the static
// registrations below; the module itself is empty, so no pybind11 is needed.
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {
      PyModuleDef_HEAD_INIT, "_C", "CARAFE operator kernels (registered in torch.ops.carafe)",
      -1, nullptr};
  return PyModule_Create(&module_def);
}
}

namespace carafe {
namespace {

// Python spelling of a dtype, so that messages read the same as the ones the
// fake kernel builds from str(tensor.dtype).
std::string dtype_name(at::ScalarType t) {
  switch (t) {
    case at::kHalf: return "torch.float16";
    case at::kBFloat16: return "torch.bfloat16";
    case at::kFloat: return "torch.float32";
    case at::kDouble: return "torch.float64";
    case at::kByte: return "torch.uint8";
    case at::kChar: return "torch.int8";
    case at::kShort: return "torch.int16";
    case at::kInt: return "torch.int32";
    case at::kLong: return "torch.int64";
    case at::kBool: return "torch.bool";
    case at::kComplexFloat: return "torch.complex64";
    case at::kComplexDouble: return "torch.complex128";
    default: return std::string("torch.") + c10::toString(t);
  }
}

std::string shape_str(at::IntArrayRef sizes) {
  std::ostringstream os;
  os << sizes;  // "[2, 64, 3, 3]", as str(list(t.shape)) prints it
  return os.str();
}

bool is_supported_float(at::ScalarType t) {
  return t == at::kHalf || t == at::kBFloat16 || t == at::kFloat || t == at::kDouble;
}

}  // namespace

void check_forward_args(const at::Tensor& features, const at::Tensor& masks,
                        int64_t kernel_size, int64_t group_size, int64_t scale_factor) {
  TORCH_CHECK_VALUE(kernel_size >= 1 && kernel_size % 2 == 1,
                    "carafe: kernel_size must be an odd integer >= 1, got ", kernel_size);
  TORCH_CHECK_VALUE(group_size >= 1, "carafe: group_size must be an integer >= 1, got ",
                    group_size);
  TORCH_CHECK_VALUE(scale_factor >= 1, "carafe: scale_factor must be an integer >= 1, got ",
                    scale_factor);
  TORCH_CHECK_VALUE(features.dim() == 4,
                    "carafe: features must be a 4-D tensor (N, C, H, W), got shape ",
                    shape_str(features.sizes()));
  TORCH_CHECK_VALUE(masks.dim() == 4,
                    "carafe: masks must be a 4-D tensor (N, kernel_size*kernel_size*group_size, "
                    "H*scale_factor, W*scale_factor), got shape ",
                    shape_str(masks.sizes()));
  TORCH_CHECK_VALUE(is_supported_float(features.scalar_type()),
                    "carafe: features must be float16, bfloat16, float32 or float64, got ",
                    dtype_name(features.scalar_type()));
  TORCH_CHECK_VALUE(masks.scalar_type() == features.scalar_type(),
                    "carafe: masks must have the dtype of features (",
                    dtype_name(features.scalar_type()), "), got ",
                    dtype_name(masks.scalar_type()));
  TORCH_CHECK_VALUE(masks.device() == features.device(),
                    "carafe: masks must be on the device of features (", features.device().str(),
                    "), got ", masks.device().str());
  const int64_t N = features.size(0), C = features.size(1);
  const int64_t H = features.size(2), W = features.size(3);
  TORCH_CHECK_VALUE(C % group_size == 0,
                    "carafe: group_size must divide the number of feature channels C=", C,
                    ", got group_size=", group_size);
  // Products of user-given sizes: refused when they overflow int64 (the fake
  // kernel, in Python integers, refuses the same sizes with the same words).
  // GCC/Clang builtins (the CPU kernel needs GCC or Clang already): c10's
  // signed-integer wrapper is newer than torch 2.4.
  int64_t kk = 0, mask_channels = 0, Ho = 0, Wo = 0;
  TORCH_CHECK_VALUE(!__builtin_mul_overflow(kernel_size, kernel_size, &kk) &&
                        !__builtin_mul_overflow(kk, group_size, &mask_channels),
                    "carafe: kernel_size*kernel_size*group_size must fit in int64, got "
                    "kernel_size=", kernel_size, ", group_size=", group_size);
  TORCH_CHECK_VALUE(!__builtin_mul_overflow(H, scale_factor, &Ho) &&
                        !__builtin_mul_overflow(W, scale_factor, &Wo),
                    "carafe: H*scale_factor and W*scale_factor must fit in int64, got H=", H,
                    ", W=", W, ", scale_factor=", scale_factor);
  TORCH_CHECK_VALUE(masks.size(1) == mask_channels,
                    "carafe: masks must have kernel_size*kernel_size*group_size=", mask_channels,
                    " channels, got ", masks.size(1));
  TORCH_CHECK_VALUE(masks.size(0) == N, "carafe: masks must have the batch size of features (",
                    N, "), got ", masks.size(0));
  TORCH_CHECK_VALUE(masks.size(2) == Ho && masks.size(3) == Wo,
                    "carafe: masks must have spatial size (H*scale_factor, W*scale_factor)=(",
                    Ho, ", ", Wo, "), got (", masks.size(2), ", ",
                    masks.size(3), ")");
}

void check_backward_args(const at::Tensor& grad_output, const at::Tensor& features,
                         const at::Tensor& masks, int64_t kernel_size, int64_t group_size,
                         int64_t scale_factor) {
  check_forward_args(features, masks, kernel_size, group_size, scale_factor);
  const std::vector<int64_t> expected = {features.size(0), features.size(1),
                                         features.size(2) * scale_factor,
                                         features.size(3) * scale_factor};
  TORCH_CHECK_VALUE(grad_output.sizes() == at::IntArrayRef(expected),
                    "carafe: grad_output must have shape ", shape_str(expected), ", got ",
                    shape_str(grad_output.sizes()));
  TORCH_CHECK_VALUE(grad_output.scalar_type() == features.scalar_type(),
                    "carafe: grad_output must have the dtype of features (",
                    dtype_name(features.scalar_type()), "), got ",
                    dtype_name(grad_output.scalar_type()));
  TORCH_CHECK_VALUE(grad_output.device() == features.device(),
                    "carafe: grad_output must be on the device of features (",
                    features.device().str(), "), got ", grad_output.device().str());
}

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
}
