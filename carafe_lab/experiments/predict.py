"""Detections of a finished run, for looking at: load the run's model, predict
on images, draw boxes (predictions and ground truth) with matplotlib."""

import contextlib
import logging
from pathlib import Path

import numpy as np

from .quiet import LogWriter, filter_known_warnings

log = logging.getLogger(__name__)


def load_detector(run_dir, device="cpu", trusted_checkpoint=None):
    """The model of a run folder written by the launcher: its config
    (:func:`carafe_lab.experiments.compact.rebuild`) and the checkpoint
    named in last_checkpoint, loaded as weights only (see
    carafe_lab.experiments.checkpoints; trusted_checkpoint opts one file out).
    Nothing in run_dir is written; what mmengine prints while loading goes
    to this module's logger."""
    from carafe.mmcv_ext import install

    filter_known_warnings()
    install()  # before mmdet.apis imports mmcv.ops (mmcv-lite; see carafe.mmcv_ext)
    from mmdet.apis import init_detector

    import carafe.mmdet  # noqa: F401

    from .checkpoints import check_readable, trusting

    run_dir = Path(run_dir)
    pointer = run_dir / "last_checkpoint"
    if not pointer.exists():
        raise FileNotFoundError(
            f"run_dir: {run_dir} has no last_checkpoint (runs committed to "
            "the repository keep logs only; train one first)"
        )
    from mmengine.config import Config

    from .compact import dump_of, rebuild

    dump = dump_of(run_dir)  # else the group's config with the run's overrides
    config = str(dump) if dump is not None else Config(rebuild(run_dir))
    checkpoint = pointer.read_text().strip()
    # mmengine's checkpoint loader print()s the path it loads
    with trusting(trusted_checkpoint), contextlib.redirect_stdout(LogWriter(log)):
        check_readable(checkpoint)
        return init_detector(config, checkpoint, device=device)


def predict(model, image_paths, score_thr=0.3, top_k=None):
    """[{"boxes": (K, 4) xyxy, "scores": (K,), "labels": (K,)}] per image,
    numpy, highest score first: the detections scoring at least score_thr,
    at most top_k of them (None: all). With score_thr=0 and top_k=5, each
    image's 5 highest-scoring boxes whatever their score (of those the
    model outputs: its test_cfg has a score threshold of its own)."""
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise ValueError(f"top_k: expected None or a positive int, got {top_k!r}")
    from mmdet.apis import inference_detector

    out = []
    for path in image_paths:
        inst = inference_detector(model, str(path)).pred_instances
        order = inst.scores.argsort(descending=True)
        order = order[inst.scores[order] >= score_thr][:top_k]
        out.append(
            {
                "boxes": inst.bboxes[order].cpu().numpy(),
                "scores": inst.scores[order].cpu().numpy(),
                "labels": inst.labels[order].cpu().numpy(),
            }
        )
    return out


def ground_truth(coco_json, file_name):
    """(boxes (K, 4) xyxy, labels (K,) 0-based) of one image of a COCO file."""
    import json

    coco = json.loads(Path(coco_json).read_text())
    image_id = next(im["id"] for im in coco["images"] if im["file_name"] == file_name)
    cat_index = {c["id"]: i for i, c in enumerate(coco["categories"])}
    anns = [a for a in coco["annotations"] if a["image_id"] == image_id]
    boxes = np.array(
        [
            [a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]]
            for a in anns
        ],
        dtype=float,
    ).reshape(-1, 4)
    return boxes, np.array([cat_index[a["category_id"]] for a in anns], dtype=int)


def draw(ax, image, detections, classes, gt_boxes=None):
    """Image (H, W, 3) uint8 RGB with ground truth (dashed white) and
    detections (coloured by class, with score) on a matplotlib axis."""
    from matplotlib.patches import Rectangle

    ax.imshow(image)
    for box in [] if gt_boxes is None else gt_boxes:
        ax.add_patch(
            Rectangle(
                box[:2], box[2] - box[0], box[3] - box[1], fill=False, ls="--", lw=1, color="white"
            )
        )
    for box, score, label in zip(detections["boxes"], detections["scores"], detections["labels"]):
        color = f"C{int(label)}"
        ax.add_patch(
            Rectangle(box[:2], box[2] - box[0], box[3] - box[1], fill=False, lw=1.5, color=color)
        )
        # the label above the box, or inside it at the image's top edge
        # (above, it would cover the axis title)
        top = box[1] < 0.08 * image.shape[0]
        ax.text(
            box[0],
            box[1] + (1 if top else -2),
            f"{classes[int(label)]} {score:.2f}",
            color=color,
            fontsize=7,
            va="top" if top else "bottom",
            backgroundcolor=(0, 0, 0, 0.4),
            clip_on=True,
        )
    ax.set_xticks([])
    ax.set_yticks([])
    return ax
