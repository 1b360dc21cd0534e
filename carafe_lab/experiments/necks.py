"""The neck of the ablation study's det task: mmdet's FPN_CARAFE layout with
every upsampler one of the zoo's (carafe_lab.upsamplers). Registered in
mmdet's MODELS as ``CARAFEZooFPN``::

    neck=dict(type='CARAFEZooFPN', ..., upsample_cfg=dict(type='zoo', name='dysample'))

(the launcher imports this module; from mmdet's own tools add
``carafe_lab.experiments.necks`` to the config's custom_imports)."""

import torch.nn.functional as F
from mmdet.registry import MODELS

from carafe.mmdet import UPSAMPLE_ALIASES, CARAFEOpFPN

from ..upsamplers import UPSAMPLERS, build_upsampler, needs_skip

#: The upsample ``type`` of this neck.
ZOO_TYPE = "zoo"
#: The upsample type the lab's configs of carafe 0.2 named our op with.
UPSAMPLE_ALIASES.add("carafe_lab")


@MODELS.register_module()
class CARAFEZooFPN(CARAFEOpFPN):
    """``CARAFEOpFPN`` whose upsamplers are ``build_upsampler(name,
    out_channels, 2, **options)`` for ``upsample_cfg=dict(type='zoo',
    name=name, **options)``; all other arguments as mmdet's ``FPN_CARAFE``.

    Upsamplers that take an encoder feature (FADE, SAPA) get, in the
    top-down path, the lateral of the finer level the upsampled coarser one
    is added to (the backbone feature at the output resolution, projected
    to out_channels), as FADE and SAPA sit in FPN in their papers."""

    def __init__(self, *args, upsample_cfg=None, **kwargs):
        options = dict(upsample_cfg or {})
        if options.pop("type", None) != ZOO_TYPE or "name" not in options:
            raise ValueError(
                f"upsample_cfg: expected dict(type='zoo', name=<one of "
                f"{sorted(UPSAMPLERS)}>, **options), got {upsample_cfg!r}"
            )
        name = options.pop("name")
        # mmdet builds the layout with nearest upsampling; each upsampler is replaced below.
        super().__init__(*args, upsample_cfg=dict(type="nearest"), **kwargs)
        for i in range(len(self.upsample_modules)):
            self.upsample_modules[i] = build_upsampler(name, self.out_channels, 2, **options)
        self.upsample = ZOO_TYPE
        # Their own initialisation (e.g. spatial attention and GUM start as
        # nearest), to restore after FPN_CARAFE's xavier init of every conv.
        self._zoo_init = [
            {k: v.clone() for k, v in m.state_dict().items()} for m in self.upsample_modules
        ]

    def init_weights(self):
        super().init_weights()
        for m, state in zip(self.upsample_modules, self._zoo_init):
            m.load_state_dict(state)

    def forward(self, inputs):
        """``FPN_CARAFE.forward``; with upsamplers that take an encoder feature,
        each top-down step passes them the finer level's lateral."""
        if not needs_skip(self.upsample_modules[0]):
            return super().forward(inputs)
        if len(inputs) != len(self.in_channels):
            raise ValueError(
                f"inputs: expected {len(self.in_channels)} feature maps (in_channels="
                f"{self.in_channels}), got {len(inputs)}"
            )
        laterals = []
        for i, lateral_conv in enumerate(self.lateral_convs):
            # FPN_CARAFE's extra levels are lateral convs of the level below
            if i <= self.backbone_end_level - self.start_level:
                source = inputs[min(i + self.start_level, len(inputs) - 1)]
            else:
                source = laterals[-1]
            laterals.append(lateral_conv(source))
        for i in range(len(laterals) - 1, 0, -1):
            coarse, fine = laterals[i], laterals[i - 1]
            skip = _fit(fine, 2 * coarse.shape[-2], 2 * coarse.shape[-1])
            laterals[i - 1] = self.tensor_add(fine, self.upsample_modules[i - 1](coarse, skip))
        return tuple(conv(lateral) for conv, lateral in zip(self.fpn_convs, laterals))


def _fit(feature, height, width):
    """feature (N, C, H, W) as (N, C, height, width): zero-padded at the
    bottom and right, or cropped there. An odd level's coarser neighbour
    upsamples to one row or column more than it has; tensor_add crops the
    sum back, so the padding never reaches the output."""
    return F.pad(feature, (0, width - feature.shape[-1], 0, height - feature.shape[-2]))
