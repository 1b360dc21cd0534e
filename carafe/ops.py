"""The CARAFE operator: ``carafe.carafe`` and its torch.library registrations.

The kernels (csrc/) register ``torch.ops.carafe.carafe`` and
``torch.ops.carafe.carafe_backward`` for CPU and CUDA. This module adds what
PyTorch needs around them, in Python as torch.library recommends: fake
(meta) kernels, so that torch.compile and torch.export trace the op without
running it, and autograd formulas, including double backward.
"""

import torch
from torch import Tensor

from . import _loader
from ._checks import INT64_MAX, require_int


def _check_python_args(features, masks, kernel_size, group_size, scale_factor) -> None:
    """What the op's schema cannot say clearly: argument kinds, and whether
    kernels exist for the device the tensors are on. The values are checked
    by the op (csrc/carafe.cpp)."""
    for name, value in (("features", features), ("masks", masks)):
        if not isinstance(value, Tensor):
            raise TypeError(f"carafe: {name} must be a torch.Tensor, got {type(value).__name__}")
    for name, value in (
        ("kernel_size", kernel_size),
        ("group_size", group_size),
        ("scale_factor", scale_factor),
    ):
        require_int("carafe", name, value)
        if not -INT64_MAX - 1 <= value <= INT64_MAX:  # the schema's int is int64
            raise ValueError(f"carafe: {name} must fit in int64, got {value}")
    for t in (features, masks):
        dev = t.device.type
        if dev == "cuda" and not _loader.HAS_CUDA_KERNEL:
            raise RuntimeError(
                "carafe: the tensors are on CUDA but this build of carafe has no CUDA kernels; "
                "rebuild on a machine with nvcc (FORCE_CUDA=1 make setup, or "
                "FORCE_CUDA=1 pip install --no-build-isolation -e .)"
            )
        if dev not in ("cpu", "cuda", "meta"):
            raise RuntimeError(
                f"carafe: no kernel for device type {dev!r}; carafe runs on cpu and cuda"
            )


def carafe(
    features: Tensor, masks: Tensor, kernel_size: int, group_size: int, scale_factor: int
) -> Tensor:
    """Content-Aware ReAssembly of FEatures (arXiv 1905.02188); a drop-in for
    ``mmcv.ops.carafe`` (same arguments, same result).

    Each output pixel (p, q) is a weighted sum of the k x k input neighbourhood
    around (p // s, q // s), weighted by its own kernel ``masks[:, :, p, q]``;
    channel c uses kernel group c // (C / G). Taps outside the input count as
    zero; the weights are used as given (CARAFEPack softmax-normalises them).

    Args:
        features: (N, C, H, W), float16 / bfloat16 / float32 / float64, CPU or CUDA.
        masks: (N, k*k*G, s*H, s*W), same dtype and device; channel
            g*k*k + ky*k + kx is tap (ky, kx) of group g.
        kernel_size: k, odd, >= 1.
        group_size: G, >= 1, divides C.
        scale_factor: s, integer >= 1.
    Returns:
        (N, C, s*H, s*W), contiguous, same dtype and device. Differentiable
        in both inputs (twice). Under ``torch.autocast`` both inputs are cast
        to the autocast dtype first.
    """
    _check_python_args(features, masks, kernel_size, group_size, scale_factor)
    features, masks = _autocast_inputs(features, masks)
    return torch.ops.carafe.carafe(features, masks, kernel_size, group_size, scale_factor)


def _autocast_inputs(features: Tensor, masks: Tensor):
    """Under torch.autocast, run in the autocast dtype (the kernels accumulate
    in float32 anyway). Without this, mixed precision would hand the op
    float16 features and float32 kernels (softmax autocasts to float32) and
    fail the dtype check."""
    device_type = features.device.type
    if device_type not in ("cpu", "cuda") or not torch.is_autocast_enabled(device_type):
        return features, masks
    dtype = torch.get_autocast_dtype(device_type)
    cast = [
        t.to(dtype) if t.is_floating_point() and t.dtype != torch.float64 else t
        for t in (features, masks)
    ]
    return cast[0], cast[1]


# Fake kernels: shapes, dtypes and devices only. Their argument checks are the
# kernels' own (carafe::check_args runs the C++ checks on the fake tensors'
# sizes, symbolic ones included), so both raise the same errors.
@torch.library.register_fake("carafe::carafe")
def _carafe_fake(features, masks, kernel_size, group_size, scale_factor):
    torch.ops.carafe.check_args(features, masks, kernel_size, group_size, scale_factor)
    N, C, H, W = features.shape
    return features.new_empty((N, C, H * scale_factor, W * scale_factor))


@torch.library.register_fake("carafe::carafe_backward")
def _carafe_backward_fake(grad_output, features, masks, kernel_size, group_size, scale_factor):
    torch.ops.carafe.check_args(features, masks, kernel_size, group_size, scale_factor, grad_output)
    return features.new_empty(features.shape), masks.new_empty(masks.shape)


# Autograd. The op is bilinear in (features, masks): out = F(features, masks).
def _setup_forward(ctx, inputs, output):
    features, masks, kernel_size, group_size, scale_factor = inputs
    ctx.save_for_backward(features, masks)
    ctx.args = (kernel_size, group_size, scale_factor)


def _forward_backward(ctx, grad_output):
    features, masks = ctx.saved_tensors
    grad_features, grad_masks = torch.ops.carafe.carafe_backward(
        grad_output, features, masks, *ctx.args
    )
    return grad_features, grad_masks, None, None, None


torch.library.register_autograd("carafe::carafe", _forward_backward, setup_context=_setup_forward)


def _setup_backward(ctx, inputs, output):
    grad_output, features, masks, kernel_size, group_size, scale_factor = inputs
    ctx.save_for_backward(grad_output, features, masks)
    ctx.args = (kernel_size, group_size, scale_factor)


def _backward_backward(ctx, gg_features, gg_masks):
    """Double backward, from the bilinearity of F: with grad_features =
    B_f(masks, grad_output) and grad_masks = B_m(features, grad_output),
      d/d grad_output = F(gg_features, masks) + F(features, gg_masks)
      d/d features    = B_f(gg_masks, grad_output)
      d/d masks       = B_m(gg_features, grad_output)
    all computed with the same two ops (so higher orders work too)."""
    grad_output, features, masks = ctx.saved_tensors
    args = ctx.args
    d_grad_output = d_features = d_masks = None
    if gg_features is not None:
        d_grad_output = torch.ops.carafe.carafe(gg_features, masks, *args)
        d_masks = torch.ops.carafe.carafe_backward(grad_output, gg_features, masks, *args)[1]
    if gg_masks is not None:
        term = torch.ops.carafe.carafe(features, gg_masks, *args)
        d_grad_output = term if d_grad_output is None else d_grad_output + term
        d_features = torch.ops.carafe.carafe_backward(grad_output, features, gg_masks, *args)[0]
    return d_grad_output, d_features, d_masks, None, None, None


torch.library.register_autograd(
    "carafe::carafe_backward", _backward_backward, setup_context=_setup_backward
)
