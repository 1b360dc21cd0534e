"""CARAFE's content-agnostic twin at test time: a trained model's CARAFE
upsamplers with their predicted kernels replaced by their own phase-mean
kernels (the mean of the kernels each upsampler predicted, per sub-pixel
phase (p % s, q % s) and group, over a set of images).

The swap keeps everything else of the trained model, including any
geometric offset its kernels learned, so the drop in a metric is what
content adaptation contributes to that model; :class:`StaticCARAFE
<carafe_lab.upsamplers.StaticCARAFE>` is the twin trained from the start.

Works on any module with ``predict_kernels(x) -> (N, G*k*k, s*H, s*W)``,
``up_kernel``, ``up_group`` and ``scale_factor`` (:class:`carafe.CARAFEPack`
and the zoo's CARAFE): the instance's ``predict_kernels`` is shadowed for the
duration of a ``with`` block and restored afterwards.
"""

from contextlib import contextmanager

import torch
from torch import Tensor

from carafe.modules import CARAFEPack

from .upsamplers import tile_phase_kernels


def carafe_modules(model) -> list:
    """The content-predicting CARAFE upsamplers of model, in module order."""
    return [m for m in model.modules() if isinstance(m, CARAFEPack)]


def phase_sums(masks: Tensor, scale: int):
    """(sum over the batch and the pixels of each phase, (G*k*k, s, s) float64;
    the number of pixels per phase) of masks (N, G*k*k, s*H, s*W)."""
    N, C, Ho, Wo = masks.shape
    if Ho % scale or Wo % scale:
        raise ValueError(f"masks: output size {Ho}x{Wo} is not a multiple of scale={scale}")
    H, W = Ho // scale, Wo // scale
    sums = masks.detach().double().view(N, C, H, scale, W, scale).sum(dim=(0, 2, 4))
    return sums, N * H * W


@contextmanager
def recording_phase_means(modules):
    """Within the block, every forward of a module in modules adds its
    predicted kernels to a per-phase sum. Yields a callable that returns the
    phase means so far: a list (one per module) of (G, k*k, s, s) tensors,
    each kernel summing to one over its taps when the normaliser does."""
    sums = [None] * len(modules)
    counts = [0] * len(modules)

    def recorder(i, module, original):
        def predict(x):
            masks = original(x)
            s, n = phase_sums(masks, module.scale_factor)
            sums[i] = s if sums[i] is None else sums[i] + s
            counts[i] += n
            return masks

        return predict

    originals = [m.__dict__.get("predict_kernels") for m in modules]
    for i, m in enumerate(modules):
        m.predict_kernels = recorder(i, m, m.predict_kernels)

    def means():
        if any(c == 0 for c in counts):
            raise ValueError("recording_phase_means: a module never ran inside the block")
        return [
            (s / c).float().view(m.up_group, m.up_kernel**2, m.scale_factor, m.scale_factor)
            for s, c, m in zip(sums, counts, modules)
        ]

    try:
        yield means
    finally:
        _restore(modules, originals)


@contextmanager
def swapped_kernels(modules, phase_kernels):
    """Within the block, each module in modules reassembles with the fixed
    per-phase kernels phase_kernels[i] (G, k*k, s, s) tiled over its output
    grid, whatever its input (see :func:`carafe_lab.upsamplers.tile_phase_kernels`)."""
    if len(modules) != len(phase_kernels):
        raise ValueError(
            f"phase_kernels: expected one per module ({len(modules)}), got {len(phase_kernels)}"
        )
    for m, k in zip(modules, phase_kernels):
        expected = (m.up_group, m.up_kernel**2, m.scale_factor, m.scale_factor)
        if tuple(k.shape) != expected:
            raise ValueError(
                f"phase_kernels: expected shape {expected} for {type(m).__name__}, "
                f"got {tuple(k.shape)}"
            )
    originals = [m.__dict__.get("predict_kernels") for m in modules]
    for m, k in zip(modules, phase_kernels):

        def predict(x, k=k):
            return tile_phase_kernels(
                k.to(device=x.device, dtype=x.dtype), x.shape[0], x.shape[-2], x.shape[-1]
            )

        m.predict_kernels = predict
    try:
        yield
    finally:
        _restore(modules, originals)


def _restore(modules, originals):
    for m, original in zip(modules, originals):
        if original is None:
            m.__dict__.pop("predict_kernels", None)
        else:
            m.predict_kernels = original


def phase_means_of(model, batches, forward=None):
    """The phase-mean kernels of model's CARAFE upsamplers over batches (an
    iterable of model inputs): a list of (G, k*k, s, s), one per module of
    :func:`carafe_modules`. forward(model, batch) runs one batch (default
    model(batch)); the model is put in eval mode and run without gradients."""
    modules = carafe_modules(model)
    if not modules:
        raise ValueError("model: no CARAFE upsampler (carafe.CARAFEPack) to take kernels from")
    was_training = model.training
    model.eval()
    try:
        with recording_phase_means(modules) as means, torch.no_grad():
            for batch in batches:
                forward(model, batch) if forward else model(batch)
            return means()
    finally:
        model.train(was_training)


__all__ = [
    "carafe_modules",
    "phase_sums",
    "recording_phase_means",
    "swapped_kernels",
    "phase_means_of",
]
