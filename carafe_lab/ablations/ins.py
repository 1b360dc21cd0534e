"""The `ins` task: instance segmentation, the CARAFE paper's second task, as
a CPU proxy. Mask R-CNN (ResNet-18 FPN, random init) on the offline shapes
dataset through the detection launcher, trained and scored by the det
task's code (:func:`carafe_lab.ablations.det.run`), with the upsampler under test in
both places the paper puts CARAFE ("FPN + mask head with CARAFE"):

- every upsampler of the FPN neck (``CARAFEZooFPN``), as det;
- the mask head's 14x14 -> 28x28 upsampler (``CARAFEZooMaskHead``,
  carafe_lab/experiments/necks.py: mmdet's FCNMaskHead with the zoo's
  upsampler at the head's 128 channels).

Every zoo upsampler that takes no encoder feature goes in both (FADE and
SAPA need one, which a RoI's mask features lack: studies leave them out),
so each study's variants are the same module in both places: ``nearest`` is mmdet's mask head with
``upsample_cfg=dict(type='nearest', scale_factor=2)`` (the paper's baseline
head is a deconvolution: the ``deconv`` variant, with mmdet's ReLU after
it), ``carafe`` is the CARAFE pack (C_m 64, k_encoder 3, k_up 5, as the
paper's and experiments/configs/mask-rcnn_r18_fpn-carafe_offline.py's). An
unknown upsampler name is an error naming the zoo's.

Reports mask AP (``segm_mAP``, ``segm_mAP_50``: the first ranks the
variants) and box AP (``bbox_*``), as mmdet's COCO metric gives them, as
fractions (the tables show percent).

Not in the ``mechanism`` study: its phase-mean evaluation swaps the kernels
of the neck's CARAFE upsamplers only (CarafePhaseMeanSwapHook), not the mask
head's, so it would not remove CARAFE's content adaptation here.

The paper's setting (R-50, COCO, 1x, GPUs) is
``experiments/configs/mask-rcnn_r50_fpn-carafe_1x_coco.py``; pass it as
``config=`` (and its data) to run the same study there.
"""

from .. import paths
from . import det
from .task import Task

FPN_CHANNELS = 128  # experiments/configs/_base_/offline_r18_fpn_carafe.py
MASK_HEAD_CHANNELS = 128  # the mask head's conv_out_channels (fpn_channels in its config)

TASK = Task(
    name="ins",
    metrics=("segm_mAP", "segm_mAP_50"),
    axis={
        "segm_mAP": "mask AP (fraction)",
        "segm_mAP_50": "mask AP50 (fraction)",
        "bbox_mAP": "box AP (fraction)",
        "bbox_mAP_50": "box AP50 (fraction)",
    },
    percent=frozenset({"segm_mAP", "segm_mAP_50", "bbox_mAP", "bbox_mAP_50"}),
    keeps_run_folders=True,
    # the offline FPN's four upsamplers (P6->P5 .. P3->P2), then the mask head's
    upsampler_channels=lambda setting: (FPN_CHANNELS,) * 4 + (MASK_HEAD_CHANNELS,),
    # the mask head has no encoder feature for FADE / SAPA
    encoder_features=False,
)
CONFIG_NAME = "mask-rcnn_r18_fpn-carafe_offline.py"
#: det's offline settings (schedule, images) with the Mask R-CNN config; the
#: paper's COCO setting is det's only.
SETTINGS = {name: dict(det.SETTINGS[name], config=CONFIG_NAME) for name in ("default", "quick")}
#: The COCO metrics the task reports (mmdet's CocoMetric prefixes).
PREFIXES = ("segm", "bbox")


def mask_head_options(upsampler, options):
    """cfg_options that put the upsampler (zoo name and options) in the mask head."""
    return {
        "model.roi_head.mask_head.type": "CARAFEZooMaskHead",
        "model.roi_head.mask_head.upsample_cfg": dict(
            _delete_=True, type="zoo", name=upsampler, scale_factor=2, **options
        ),
    }


def run(
    upsampler,
    options,
    scale=2,
    seed=0,
    setting="default",
    device="cpu",
    steps=None,
    work_dir=None,
    config=None,
    cfg_options=None,
):
    """Train and evaluate once; returns {"segm_mAP", "segm_mAP_50", ...,
    "bbox_mAP", ..., "train_seconds", "threads", "work_dir"} (det.run with
    this task's config, metrics and mask head; cfg_options are applied
    last). The device is mmengine's choice."""
    from ..upsamplers import UPSAMPLERS

    if upsampler not in UPSAMPLERS:  # before a run folder is made
        raise ValueError(f"upsampler: expected one of {sorted(UPSAMPLERS)}, got {upsampler!r}")
    if setting not in SETTINGS:
        raise ValueError(f"setting: expected one of {sorted(SETTINGS)}, got {setting!r}")
    return det.run(
        upsampler,
        options,
        scale=scale,
        seed=seed,
        setting=setting,
        steps=steps,
        work_dir=work_dir,
        config=config if config is not None else paths.configs() / CONFIG_NAME,
        cfg_options={**mask_head_options(upsampler, options), **(cfg_options or {})},
        prefixes=PREFIXES,
    )
