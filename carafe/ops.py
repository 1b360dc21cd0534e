"""The CARAFE operator: ``carafe.carafe`` and its torch.library registrations;
``carafe.window_similarity``, an op composed of CARAFE's kernels.

The kernels (csrc/) register ``torch.ops.carafe.carafe`` and
``torch.ops.carafe.carafe_backward`` for CPU and CUDA. This module adds what
PyTorch needs around them, in Python as torch.library recommends: fake
(meta) kernels, so that torch.compile and torch.export trace the op without
running it, and autograd formulas, including double backward.

``torch.ops.carafe.window_similarity`` has no kernel of its own, so its
schema, argument checks, implementation (two calls of the kernels above),
fake kernel and autograd are all defined here; a dedicated kernel would move
its schema and checks into csrc/carafe.cpp with the others.
"""

from typing import NoReturn

import torch
from torch import Tensor

from . import _loader
from ._checks import INT64_MAX, require_int


def _check_python_args(owner: str, tensors: dict, kernel_size, group_size, scale_factor) -> None:
    """What an op's schema cannot say clearly: argument kinds, and whether
    kernels exist for the device the tensors are on. The values are checked
    by the op (csrc/carafe.cpp; _check_window_similarity_args)."""
    for name, value in tensors.items():
        if not isinstance(value, Tensor):
            raise TypeError(f"{owner}: {name} must be a torch.Tensor, got {type(value).__name__}")
    for name, value in (
        ("kernel_size", kernel_size),
        ("group_size", group_size),
        ("scale_factor", scale_factor),
    ):
        require_int(owner, name, value)
        if not -INT64_MAX - 1 <= value <= INT64_MAX:  # the schema's int is int64
            raise ValueError(f"{owner}: {name} must fit in int64, got {value}")
    for t in tensors.values():
        dev = t.device.type
        if dev == "cuda" and not _loader.HAS_CUDA_KERNEL:
            raise RuntimeError(
                f"{owner}: the tensors are on CUDA but this build of carafe has no CUDA kernels; "
                "rebuild on a machine with nvcc (FORCE_CUDA=1 make setup, or "
                "FORCE_CUDA=1 pip install --no-build-isolation -e .)"
            )
        if dev not in ("cpu", "cuda", "meta"):
            raise RuntimeError(
                f"{owner}: no kernel for device type {dev!r}; carafe runs on cpu and cuda"
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
    _check_python_args(
        "carafe", {"features": features, "masks": masks}, kernel_size, group_size, scale_factor
    )
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


# window_similarity: the similarity of each high-resolution query pixel with
# the k x k low-resolution window CARAFE reassembles it from. CARAFE is
# bilinear, out = F(features, masks), and sim is its mask gradient, so the
# op and its gradients are CARAFE's kernels:
#   window_similarity(q, key) = grad_masks of F(key, .) at grad_output q
#   grad_query                = F(key, grad_sim)
#   grad_key                  = grad_features of F(., grad_sim) at grad_output q

_FLOATING = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _check_window_similarity_args(query, key, kernel_size, group_size, scale_factor) -> None:
    """The op's argument checks, raising ValueErrors that name the argument
    and the expected value. The op and its fake kernel both run them, so
    real, meta and fake tensors fail alike; on symbolic sizes (torch.export,
    dynamic torch.compile) the comparisons become guards of the graph."""

    def fail(message: str) -> NoReturn:
        raise ValueError(f"window_similarity: {message}")

    if kernel_size < 1 or kernel_size % 2 == 0:
        fail(f"kernel_size must be an odd integer >= 1, got {kernel_size}")
    if group_size < 1:
        fail(f"group_size must be an integer >= 1, got {group_size}")
    if scale_factor < 1:
        fail(f"scale_factor must be an integer >= 1, got {scale_factor}")
    if key.dim() != 4:
        fail(f"key must be a 4-D tensor (N, C, H, W), got shape {list(key.shape)}")
    if query.dim() != 4:
        fail(
            "query must be a 4-D tensor (N, C, H*scale_factor, W*scale_factor), "
            f"got shape {list(query.shape)}"
        )
    if key.dtype not in _FLOATING:
        fail(f"key must be float16, bfloat16, float32 or float64, got {key.dtype}")
    if query.dtype != key.dtype:
        fail(f"query must have the dtype of key ({key.dtype}), got {query.dtype}")
    if query.device != key.device:
        fail(f"query must be on the device of key ({key.device}), got {query.device}")
    N, C, H, W = key.shape
    if C % group_size != 0:
        fail(f"group_size must divide the number of channels C={C}, got group_size={group_size}")
    if kernel_size * kernel_size * group_size > INT64_MAX:
        fail(
            "kernel_size*kernel_size*group_size must fit in int64, got "
            f"kernel_size={kernel_size}, group_size={group_size}"
        )
    if query.shape[0] != N:
        fail(f"query must have the batch size of key ({N}), got {query.shape[0]}")
    if query.shape[1] != C:
        fail(f"query must have the number of channels of key ({C}), got {query.shape[1]}")
    Ho, Wo = H * scale_factor, W * scale_factor
    if query.shape[2] != Ho or query.shape[3] != Wo:
        fail(
            f"query must have spatial size (H*scale_factor, W*scale_factor)=({Ho}, {Wo}), "
            f"got ({query.shape[2]}, {query.shape[3]})"
        )


def window_similarity(
    query: Tensor, key: Tensor, kernel_size: int, group_size: int, scale_factor: int
) -> Tensor:
    """The similarity of each high-resolution query pixel with the k x k
    low-resolution window that CARAFE reassembles it from, from which
    similarity-aware upsamplers build their kernels (SAPA, Lu et al.,
    NeurIPS 2022, arXiv 2209.12866: a softmax of it)::

        sim[n, g*k*k + ky*k + kx, p, q] = sum_{c in group g} query[n, c, p, q]
                                          * key[n, c, p // s + ky - k // 2, q // s + kx - k // 2]

    with group g the channels g*C/G .. (g+1)*C/G - 1; taps outside the key
    contribute 0. The result has the layout of CARAFE's masks, so
    ``carafe(x, sim.unflatten(1, (G, k*k)).softmax(2).flatten(1, 2), k, G, s)``
    reassembles x with kernels normalised per group.

    It is CARAFE's mask gradient (grad_masks at grad_output=query,
    features=key), computed by the compiled kernels; that call also computes
    CARAFE's feature gradient, which is discarded, so it does about twice the
    work a dedicated kernel would.

    Args:
        query: (N, C, s*H, s*W), float16 / bfloat16 / float32 / float64, CPU or CUDA.
        key: (N, C, H, W), same dtype and device.
        kernel_size: k, odd, >= 1.
        group_size: G, >= 1, divides C.
        scale_factor: s, integer >= 1.
    Returns:
        (N, G*k*k, s*H, s*W), contiguous, same dtype and device.
        Differentiable in both inputs (twice). Under ``torch.autocast`` both
        inputs are cast to the autocast dtype first.
    """
    _check_python_args(
        "window_similarity",
        {"query": query, "key": key},
        kernel_size,
        group_size,
        scale_factor,
    )
    query, key = _autocast_inputs(query, key)
    return torch.ops.carafe.window_similarity(query, key, kernel_size, group_size, scale_factor)


# One op (not a Python composition) so that graphs record window_similarity
# itself: a dedicated kernel can replace the implementation below without
# changing traced or exported graphs.
@torch.library.custom_op("carafe::window_similarity", mutates_args=())
def _window_similarity_op(
    query: Tensor, key: Tensor, kernel_size: int, group_size: int, scale_factor: int
) -> Tensor:
    _check_window_similarity_args(query, key, kernel_size, group_size, scale_factor)
    N, _, Ho, Wo = query.shape
    # grad_masks does not read the masks' values, only their shape, dtype and
    # device. A stride-0 expanded zero passes carafe_backward's checks, but the kernels
    # make their inputs contiguous, so it costs one zero-filled tensor of the
    # output's size either way. The call also computes grad_features
    # (discarded): about twice the work of a dedicated kernel.
    masks = key.new_zeros(()).expand(N, kernel_size * kernel_size * group_size, Ho, Wo)
    return torch.ops.carafe.carafe_backward(
        query, key, masks, kernel_size, group_size, scale_factor
    )[1]


@torch.library.register_fake("carafe::window_similarity")
def _window_similarity_fake(query, key, kernel_size, group_size, scale_factor):
    _check_window_similarity_args(query, key, kernel_size, group_size, scale_factor)
    N, _, Ho, Wo = query.shape
    return key.new_empty((N, kernel_size * kernel_size * group_size, Ho, Wo))


def _setup_window_similarity(ctx, inputs, output):
    query, key, kernel_size, group_size, scale_factor = inputs
    ctx.save_for_backward(query, key)
    ctx.args = (kernel_size, group_size, scale_factor)


def _window_similarity_backward(ctx, grad_sim):
    """sim is bilinear in (query, key): grad_query is CARAFE's reassembly of
    key with kernels grad_sim, grad_key CARAFE's feature gradient for masks
    grad_sim at grad_output query. Both are differentiable ops, so double
    backward works too."""
    query, key = ctx.saved_tensors
    grad_query = grad_key = None
    if ctx.needs_input_grad[0]:
        grad_query = torch.ops.carafe.carafe(key, grad_sim, *ctx.args)
    if ctx.needs_input_grad[1]:
        # also computes a grad_masks that is discarded (no kernel computes
        # grad_features alone)
        grad_key = torch.ops.carafe.carafe_backward(query, key, grad_sim, *ctx.args)[0]
    return grad_query, grad_key, None, None, None


torch.library.register_autograd(
    "carafe::window_similarity",
    _window_similarity_backward,
    setup_context=_setup_window_similarity,
)
