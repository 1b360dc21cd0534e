"""The backbone of the ``downsamplers`` study's det task: mmdet's ResNet with
the stride-2 step of each strided stage (ResNet-18/50: layer2, layer3,
layer4) done by one of the lab's downsamplers (carafe_lab.downsamplers).
Registered in mmdet's MODELS as ``ZooDownResNet``::

    backbone=dict(type='ZooDownResNet', depth=18, ...,
                  downsample_cfg=dict(name='carafe_pp'))

Where: CARAFE++ (Wang et al., TPAMI 2021) pairs its downsampler with the
backbone ("feature downsampling ... e.g. residual networks", its abstract)
and its upsampler with the FPN's top-down path; the stride-2 steps of the
ResNet stages are the backbone's downsampling inside the residual blocks.
The stem (7x7 conv and 3x3 max pool, both stride 2) and the FPN's extra
level (P6, a stride-2 conv of C5) are left as they are.

How: the first block of a strided stage becomes ``block(downsampler(x))``
with every stride-2 conv of the block (its 3x3 conv and its shortcut's 1x1
projection) set to stride 1, so both paths of the residual see the same
downsampled input, and the block itself is unchanged otherwise (its
state-dict keys move under ``.block``). The downsampler runs on the
stage's input channels (64, 128, 256 for ResNet-18).

The launcher imports this module; from mmdet's own tools add
``carafe_lab.experiments.backbones`` to the config's custom_imports.
"""

from mmdet.models.backbones import ResNet
from mmdet.registry import MODELS
from torch import nn

from ..downsamplers import DOWNSAMPLERS, build_downsampler


class DownsampledBlock(nn.Module):
    """``block(down(x))``: a residual block whose stride the downsampler took."""

    def __init__(self, down: nn.Module, block: nn.Module):
        super().__init__()
        self.down, self.block = down, block

    def forward(self, x):
        return self.block(self.down(x))

    def init_weights(self):
        # mmengine calls init_weights on children that have one: pass it on
        # to the block (its zero_init_residual override lives there)
        if hasattr(self.block, "init_weights"):
            self.block.init_weights()


def _unstride(block: nn.Module) -> int:
    """Set every stride-2 conv of block to stride 1; returns how many."""
    count = 0
    for m in block.modules():
        if isinstance(m, nn.Conv2d) and tuple(m.stride) != (1, 1):
            if tuple(m.stride) != (2, 2):
                raise ValueError(f"ZooDownResNet: expected stride 2 convs, found {m.stride}")
            m.stride = (1, 1)
            count += 1
        elif isinstance(m, (nn.AvgPool2d, nn.MaxPool2d)):
            raise ValueError("ZooDownResNet: avg_down=True is not supported")
    return count


@MODELS.register_module()
class ZooDownResNet(ResNet):
    """mmdet's ``ResNet`` (all its arguments) whose strided stages downsample
    with ``build_downsampler(name, in_channels, **options)`` for
    ``downsample_cfg=dict(name=name, **options)``; see the module docstring."""

    def __init__(self, *args, downsample_cfg=None, **kwargs):
        options = dict(downsample_cfg or {})
        name = options.pop("name", None)
        if name not in DOWNSAMPLERS:
            raise ValueError(
                f"downsample_cfg: expected dict(name=<one of {sorted(DOWNSAMPLERS)}>, "
                f"**options), got {downsample_cfg!r}"
            )
        super().__init__(*args, **kwargs)
        self.downsamplers = []  # plain list: the modules live in the blocks
        for stride, layer_name in zip(self.strides, self.res_layers):
            if stride == 1:
                continue
            layer = getattr(self, layer_name)
            first = layer[0]
            if _unstride(first) == 0:
                raise ValueError(f"ZooDownResNet: {layer_name} has no stride-2 conv")
            channels = first.conv1.in_channels
            down = build_downsampler(name, channels, **options)
            layer[0] = DownsampledBlock(down, first)
            self.downsamplers.append(down)
        # their own initialisation (CARAFE++'s encoder starts at std 0.001,
        # uniform kernels), to restore after ResNet's Kaiming init of every conv
        self._down_init = [
            {k: v.clone() for k, v in m.state_dict().items()} for m in self.downsamplers
        ]

    def init_weights(self):
        super().init_weights()
        for m, state in zip(self.downsamplers, self._down_init):
            m.load_state_dict(state)
