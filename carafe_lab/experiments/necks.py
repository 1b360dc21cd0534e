"""The neck of the ablation study's det and ins tasks, and the mask head of
ins: mmdet's FPN_CARAFE layout and FCNMaskHead with every upsampler one of
the zoo's (carafe_lab.upsamplers). Registered in mmdet's MODELS as
``CARAFEZooFPN`` and ``CARAFEZooMaskHead``::

    neck=dict(type='CARAFEZooFPN', ..., upsample_cfg=dict(type='zoo', name='dysample'))
    mask_head=dict(type='CARAFEZooMaskHead', ..., upsample_cfg=dict(type='zoo', name='carafe'))

(the launcher imports this module; from mmdet's own tools add
``carafe_lab.experiments.necks`` to the config's custom_imports)."""

import torch.nn.functional as F
from mmdet.models.roi_heads.mask_heads import FCNMaskHead
from mmdet.registry import MODELS

from carafe.mmdet import UPSAMPLE_ALIASES, CARAFEOpFPN

from ..upsamplers import UPSAMPLERS, build_upsampler, needs_skip

#: The upsample ``type`` of this neck.
ZOO_TYPE = "zoo"
#: The upsample type the lab's configs of carafe 0.2 named our op with.
UPSAMPLE_ALIASES.add("carafe_lab")


def _zoo_options(upsample_cfg, allowed=()):
    """(name, options) of ``dict(type='zoo', name=name, **options)``; keys in
    `allowed` are dropped from the options (mmdet's, e.g. scale_factor)."""
    options = dict(upsample_cfg or {})
    if options.pop("type", None) != ZOO_TYPE or "name" not in options:
        raise ValueError(
            f"upsample_cfg: expected dict(type='zoo', name=<one of "
            f"{sorted(UPSAMPLERS)}>, **options), got {upsample_cfg!r}"
        )
    for key in allowed:
        options.pop(key, None)
    return options.pop("name"), options


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
        name, options = _zoo_options(upsample_cfg)
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


@MODELS.register_module()
class CARAFEZooMaskHead(FCNMaskHead):
    """mmdet's ``FCNMaskHead`` whose upsampler (14x14 RoI features -> 28x28,
    after the four convs) is ``build_upsampler(name, conv_out_channels,
    scale_factor, **options)`` for ``upsample_cfg=dict(type='zoo',
    name=name, scale_factor=2, **options)``; all other arguments as
    mmdet's. The paper's "FPN + mask head with CARAFE" is this head with
    ``name='carafe'`` beside ``CARAFEZooFPN`` with the same name.

    As in mmdet's head, a ReLU follows the upsampler only when it is a
    deconvolution ('deconv'), so ``name='deconv'`` is mmdet's default mask
    head up to the deconvolution's initialisation (the zoo's own)."""

    def __init__(self, *args, upsample_cfg=None, **kwargs):
        name, options = _zoo_options(upsample_cfg, allowed=("scale_factor",))
        scale = dict(upsample_cfg).get("scale_factor", 2)
        # mmdet builds the layout with nearest upsampling (no parameters);
        # the upsampler is replaced below
        super().__init__(*args, upsample_cfg=dict(type="nearest", scale_factor=scale), **kwargs)
        if self.num_convs == 0:
            raise ValueError("num_convs: CARAFEZooMaskHead needs >= 1 conv before its upsampler")
        self.upsample = upsampler = build_upsampler(name, self.conv_out_channels, scale, **options)
        if needs_skip(upsampler):  # a RoI's mask features have no encoder feature to give
            raise ValueError(
                f"upsample_cfg: {name!r} needs an encoder feature, which the mask head "
                "lacks; use it in CARAFEZooFPN only"
            )
        self.upsample_method = "deconv" if name == "deconv" else ZOO_TYPE
        self.zoo_name = name
        self._zoo_init = {k: v.clone() for k, v in upsampler.state_dict().items()}

    def init_weights(self):
        # FCNMaskHead re-initialises an upsampler with a weight and a bias
        # (kaiming): restore the zoo's own initialisation afterwards.
        super().init_weights()
        self.upsample.load_state_dict(self._zoo_init)
