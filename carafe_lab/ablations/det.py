"""The `det` task: Faster R-CNN through the detection launcher (mmengine's
Runner), with every upsampler of the FPN neck replaced by the one under test
(``CARAFEZooFPN(upsample_cfg=dict(type='zoo', name=...))``,
experiments/necks.py). Box AP on the held-out images, as mmdet's COCO metric
reports it. A variant's option ``downsampler`` (the ``downsamplers`` study) also
puts that downsampler in the ResNet-18's three strided stages
(``ZooDownResNet``, experiments/backbones.py, where and why; offline
settings only).

Settings: "default" and "quick" train a ResNet-18 FPN from random init on the
offline shapes dataset (CPU); "coco" is the paper's setting, R-50 FPN
(ImageNet-pretrained) on COCO 2017 with mmdet's 1x schedule
(``experiments/configs/faster-rcnn_r50_fpn-carafe_1x_coco.py``), for GPUs,
one process per GPU under torchrun (``launcher="pytorch"``). mmengine
chooses the device itself (CUDA when torch sees one).
"""

import json
from pathlib import Path

from .. import paths
from ..downsamplers import split_options
from ..environment import intra_op_threads
from .task import Task

# mmdet's COCO metric reports AP as fractions; tables show percent, as papers do
TASK = Task(
    name="det",
    metrics=("bbox_mAP", "bbox_mAP_50"),
    axis={"bbox_mAP": "box AP (fraction)", "bbox_mAP_50": "box AP50 (fraction)"},
    percent=frozenset({"bbox_mAP", "bbox_mAP_50"}),
    keeps_run_folders=True,
    # four upsamplers (P6->P5 .. P3->P2) of the FPN's width
    upsampler_channels=lambda setting: (
        (COCO_FPN_CHANNELS if setting == "coco" else FPN_CHANNELS,) * 4
    ),
    # a variant's downsampler: the ResNet-18's three strided stages
    downsampler_channels=lambda setting: DOWNSAMPLER_CHANNELS,
)
FPN_CHANNELS = 128  # experiments/configs/_base_/offline_r18_fpn_carafe.py (a test checks it)
COCO_FPN_CHANNELS = 256  # mmdet's FPN_CARAFE config (out_channels)
#: The input channels of ResNet-18's strided stages (layer2..layer4), where a
#: variant's ``downsampler`` goes (carafe_lab.experiments.backbones; a test checks it).
DOWNSAMPLER_CHANNELS = (64, 128, 256)
CONFIG_NAME = "faster-rcnn_r18_fpn-carafe_offline.py"
COCO_CONFIG_NAME = "faster-rcnn_r50_fpn-carafe_1x_coco.py"
SETTINGS = {
    # epochs over the 2,000 training images (250 iterations each at batch 8):
    # the committed offline runs' schedule (~13 min a run on a 2-core CPU)
    "default": dict(config=CONFIG_NAME, max_epochs=3, train_images=None),
    # one epoch over the first 64 images (8 iterations): the plumbing only
    "quick": dict(config=CONFIG_NAME, max_epochs=1, train_images=64),
    # The paper's: the config's own schedule (mmdet's 1x: 12 epochs, SGD,
    # steps after epochs 8 and 11, evaluated each epoch), none of the
    # offline one; COCO 2017 from the data root (COCO_FILES).
    "coco": dict(config=COCO_CONFIG_NAME, max_epochs=None, train_images=None, data_root=True),
}
#: What the coco setting reads under its data root (mmdet's COCO layout).
COCO_FILES = dict(
    train_ann="annotations/instances_train2017.json",
    train_img="train2017/",
    val_ann="annotations/instances_val2017.json",
    val_img="val2017/",
)

# What one coco run costs, from published numbers (none is measured here):
#: mmdet's training speed of Faster R-CNN R-50-FPN 1x (the plain FPN), s/iter
#: on 8 V100 GPUs at 2 images each: mmdetection docs/MODEL_ZOO.md (commit 1779eaf),
#: "Comparison with Detectron2", "Training Speed".
MMDET_SECONDS_PER_ITER = 0.216
MMDET_GPUS = 8
#: mmdet's inference speed of the same model on one V100, images/s (same page,
#: "Inference Speed"); a run evaluates the 5,000 val2017 images each epoch.
MMDET_INFERENCE_FPS = 22.2
VAL_IMAGES = 5000
#: mmdet's 1x (12 epochs) "corresponds to slightly less iterations than
#: Detectron" (same page), whose 1x is 90,000 iterations of 16 images
#: (detectron2 configs/Base-RCNN-FPN.yaml, SOLVER.MAX_ITER): an upper bound.
ONE_X_ITERATIONS = 90_000
COST_SOURCE = (
    "mmdetection docs/MODEL_ZOO.md (commit 1779eaf, 'Comparison with Detectron2'): Faster R-CNN "
    "R-50-FPN 1x trains at 0.216 s/iter on 8 V100 GPUs (2 images each) and infers at "
    "22.2 images/s on one V100; at most 90,000 iterations (mmdet's 1x is 'slightly less "
    "iterations than Detectron', whose 1x is 90k: detectron2 configs/Base-RCNN-FPN.yaml "
    "at 3169651). "
    "Assumed: the upsamplers under test train at the plain FPN's speed (not measured)"
)
BATCH = 8  # the offline config's training batch


