"""CARAFE in a model that was not written for it, in one call.

:func:`convert_upsamplers` works as ``torch.nn.SyncBatchNorm.convert_sync_batchnorm``
does: it walks a model and replaces every ``nn.Upsample`` (and its subclasses
``nn.UpsamplingNearest2d``, ``nn.UpsamplingBilinear2d``) that upsamples 4-D
maps by an integer factor with a :class:`carafe.CARAFEPack` of the right
channels. Example::

    import carafe
    model, report = carafe.convert_upsamplers(model, torch.randn(2, 3, 256, 256))
    print(report)

What it cannot swap, it leaves alone and says why in the report (and in one
warning):

- an ``nn.Upsample`` given an output ``size``, a non-integer or anisotropic
  ``scale_factor``, or a factor below 2;
- a layer whose input channels are unknown: not called by the example inputs,
  or, without example inputs, not after a layer whose output channels are
  known;
- **functional calls** (``F.interpolate`` in a ``forward``) are code, not
  modules, so they cannot be swapped. With example inputs they are found and
  listed, with the caller's file and line, so that you can replace them by a
  module yourself.
"""

from __future__ import annotations

import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from .modules import CARAFEPack

#: The options passed on to every CARAFEPack (its constructor's, less the
#: channels and scale factor the conversion finds).
OPTIONS = ("up_kernel", "up_group", "encoder_kernel", "encoder_dilation", "compressed_channels")

#: Attributes nn.Upsample (and nn.Module) set on an instance themselves; any
#: other instance attribute was put there by a framework (ultralytics routes
#: its layers by ``m.f`` and ``m.i``) and is copied onto the replacement.
_OWN_ATTRIBUTES = frozenset(
    {"training", "name", "size", "scale_factor", "mode", "align_corners", "recompute_scale_factor"}
)

#: Layers through which the channel count passes unchanged (for the static
#: rule without example inputs).
_CHANNEL_PRESERVING = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.PReLU,
    nn.SiLU,
    nn.GELU,
    nn.Sigmoid,
    nn.Tanh,
    nn.Hardswish,
    nn.Mish,
    nn.ELU,
    nn.Identity,
    nn.Dropout,
    nn.Dropout2d,
    nn.Upsample,
)


@dataclass(frozen=True)
class Replaced:
    """One replaced upsampling layer.

    name: its qualified name (``aliases``: other names the same module object
    has in the model); channels: the input channel counts it is called with
    (one CARAFEPack each); params_added: parameters of the replacement.
    """

    name: str
    aliases: tuple
    channels: tuple
    scale_factor: int
    mode: str
    params_added: int
    channels_from: str


@dataclass(frozen=True)
class LeftAlone:
    """An upsampling layer kept as it was, and why."""

    name: str
    reason: str


@dataclass(frozen=True)
class FunctionalCall:
    """An ``F.interpolate`` call outside any ``nn.Upsample`` (not swappable).

    location: ``file:line in function`` of the caller; calls: how many times
    the example forward made it; input_shape: the first call's input shape.
    """

    location: str
    calls: int
    input_shape: tuple
    scale: str
    mode: str


@dataclass
class ConversionReport:
    """What :func:`convert_upsamplers` did."""

    replaced: list = field(default_factory=list)
    left_alone: list = field(default_factory=list)
    functional: list = field(default_factory=list)

    @property
    def params_added(self) -> int:
        return sum(r.params_added for r in self.replaced)

    def __str__(self) -> str:
        lines = [
            f"replaced {len(self.replaced)} upsampling layer(s), "
            f"{self.params_added:,} parameters added"
        ]
        for r in self.replaced:
            aka = f" (also {', '.join(r.aliases)})" if r.aliases else ""
            chans = ", ".join(str(c) for c in r.channels)
            lines.append(
                f"  {r.name}{aka}: {r.mode} x{r.scale_factor} -> CARAFEPack, channels {chans} "
                f"(from {r.channels_from}), +{r.params_added:,} parameters"
            )
        if self.left_alone:
            lines.append(f"left alone {len(self.left_alone)}:")
            lines += [f"  {e.name}: {e.reason}" for e in self.left_alone]
        if self.functional:
            lines.append(f"functional F.interpolate calls (not swappable) {len(self.functional)}:")
            lines += [
                f"  {f.location}: {f.calls} call(s), input {list(f.input_shape)}, "
                f"{f.scale}, mode {f.mode}"
                for f in self.functional
            ]
        return "\n".join(lines)


