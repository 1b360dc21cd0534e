"""mmdetection 3 plugin: our CARAFE op in mmdet's FPN and mask head.

Load it from a config (never imported by ``import carafe``)::

    custom_imports = dict(imports=['carafe.mmdet'], allow_failed_imports=False)

It registers, under names that cannot clash with mmcv's own ``carafe``
(which ``import mmcv.ops`` registers):

- ``CARAFEOpFPN`` (mmdet MODELS): mmdet's ``FPN_CARAFE`` (same layers, the P6
  conv joining the top-down path included) whose CARAFE upsamplers are
  ours: ``upsample_cfg=dict(type='carafe_op', up_kernel=5, ...)``. The other
  upsample types ('nearest', 'bilinear', 'deconv', 'pixel_shuffle') behave as
  in ``FPN_CARAFE``, so baselines use the same neck.
- ``CARAFEOpMaskHead`` (mmdet MODELS): mmdet's ``FCNMaskHead`` with
  ``upsample_cfg=dict(type='carafe_op', scale_factor=2, ...)``.
- ``CARAFEConverted`` (mmdet MODELS): any detector with its ``nn.Upsample``
  layers converted by :func:`carafe.convert_upsamplers`, e.g. YOLOX's PAFPN::

      model = dict(type='CARAFEConverted', model=<the detector's model dict>,
                   example_input_shape=(2, 3, 256, 256), up_kernel=5)

- ``CARAFEOpPack`` (mmengine MODELS, so also mmcv's ``build_upsample_layer``):
  :class:`carafe.CARAFEPack`.

The names of carafe 0.2 (``CARAFELabFPN``, ``CARAFELabMaskHead``,
``CARAFELabPack``) are registered too, so configs and checkpoints written
then still build.

State dicts are key-for-key those of ``FPN_CARAFE`` / ``FCNMaskHead`` with
mmcv's ``CARAFEPack``, so mmdet CARAFE checkpoints load unchanged.

Importing it first calls :func:`carafe.mmcv_ext.install`: with mmcv-lite
(no compiled ``mmcv._ext``) mmcv's ops then come from ``carafe.mmcv_ext``;
with full mmcv nothing changes.
"""

from ..mmcv_ext import install as _install_mmcv_ext

# On mmcv-lite, mmcv.ops needs the compiled ops carafe.mmcv_ext provides;
# with full mmcv this changes nothing. Before the first mmcv.ops import.
_install_mmcv_ext()

from mmcv.ops.carafe import CARAFEPack as _MMCVCARAFEPack  # noqa: E402
from mmdet.models.necks import FPN_CARAFE  # noqa: E402
from mmdet.models.roi_heads.mask_heads import FCNMaskHead  # noqa: E402
from mmdet.registry import MODELS  # noqa: E402
from mmengine.registry import MODELS as MMENGINE_MODELS  # noqa: E402

from ..convert import convert_upsamplers  # noqa: E402
from ..modules import CARAFEPack  # noqa: E402

#: The upsample ``type`` that selects our op in the neck and mask head.
UPSAMPLE_TYPE = "carafe_op"
#: Other upsample types that select our op (names earlier releases wrote
#: into configs; a package that wrote such configs adds its name here).
UPSAMPLE_ALIASES: set = set()

MMENGINE_MODELS.register_module(name="CARAFEOpPack", module=CARAFEPack)
MMENGINE_MODELS.register_module(name="CARAFELabPack", module=CARAFEPack)


def _ours_like(module: _MMCVCARAFEPack) -> CARAFEPack:
    return CARAFEPack(
        module.channels,
        module.scale_factor,
        up_kernel=module.up_kernel,
        up_group=module.up_group,
        encoder_kernel=module.encoder_kernel,
        encoder_dilation=module.encoder_dilation,
        compressed_channels=module.compressed_channels,
    )


#: The upsample types mmdet's FPN_CARAFE and FCNMaskHead build themselves.
MMDET_TYPES = ("nearest", "bilinear", "deconv", "pixel_shuffle", "carafe")


def _split_type(upsample_cfg):
    """(cfg mmdet accepts, whether ours was asked for). mmdet's FPN_CARAFE
    and FCNMaskHead accept only their own list of upsample types and build
    the layer themselves, with per-type arguments; so ours is built by
    mmdet's code as mmcv's 'carafe' (the layer layout is then mmdet's by
    construction) and swapped for ours afterwards."""
    cfg = dict(upsample_cfg) if upsample_cfg is not None else None
    kind = None if cfg is None else cfg.get("type")
    ours = kind == UPSAMPLE_TYPE or kind in UPSAMPLE_ALIASES
    if kind is not None and not ours and kind not in MMDET_TYPES:
        known = [UPSAMPLE_TYPE, *sorted(UPSAMPLE_ALIASES), *MMDET_TYPES]
        raise ValueError(f"upsample_cfg: type must be one of {known}, got {kind!r}")
    if ours:
        cfg["type"] = "carafe"
    return cfg, ours


