"""The `det` task: Faster R-CNN (ResNet-18 FPN, random init) on the offline
shapes dataset through the detection launcher (mmengine's Runner), with every
upsampler of the FPN neck replaced by the one under test
(``CARAFEZooFPN(upsample_cfg=dict(type='zoo', name=...))``, experiments/necks.py). Box AP on the
held-out images, as mmdet's COCO metric reports it.

The paper's setting (R-50, COCO, 1x, GPUs) is
``experiments/configs/faster-rcnn_r50_fpn-carafe_1x_coco.py``; pass it as
``config=`` (and its data) to run the same study there. mmengine chooses the
device itself (CUDA when torch sees one).
"""

import json

from .. import paths
from ..environment import intra_op_threads
from .task import Task

# mmdet's COCO metric reports AP as fractions; tables show percent, as papers do
TASK = Task(
    name="det",
    metrics=("bbox_mAP", "bbox_mAP_50"),
    axis={"bbox_mAP": "box AP (fraction)", "bbox_mAP_50": "box AP50 (fraction)"},
    percent=frozenset({"bbox_mAP", "bbox_mAP_50"}),
    keeps_run_folders=True,
    # the offline FPN: 128 channels, four upsamplers (P6->P5 .. P3->P2)
    upsampler_channels=lambda setting: (FPN_CHANNELS,) * 4,
)
FPN_CHANNELS = 128  # experiments/configs/_base_/offline_r18_fpn_carafe.py (a test checks it)
CONFIG_NAME = "faster-rcnn_r18_fpn-carafe_offline.py"
SETTINGS = {
    # epochs over the 2,000 training images (250 iterations each at batch 8):
    # the committed offline runs' schedule (~13 min a run on a 2-core CPU)
    "default": dict(max_epochs=3, train_images=None),
    # one epoch over the first 64 images (8 iterations): the plumbing only
    "quick": dict(max_epochs=1, train_images=64),
}
BATCH = 8  # the offline config's training batch


def cfg_options(upsampler, options, seed, max_epochs, steps=None, train_images=None):
    """mmengine cfg_options that put the upsampler in the neck and set the
    schedule; train_images limits training to the first images; steps
    (tests) trains on the first BATCH*steps images for one epoch."""
    out = {
        "model.neck.type": "CARAFEZooFPN",
        "model.neck.upsample_cfg": dict(_delete_=True, type="zoo", name=upsampler, **options),
        "randomness.seed": seed,
        "train_cfg.max_epochs": max_epochs,
        "train_cfg.val_interval": max_epochs,  # evaluate once, at the end
        "default_hooks.checkpoint.interval": max_epochs,
        "default_hooks.checkpoint.max_keep_ckpts": 1,
    }
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
):
    """Train and evaluate once; returns {"bbox_mAP", "bbox_mAP_50", ...,
    "train_seconds", "threads", "work_dir"}. scale must be 2 (the FPN's
    step). Trains with TRAIN_THREADS intra-op threads whatever the caller's
    setting (run studies with --jobs 2 on two cores)."""
    if scale != 2:
        raise ValueError(f"scale: the FPN neck upsamples by 2 per level; got {scale}")
    from ..experiments.launcher import train

    config = config if config is not None else paths.configs() / CONFIG_NAME
    cfg = dict(SETTINGS[setting])
    options_ = cfg_options(upsampler, options, seed, cfg["max_epochs"], steps, cfg["train_images"])
    with intra_op_threads(TRAIN_THREADS):
        run_dir = train(config, work_dir=work_dir, cfg_options=options_)
    if work_dir is not None:  # a study's run: its dump becomes overrides of the study's config
        from ..experiments.compact import record_or_warn

        record_or_warn(run_dir)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    summary = json.loads((run_dir / "run.json").read_text())
    result = {k.split("/", 1)[1]: v for k, v in metrics.items() if k.startswith("coco/bbox")}
    result["train_seconds"] = summary.get("wall_seconds", float("nan"))
    result["threads"] = TRAIN_THREADS
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


def evaluate(evaluation, trained, setting="default", device="cpu"):
    """An evaluation of a trained run (the result :func:`run` returned):
    "phase_mean" tests its checkpoint with each CARAFE upsampler's kernels
    replaced by its own phase-mean kernels over the first PHASE_MEAN_IMAGES
    training images (CarafePhaseMeanSwapHook), in a new folder beside the
    run. Returns the box metrics, "work_dir" (the test's folder) and "of"
    (the run)."""
    from pathlib import Path

    from ..experiments.folders import new_folder
    from ..experiments.launcher import resume_checkpoint, test

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
    out = new_folder(run_dir.parent / f"{run_dir.name}_{evaluation}")
    with intra_op_threads(TRAIN_THREADS):
        metrics = test(
            run_dir / CONFIG_NAME,
            checkpoint,
            work_dir=out,
            extra_hooks=[
                dict(
                    type="CarafePhaseMeanSwapHook",
                    num_images=PHASE_MEAN_IMAGES,
                    score_images=KERNEL_SCORE_IMAGES,
                )
            ],
        )
    result = {k.split("/", 1)[1]: v for k, v in metrics.items() if k.startswith("coco/bbox")}
    result["work_dir"] = str(out)
    result["of"] = str(run_dir)
    report = out / "kernel_report.json"
    if report.is_file():  # the trained model's own kernels, scored before the swap
        result["trained_kernels"] = json.loads(report.read_text())["levels"]
    return result