class ChannelDispatchCARAFE(nn.Module):
    """The replacement of one upsampling module called with several channel
    counts (mmdet's YOLOX PAFPN calls its single ``upsample`` at two levels):
    one CARAFEPack per channel count, each with its own weights, chosen by the
    input's channels.

    forward(x (N, C, H, W)) -> (N, C, s*H, s*W), C one of ``channels``.
    """

    def __init__(self, packs: dict):
        super().__init__()
        self.packs = nn.ModuleDict({str(c): packs[c] for c in sorted(packs)})

    def init_weights(self) -> None:
        # mmengine's init_weights walks children that have this method; a
        # parent's init_cfg (YOLOX's PAFPN: Kaiming on every Conv2d) would
        # otherwise leave the packs without CARAFE's initialisation
        for pack in self.packs.values():
            assert isinstance(pack, CARAFEPack)
            pack.init_weights()

    @property
    def channels(self) -> tuple:
        return tuple(int(c) for c in self.packs)

    def forward(self, x: Tensor) -> Tensor:
        if not isinstance(x, Tensor) or x.dim() != 4 or str(x.shape[1]) not in self.packs:
            shape = list(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(
                f"ChannelDispatchCARAFE: x must be a 4-D tensor (N, C, H, W) with C one of "
                f"{list(self.channels)} (the channel counts it was converted for), got {shape}"
            )
        return self.packs[str(x.shape[1])](x)


def _integer_scale(module: nn.Upsample):
    """(scale factor, None) for a convertible layer, else (None, reason)."""
    if module.size is not None:
        return None, f"output size={module.size} fixed, not a scale factor"
    factor = module.scale_factor
    if isinstance(factor, (tuple, list)):
        if len(set(factor)) != 1:
            return None, f"anisotropic scale_factor={tuple(factor)}: CARAFE scales both axes alike"
        factor = factor[0]
    if factor is None or float(factor) != int(factor):
        return None, f"non-integer scale_factor={factor}"
    if int(factor) < 2:
        return None, f"scale_factor={factor} does not upsample"
    return int(factor), None


def _static_channels(model: nn.Module, name: str):
    """Channels from the layer before `name` in a plain nn.Sequential, where
    that layer's output channels are known; else None."""
    parent_name, _, attr = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    if type(parent) is not nn.Sequential:  # a subclass may route its layers otherwise
        return None
    names = list(parent._modules)
    for prev in reversed(names[: names.index(attr)]):
        layer = parent._modules[prev]
        if isinstance(layer, (nn.Conv2d, nn.ConvTranspose2d)):
            return layer.out_channels
        if isinstance(layer, nn.BatchNorm2d):
            return layer.num_features
        if isinstance(layer, nn.GroupNorm):
            return layer.num_channels
        if not isinstance(layer, _CHANNEL_PRESERVING):
            return None
    return None


def _caller(stack) -> str:
    """The first frame outside torch and this module: where F.interpolate was called."""
    torch_dir = str(Path(torch.__file__).parent)
    for frame in reversed(stack[:-1]):
        if not frame.filename.startswith(torch_dir) and frame.filename != __file__:
            return f"{frame.filename}:{frame.lineno} in {frame.name}"
    return "unknown"


class _FunctionalSpy(TorchFunctionMode):
    """Records F.interpolate calls made outside an nn.Upsample's forward."""

    def __init__(self):
        super().__init__()
        self.depth = 0  # > 0 while an nn.Upsample runs
        self.calls: dict = {}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.interpolate and self.depth == 0:
            x = args[0] if args else kwargs.get("input")
            where = _caller(traceback.extract_stack())
            size, scale = kwargs.get("size"), kwargs.get("scale_factor")
            if len(args) > 1:
                size = args[1]
            if len(args) > 2:
                scale = args[2]
            if where in self.calls:
                self.calls[where][0] += 1
            else:
                self.calls[where] = [
                    1,
                    tuple(x.shape) if isinstance(x, Tensor) else (),
                    f"size={size}" if size is not None else f"scale_factor={scale}",
                    kwargs.get("mode", args[3] if len(args) > 3 else "nearest"),
                ]
        return func(*args, **kwargs)


def _trace(model: nn.Module, upsamplers: list, example_inputs):
    """Run model on example_inputs (eval mode, no grad; every module's mode
    restored after) and record each upsampler's 4-D inputs:
    {id: {channels: (dtype, device)}}, {id: reason}, the functional calls."""
    seen: dict = {id(m): {} for m in upsamplers}
    other_dims: dict = {}
    spy = _FunctionalSpy()

    def before(module, args):
        spy.depth += 1
        x = args[0] if args else None
        if id(module) in seen and isinstance(x, Tensor):
            if x.dim() == 4:
                seen[id(module)].setdefault(int(x.shape[1]), (x.dtype, x.device))
            else:
                other_dims[id(module)] = x.dim()

    def after(module, args, output):
        spy.depth -= 1

    all_upsample = {id(m): m for m in model.modules() if isinstance(m, nn.Upsample)}
    handles = []
    for m in all_upsample.values():
        handles.append(m.register_forward_pre_hook(before))
        handles.append(m.register_forward_hook(after))
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        with torch.no_grad(), spy:
            if isinstance(example_inputs, dict):
                model(**example_inputs)
            elif isinstance(example_inputs, (tuple, list)):
                model(*example_inputs)
            else:
                model(example_inputs)
    finally:
        for h in handles:
            h.remove()
        for module, training in modes:
            module.training = training
    return seen, other_dims, spy.calls


def _placement(model: nn.Module, module: nn.Module, traced):
    """(dtype, device) for the replacement: those of its traced input, else of
    the model's first parameter or buffer, else the defaults."""
    if traced:
        return next(iter(traced.values()))
    for tensor in list(model.parameters()) + list(model.buffers()):
        if tensor.is_floating_point():
            return tensor.dtype, tensor.device
    return torch.get_default_dtype(), torch.device("cpu")


def convert_upsamplers(model: nn.Module, example_inputs=None, **options):
    """Replace the model's integer-factor ``nn.Upsample`` layers by CARAFE.

    Every ``nn.Upsample`` / ``nn.UpsamplingNearest2d`` /
    ``nn.UpsamplingBilinear2d`` with an integer ``scale_factor`` >= 2 (equal
    on both axes) becomes a :class:`carafe.CARAFEPack` of its input's
    channels, in place; the model is also returned (a new module where
    `model` itself is such a layer). The replacement has the model's device
    and dtype (those of the layer's input when traced), the replaced layer's
    train/eval mode, and any attribute a framework set on the replaced layer
    (ultralytics routes its layers by ``m.f``, ``m.i``). A module object held
    under several names is replaced under all of them by one replacement; one
    called with several channel counts becomes a
    :class:`ChannelDispatchCARAFE`, one CARAFEPack (own weights) per count.

    Args:
        model: the network, an ``nn.Module``.
        example_inputs: what ``model`` is called with for one forward pass
            (a tensor, a tuple of positional arguments, or a dict of keyword
            arguments), e.g. a (N, 3, H, W) image batch. The pass runs in
            eval mode without gradients (so batch-norm statistics do not
            move) and finds each layer's input channels, and the
            ``F.interpolate`` calls that cannot be swapped. Without it,
            channels are known only for a layer that follows, in a plain
            ``nn.Sequential``, a conv or norm layer (through activations).
        **options: passed to every CARAFEPack: ``up_kernel`` (5),
            ``up_group`` (1), ``encoder_kernel`` (3), ``encoder_dilation``
            (1), ``compressed_channels`` (64).

    Returns:
        (model, report): the report (:class:`ConversionReport`) lists what was
        replaced, what was left alone and why, and the functional calls.
        Layers left alone or functional calls found also raise one
        ``UserWarning``. Functional ``F.interpolate`` calls are never
        swapped: they are code, not modules.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(
            f"convert_upsamplers: model must be an nn.Module, got {type(model).__name__}"
        )
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise TypeError(
            f"convert_upsamplers: unknown option(s) {unknown}; expected some of {list(OPTIONS)}"
        )
    if example_inputs is not None and not isinstance(example_inputs, (Tensor, tuple, list, dict)):
        raise TypeError(
            "convert_upsamplers: example_inputs must be a tensor, a tuple of positional "
            f"arguments or a dict of keyword arguments, got {type(example_inputs).__name__}"
        )

    # every name of every nn.Upsample object (one object may sit at several)
    names: dict = {}
    objects: dict = {}
    for name, m in model.named_modules(remove_duplicate=False):
        if isinstance(m, nn.Upsample):
            names.setdefault(id(m), []).append(name)
            objects[id(m)] = m

    report = ConversionReport()
    candidates = []
    for key, m in objects.items():
        factor, reason = _integer_scale(m)
        if reason:
            report.left_alone.append(LeftAlone(names[key][0] or "(the model)", reason))
        else:
            candidates.append((m, factor))

    traced, other_dims, calls = {}, {}, {}
    if example_inputs is not None:
        traced, other_dims, calls = _trace(model, [m for m, _ in candidates], example_inputs)
    report.functional = [FunctionalCall(w, *c) for w, c in calls.items()]

    replacements: dict = {}
    for m, factor in candidates:
        key, first = id(m), names[id(m)][0]
        label = first or "(the model)"
        if example_inputs is not None:
            if key in other_dims:
                report.left_alone.append(
                    LeftAlone(
                        label, f"input is {other_dims[key]}-D; CARAFE upsamples (N, C, H, W) maps"
                    )
                )
                continue
            channels, source = sorted(traced[key]), "example inputs"
            if not channels:
                report.left_alone.append(
                    LeftAlone(label, "not called when the model ran on example_inputs")
                )
                continue
        else:
            static = _static_channels(model, first) if len(names[key]) == 1 and first else None
            if static is None:
                report.left_alone.append(
                    LeftAlone(label, "input channels unknown without example_inputs: pass them")
                )
                continue
            channels, source = [static], "the layer before it"
        dtype, device = _placement(model, m, traced.get(key))
        try:
            packs = {c: CARAFEPack(c, factor, **options) for c in channels}
        except ValueError as e:
            raise ValueError(f"convert_upsamplers: {label} (channels {channels}): {e}") from e
        new = packs[channels[0]] if len(packs) == 1 else ChannelDispatchCARAFE(packs)
        new.to(device=device, dtype=dtype).train(m.training)
        for attr, value in vars(m).items():
            if not attr.startswith("_") and attr not in _OWN_ATTRIBUTES:
                setattr(new, attr, value)
        replacements[key] = new
        report.replaced.append(
            Replaced(
                name=label,
                aliases=tuple(names[key][1:]),
                channels=tuple(channels),
                scale_factor=factor,
                mode=m.mode,
                params_added=sum(p.numel() for p in new.parameters()),
                channels_from=source,
            )
        )

    if id(model) in replacements:
        model = replacements[id(model)]
    else:
        for key, new in replacements.items():
            for name in names[key]:
                parent_name, _, attr = name.rpartition(".")
                parent = model.get_submodule(parent_name) if parent_name else model
                setattr(parent, attr, new)

    if report.left_alone or report.functional:
        warnings.warn(
            f"convert_upsamplers: {len(report.left_alone)} upsampling layer(s) left alone, "
            f"{len(report.functional)} functional F.interpolate call site(s) not swappable; "
            "see the report",
            stacklevel=2,
        )
    return model, report


__all__ = [
    "ChannelDispatchCARAFE",
    "ConversionReport",
    "FunctionalCall",
    "LeftAlone",
    "Replaced",
    "convert_upsamplers",
]
