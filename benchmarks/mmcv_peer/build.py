"""mmcv 2.1.0's CUDA CARAFE as a small extension, for the GPU benchmark.

``make gpu-check-prepare`` (on a machine with the package index) puts
mmcv's source distribution's CARAFE files under build/gpu-check/mmcv_src/;
:func:`load` compiles them with binding.cpp (torch.utils.cpp_extension) and
returns ``carafe(features, masks, k, G, s)``, an autograd function that
calls mmcv's launchers exactly as mmcv.ops.carafe does (same scratch
tensors, same zero-initialised outputs).
"""

from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
SOURCES = HERE.parents[1] / "build" / "gpu-check" / "mmcv_src"
# the files of mmcv-2.1.0.tar.gz that the launchers compile from
FILES = [
    "mmcv/ops/csrc/pytorch/cuda/carafe_cuda.cu",
    "mmcv/ops/csrc/common/cuda/carafe_cuda_kernel.cuh",
    "mmcv/ops/csrc/common/cuda/common_cuda_helper.hpp",
    "mmcv/ops/csrc/common/pytorch_cuda_helper.hpp",
]


def load(sources=SOURCES, verbose=False):
    from torch.utils.cpp_extension import load as build

    sources = Path(sources)
    missing = [f for f in FILES if not (sources / f).exists()]
    if missing:
        raise FileNotFoundError(
            f"mmcv sources: {missing} missing under {sources}; run `make "
            "gpu-check-prepare` on a machine with the package index"
        )
    csrc = sources / "mmcv" / "ops" / "csrc"
    ext = build(
        name="mmcv_carafe_peer",
        sources=[str(HERE / "binding.cpp"), str(csrc / "pytorch/cuda/carafe_cuda.cu")],
        extra_include_paths=[str(csrc / "common"), str(csrc / "common" / "cuda")],
        extra_cuda_cflags=["-O3", "-DMMCV_WITH_CUDA"],
        build_directory=str(_build_dir()),
        verbose=verbose,
    )

    class MMCVCarafe(torch.autograd.Function):
        @staticmethod
        def forward(ctx, features, masks, k, G, s):
            n, c, h, w = features.shape
            output = features.new_zeros((n, c, h * s, w * s))
            routput = features.new_zeros(output.shape)
            rfeatures = features.new_zeros(features.shape)
            rmasks = masks.new_zeros(masks.shape)
            ext.forward(features, masks, rfeatures, routput, rmasks, output, k, G, s)
            ctx.save_for_backward(features, masks, rfeatures)
            ctx.args = (k, G, s)
            return output

        @staticmethod
        def backward(ctx, grad_output):
            features, masks, rfeatures = ctx.saved_tensors
            k, G, s = ctx.args
            grad_output = grad_output.contiguous()
            rgrad_output = torch.zeros_like(grad_output)
            rgrad_input_hs = torch.zeros_like(grad_output)
            rgrad_input = torch.zeros_like(features)
            rgrad_masks = torch.zeros_like(masks)
            grad_input = torch.zeros_like(features)
            grad_masks = torch.zeros_like(masks)
            ext.backward(
                grad_output,
                rfeatures,
                masks,
                rgrad_output,
                rgrad_input_hs,
                rgrad_input,
                rgrad_masks,
                grad_input,
                grad_masks,
                k,
                G,
                s,
            )
            return grad_input, grad_masks, None, None, None

    return MMCVCarafe.apply


def _build_dir():
    # per torch version: an extension built against another torch must not be reused
    d = HERE.parents[1] / "build" / "gpu-check" / "mmcv_peer_build" / torch.__version__
    d.mkdir(parents=True, exist_ok=True)
    return d