def cost(setting):
    """V100 GPU-hours of one run at setting, from published speeds (see
    COST_SOURCE): {"train_gpu_hours", "eval_gpu_hours" (one evaluation of
    val2017), "source"}, or None for the CPU settings."""
    if setting != "coco":
        return None
    return {
        "train_gpu_hours": MMDET_SECONDS_PER_ITER * ONE_X_ITERATIONS * MMDET_GPUS / 3600,
        "eval_gpu_hours": VAL_IMAGES / MMDET_INFERENCE_FPS / 3600,
        "evaluations_per_run": 12,  # mmdet's 1x evaluates after each of its 12 epochs
        "source": COST_SOURCE,
    }


def data_needed(setting):
    """What the setting's --data-root must hold, in words, or None when it
    reads none (the offline settings generate their data)."""
    if not SETTINGS[setting].get("data_root"):
        return None
    return "COCO 2017 as mmdet lays it out: " + ", ".join(COCO_FILES.values())


def check_data_root(setting, data_root):
    """data_root as a resolved Path (None for a setting that reads none);
    raises ValueError naming the argument when it is missing, not wanted or
    lacks a file the setting reads."""
    needed = data_needed(setting)
    if needed is None:
        if data_root is not None:
            raise ValueError(
                f"data_root: only the det task's 'coco' setting reads a data root; "
                f"setting {setting!r} generates the offline shapes, got {data_root!r}"
            )
        return None
    if data_root is None:
        raise ValueError(
            f"data_root: the det task's {setting!r} setting needs --data-root DIR ({needed})"
        )
    root = Path(data_root).expanduser().resolve()
    missing = [name for name in COCO_FILES.values() if not (root / name).exists()]
    if missing:
        raise ValueError(f"data_root: {root} lacks {', '.join(missing)}; expected {needed}")
    return root


def coco_cfg_options(upsampler, options, seed, data_root):
    """mmengine cfg_options that put the upsampler in the neck and read COCO
    from data_root (the config's own schedule is kept); the learning rate
    follows the total batch (mmdet's 0.02 is for 16 images: 8 GPUs x 2), as
    mmdet's --auto-scale-lr does, so that other GPU counts keep the recipe."""
    if split_options(options)[1] is not None:
        raise ValueError(
            "options: a downsampler goes in the offline ResNet-18 (ZooDownResNet); the "
            "coco setting's R-50 takes none"
        )
    root = str(Path(data_root)) + "/"
    out = {
        "model.neck.type": "CARAFEZooFPN",
        "model.neck.upsample_cfg": dict(_delete_=True, type="zoo", name=upsampler, **options),
        "randomness.seed": seed,
        "auto_scale_lr.enable": True,
        # one checkpoint (~330 MB) per run: enough to resume and to evaluate
        "default_hooks.checkpoint.max_keep_ckpts": 1,
        "train_dataloader.dataset.data_root": root,
        "train_dataloader.dataset.ann_file": COCO_FILES["train_ann"],
        "train_dataloader.dataset.data_prefix.img": COCO_FILES["train_img"],
    }
    for split in ("val", "test"):
        out[f"{split}_dataloader.dataset.data_root"] = root
        out[f"{split}_dataloader.dataset.ann_file"] = COCO_FILES["val_ann"]
        out[f"{split}_dataloader.dataset.data_prefix.img"] = COCO_FILES["val_img"]
        out[f"{split}_evaluator.ann_file"] = root + COCO_FILES["val_ann"]
    return out


