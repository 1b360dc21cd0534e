// Python binding of mmcv 2.1.0's own CUDA CARAFE launchers (the benchmark's
// GPU peer). mmcv's sources are not in this repository: `make
// gpu-check-prepare` downloads mmcv's source distribution and extracts the
// few files the launchers need; benchmarks/mmcv_peer/build.py compiles them
// with this file. The launchers' signatures are copied from
// mmcv/ops/csrc/pytorch/cuda/carafe_cuda.cu (mmcv 2.1.0).
#include <torch/extension.h>

using at::Tensor;

void CARAFEForwardCUDAKernelLauncher(const Tensor features, const Tensor masks, Tensor rfeatures,
                                     Tensor routput, Tensor rmasks, Tensor output,
                                     const int kernel_size, const int group_size,
                                     const int scale_factor);

void CARAFEBackwardCUDAKernelLauncher(const Tensor top_grad, const Tensor rfeatures,
                                      const Tensor masks, Tensor rtop_grad, Tensor rbottom_grad_hs,
                                      Tensor rbottom_grad, Tensor rmask_grad, Tensor bottom_grad,
                                      Tensor mask_grad, const int kernel_size, const int group_size,
                                      const int scale_factor);

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &CARAFEForwardCUDAKernelLauncher, "mmcv carafe forward (CUDA)");
  m.def("backward", &CARAFEBackwardCUDAKernelLauncher, "mmcv carafe backward (CUDA)");
}