@MODELS.register_module(name="CARAFELabFPN")
@MODELS.register_module()
class CARAFEOpFPN(FPN_CARAFE):
    """``FPN_CARAFE`` with :class:`carafe.CARAFEPack` upsamplers (type
    'carafe_op'); all other arguments as mmdet's ``FPN_CARAFE``."""

    def __init__(
        self,
        *args,
        upsample_cfg=dict(  # noqa: B006  (mmdet's signature style; never mutated)
            type=UPSAMPLE_TYPE, up_kernel=5, up_group=1, encoder_kernel=3, encoder_dilation=1
        ),
        **kwargs,
    ):
        cfg, ours = _split_type(upsample_cfg)
        super().__init__(*args, upsample_cfg=cfg, **kwargs)
        if ours:
            for i, m in enumerate(self.upsample_modules):
                if isinstance(m, _MMCVCARAFEPack):
                    self.upsample_modules[i] = _ours_like(m)
            self.upsample = UPSAMPLE_TYPE

    def init_weights(self):
        # FPN_CARAFE: xavier on every conv, then CARAFEPack's own init -- for
        # mmcv's class only, so redo it for ours.
        super().init_weights()
        for m in self.modules():
            if isinstance(m, CARAFEPack):
                m.init_weights()


@MODELS.register_module(name="CARAFELabMaskHead")
@MODELS.register_module()
class CARAFEOpMaskHead(FCNMaskHead):
    """``FCNMaskHead`` whose upsampler can be :class:`carafe.CARAFEPack`
    (``upsample_cfg=dict(type='carafe_op', scale_factor=2, ...)``)."""

    def __init__(
        self,
        *args,
        upsample_cfg=dict(type="deconv", scale_factor=2),  # noqa: B006  (as mmdet's; not mutated)
        **kwargs,
    ):
        cfg, ours = _split_type(upsample_cfg)
        super().__init__(*args, upsample_cfg=cfg, **kwargs)
        if ours:
            self.upsample = _ours_like(self.upsample)
            self.upsample_method = UPSAMPLE_TYPE

    def init_weights(self):
        super().init_weights()
        if isinstance(self.upsample, CARAFEPack):
            self.upsample.init_weights()


#: carafe 0.2's class names (the registry knows both).
CARAFELabFPN, CARAFELabMaskHead = CARAFEOpFPN, CARAFEOpMaskHead


def build_carafe_converted(model, example_input_shape=(2, 3, 256, 256), **options):
    """mmdet MODELS builder ``CARAFEConverted``: builds the detector `model`
    (a model config dict), then replaces its integer-factor ``nn.Upsample``
    layers by CARAFE with :func:`carafe.convert_upsamplers` (options: its
    ``up_kernel``, ``compressed_channels``, ...). A builder function, not a
    wrapper module, so that the runner gets the detector itself: its
    data_preprocessor, state_dict keys and hooks are the detector's.

    The channels come from one forward of the detector in ``mode='tensor'``
    on a zero batch of `example_input_shape` (N, 3, H, W): use an N >= 2 and
    H, W divisible by the backbone's largest stride. The report is kept as
    the returned detector's ``carafe_conversion`` and logged.
    """
    from mmengine.logging import print_log

    if not isinstance(model, dict) or "type" not in model:
        raise TypeError(
            "CARAFEConverted: model must be a detector's model config dict with a 'type', "
            f"got {type(model).__name__}"
        )
    shape = tuple(example_input_shape)
    if len(shape) != 4 or not all(isinstance(n, int) and n > 0 for n in shape):
        raise ValueError(
            "CARAFEConverted: example_input_shape must be 4 positive ints (N, 3, H, W), "
            f"got {example_input_shape!r}"
        )
    import torch

    detector = MODELS.build(model)
    inputs = {"inputs": torch.zeros(shape), "mode": "tensor"}
    detector, report = convert_upsamplers(detector, inputs, **options)
    if not report.replaced:
        raise ValueError(
            f"CARAFEConverted: {model['type']} has no upsampling layer that converts:\n{report}"
        )
    detector.carafe_conversion = report
    print_log(f"CARAFEConverted: {report}", logger="current")
    return detector


MODELS.register_module(name="CARAFEConverted", module=build_carafe_converted)

__all__ = [
    "CARAFEOpFPN",
    "CARAFEOpMaskHead",
    "UPSAMPLE_TYPE",
    "UPSAMPLE_ALIASES",
    "build_carafe_converted",
]