def offline_cfg_options(upsampler, options, seed, max_epochs, steps=None, train_images=None):
    """mmengine cfg_options that put the upsampler in the neck (and an
    option ``downsampler`` in the backbone's strided stages, ZooDownResNet)
    and set the schedule; train_images limits training to the first images;
    steps (tests) trains on the first BATCH*steps images for one epoch."""
    options, down = split_options(options)
    out = {
        "model.neck.type": "CARAFEZooFPN",
        "model.neck.upsample_cfg": dict(_delete_=True, type="zoo", name=upsampler, **options),
        "randomness.seed": seed,
        "train_cfg.max_epochs": max_epochs,
        "train_cfg.val_interval": max_epochs,  # evaluate once, at the end
        "default_hooks.checkpoint.interval": max_epochs,
        "default_hooks.checkpoint.max_keep_ckpts": 1,
    }
    if down is not None:
        out["model.backbone.type"] = "ZooDownResNet"
        out["model.backbone.downsample_cfg"] = dict(name=down[0], **down[1])
    if train_images is not None:
        out["train_dataloader.dataset.indices"] = train_images
    if steps is not None:
        out["train_dataloader.dataset.indices"] = BATCH * steps
        # The metric still scores all val images of the annotation file, so
        # AP is low; steps is for tests that check the plumbing.
        out["val_dataloader.dataset.indices"] = 8
    return out


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
    data_root=None,
    cfg_options=None,
    launcher="none",
    prefixes=("bbox",),
):
    """Train and evaluate once; returns {"bbox_mAP", "bbox_mAP_50", ...,
    "train_seconds", "threads", "work_dir"} (on rank 0; None on the other
    ranks of a distributed run). scale must be 2 (the FPN's step).
    data_root: COCO for the "coco" setting (check_data_root). cfg_options:
    mmengine options applied last, over the setting's (e.g. a shorter
    schedule for a test). launcher: "pytorch" when started by torchrun: every
    rank trains this run together. A work_dir holding a checkpoint (an
    interrupted study) is resumed. The offline settings train with
    TRAIN_THREADS intra-op threads whatever the caller's setting (run studies
    with --jobs 2 on two cores). prefixes: the COCO metrics returned
    ("bbox"; the ins task adds "segm")."""
    if scale != 2:
        raise ValueError(f"scale: the FPN neck upsamples by 2 per level; got {scale}")
    import torch

    from ..experiments.launcher import _is_main_rank, train

    chosen = dict(SETTINGS[setting])
    config = config if config is not None else paths.configs() / chosen["config"]
    if chosen.get("data_root"):
        options_ = coco_cfg_options(upsampler, options, seed, check_data_root(setting, data_root))
        threads = torch.get_num_threads()  # GPU runs: torch's own choice
    else:
        check_data_root(setting, data_root)
        options_ = offline_cfg_options(
            upsampler, options, seed, chosen["max_epochs"], steps, chosen["train_images"]
        )
        threads = TRAIN_THREADS
    options_.update(cfg_options or {})
    resume = "auto" if work_dir is not None else False
    with intra_op_threads(threads):
        run_dir = train(
            config, work_dir=work_dir, cfg_options=options_, launcher=launcher, resume=resume
        )
    if not _is_main_rank():  # rank 0 wrote the run's records
        return None
    if work_dir is not None:  # a study's run: its dump becomes overrides of the study's config
        from ..experiments.compact import record_or_warn

        record_or_warn(run_dir)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    summary = json.loads((run_dir / "run.json").read_text())
    result = {
        k.split("/", 1)[1]: v
        for k, v in metrics.items()
        if any(k.startswith(f"coco/{p}_") for p in prefixes)
    }
    result["train_seconds"] = summary.get("wall_seconds", float("nan"))
    result["threads"] = threads
    result["work_dir"] = str(run_dir)
    return result


#: Intra-op threads of a training: torch's CPU kernels split their sums by
#: thread, so the same seed would take another path at another thread count;
#: one, as a study with --jobs 2 on two cores runs them.
TRAIN_THREADS = 1


#: The evaluations of a trained model that :func:`evaluate` knows.
EVALUATIONS = ("phase_mean",)
#: Training images the phase-mean kernels are averaged over.
PHASE_MEAN_IMAGES = 256
#: Held-out images the trained kernels are scored on (as the runs' own
#: CarafeKernelScoreHook does).
KERNEL_SCORE_IMAGES = 32


def evaluate(evaluation, trained, setting="default", device="cpu", launcher="none"):
    """An evaluation of a trained run (the result :func:`run` returned):
    "phase_mean" tests its checkpoint with each CARAFE upsampler's kernels
    replaced by its own phase-mean kernels over the first PHASE_MEAN_IMAGES
    training images (CarafePhaseMeanSwapHook), in a new folder beside the
    run. Returns the box metrics, "work_dir" (the test's folder) and "of"
    (the run), on rank 0 (None on the other ranks of a distributed run). The
    run's dumped config (its data root and options included) is tested."""
    from ..experiments.folders import new_folder
    from ..experiments.launcher import _agree, _is_main_rank, resume_checkpoint, test

    if evaluation not in EVALUATIONS:
        raise ValueError(f"evaluation: expected one of {EVALUATIONS}, got {evaluation!r}")
    run_dir = Path(trained["work_dir"])
    pointer = run_dir / "last_checkpoint"
    if not pointer.is_file():
        raise FileNotFoundError(
            f"trained: no checkpoint in {run_dir} (checkpoints are kept "
            "locally, not committed; retrain the variant)"
        )
    checkpoint = resume_checkpoint(run_dir, pointer.read_text().strip())
    out = _agree(launcher, {}, lambda: new_folder(run_dir.parent / f"{run_dir.name}_{evaluation}"))
    with intra_op_threads(TRAIN_THREADS):
        metrics = test(
            run_dir / SETTINGS[setting]["config"],
            checkpoint,
            work_dir=out,
            launcher=launcher,
            extra_hooks=[
                dict(
                    type="CarafePhaseMeanSwapHook",
                    num_images=PHASE_MEAN_IMAGES,
                    score_images=KERNEL_SCORE_IMAGES,
                )
            ],
        )
    if not _is_main_rank():
        return None
    result = {k.split("/", 1)[1]: v for k, v in metrics.items() if k.startswith("coco/bbox")}
    result["work_dir"] = str(out)
    result["of"] = str(run_dir)
    report = out / "kernel_report.json"
    if report.is_file():  # the trained model's own kernels, scored before the swap
        result["trained_kernels"] = json.loads(report.read_text())["levels"]
    return result
