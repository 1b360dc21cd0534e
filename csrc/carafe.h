// Declarations shared by the schema file and the per-device kernels.
#pragma once

#include <ATen/core/Tensor.h>

namespace carafe {

// Validate the arguments of carafe::carafe. Raises c10::ValueError (Python
// ValueError) naming the argument and the expected value. The fake kernels
// (carafe/ops.py) run the same checks through the op carafe::check_args.
void check_forward_args(const at::Tensor& features, const at::Tensor& masks, int64_t kernel_size,
                        int64_t group_size, int64_t scale_factor);

// As above for carafe::carafe_backward, plus grad_output's shape.
void check_backward_args(const at::Tensor& grad_output, const at::Tensor& features,
                         const at::Tensor& masks, int64_t kernel_size, int64_t group_size,
                         int64_t scale_factor);

}  // namespace carafe
