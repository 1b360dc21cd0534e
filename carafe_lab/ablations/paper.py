"""Published numbers for the ablation tables, as data, each with its source
(transcribed from ../shared/published-numbers.md, where every number was read
in the source named; none is typed from memory).

A study's table gets a published column only on the task the numbers were
measured on, so no number stands beside a metric it was not measured in:

- ``det``: the upsampler comparison's Faster R-CNN R50-FPN 1x COCO box AP,
  from the SAPA and DySample authors' repositories;
- ``ins``: the CARAFE paper's Mask R-CNN R50-FPN 1x COCO mask AP, baseline
  and "FPN + mask head with CARAFE" (the ins task's carafe variant puts
  CARAFE in both), as chensnathan/CARAFE_CUDA's README quotes the paper. The
  paper's baseline has nearest upsampling in the FPN and mmdet's
  deconvolution in the mask head; it stands on the ``nearest`` row (the
  study's baseline), and the note under the table says so;
- ``inpaint``: the inpainting gain the CARAFE paper's abstract states
  (+1.1 dB), on CARAFE's row of the upsampler comparison; the paper's
  per-upsampler inpainting table could not be read.

The CARAFE paper's own ablation tables (C_m, k_encoder x k_up, normaliser,
the upsampler comparison with its AP breakdown) could not be read here, so
those studies have no published column at all rather than a column of
"not verified". Our parameter and FLOP counts are computed, not copied (see
carafe_lab.upsamplers), and CARAFE's match the paper's text: 74,148 parameters
and ~199K FLOPs per pixel at C=256, s=2.
"""

from dataclasses import dataclass

from ..published import CARAFE_ABSTRACT, DYSAMPLE, PAPER_VIA, SAPA

# Stated in the paper's abstract / Sec. 3.
PAPER_TEXT = {
    "carafe_flops_per_pixel_c256_s2": 199_000,
    "carafe_gain_faster_rcnn_box_ap": 1.2,
    "carafe_gain_inpainting_db": 1.1,
}

#: CARAFE's gain over nearest on each of the paper's tasks, as its abstract
#: states it (see ../shared/published-numbers.md): task -> (gain, what it is).
#: sr is not one of the paper's tasks; ins is the Mask R-CNN mask AP.
PAPER_GAINS = {
    "det": (1.2, "+1.2% box AP (detection)"),
    "ins": (1.3, "+1.3% mask AP (instance segmentation)"),
    "seg": (1.8, "+1.8% mIoU (semantic segmentation; +0.018 as the fraction shown here)"),
    "inpaint": (PAPER_TEXT["carafe_gain_inpainting_db"], "+1.1 dB PSNR (inpainting)"),
}


@dataclass(frozen=True)
class Column:
    """A task's published column: header, the note under the table (what
    the numbers are, beside ours), {study: {variant label: (value, source)}},
    a cell's format and the results' ``published_source``."""

    header: str
    note: str
    numbers: dict
    cell: str
    source: str


COLUMNS = {
    "det": Column(
        header="published: Faster R-CNN R50-FPN 1x COCO box AP",
        note="not ours; COCO, R50-FPN, measured on detection only",
        numbers={
            "upsamplers": {
                "nearest": (37.4, SAPA),
                "deconv": (37.3, SAPA),
                "pixel_shuffle": (37.5, SAPA),
                "carafe": (38.6, SAPA),
                "dysample": (38.6, DYSAMPLE),
                "fade": (38.5, SAPA),
                # the README's SAPA-B, the base module the zoo's "sapa" is
                "sapa": (37.8, SAPA),
            },
        },
        cell="{:.1f}",
        source=(
            "Faster R-CNN R50-FPN 1x COCO box AP from "
            + SAPA
            + " and "
            + DYSAMPLE
            + "; see ../shared/published-numbers.md"
        ),
    ),
    "ins": Column(
        header="published: Mask R-CNN R50-FPN 1x COCO mask AP",
        note=(
            "not ours; COCO, R50-FPN; on the nearest row the paper's baseline, with "
            "nearest upsampling in the FPN and a deconvolution in the mask head; on the "
            "carafe row CARAFE in both"
        ),
        numbers={"upsamplers": {"nearest": (34.2, PAPER_VIA), "carafe": (35.7, PAPER_VIA)}},
        cell="{:.1f}",
        source=(
            "Mask R-CNN R50-FPN 1x COCO mask AP (baseline; FPN + mask head with CARAFE) "
            "from the " + PAPER_VIA + "; see ../shared/published-numbers.md"
        ),
    ),
    "inpaint": Column(
        header="published: CARAFE's inpainting gain (PSNR, dB)",
        note=(
            "not ours; the PSNR gain of CARAFE the paper's abstract states for "
            "inpainting, in the paper's network, data and holes, not a PSNR on this task"
        ),
        numbers={
            "upsamplers": {"carafe": (PAPER_TEXT["carafe_gain_inpainting_db"], CARAFE_ABSTRACT)}
        },
        cell="{:+.1f} (gain)",
        source=(
            "the inpainting gain (PSNR, dB) from "
            + CARAFE_ABSTRACT
            + "; see ../shared/published-numbers.md"
        ),
    ),
}

#: The published numbers by task: {task: {study: {label: (value, source)}}}.
PUBLISHED = {task: column.numbers for task, column in COLUMNS.items()}


def has_column(study, task):
    """Whether the study's table on task has a published column: the task is
    one the numbers were measured on, and the study has numbers there."""
    return task in COLUMNS and bool(COLUMNS[task].numbers.get(study))


def column(task):
    """The task's :class:`Column`; an error naming the tasks that have one."""
    if task not in COLUMNS:
        raise ValueError(f"task: published numbers exist for {sorted(COLUMNS)}, got {task!r}")
    return COLUMNS[task]


def source(study, task):
    """The results' ``published_source`` of the study on task, or None when
    its table has no published column."""
    return COLUMNS[task].source if has_column(study, task) else None


def paper_cell(study, label, task):
    """A variant's published number on task as its cell shows it, or "-"
    where none was published for it (or none could be read)."""
    entry = COLUMNS[task].numbers.get(study, {}).get(label) if task in COLUMNS else None
    return "-" if entry is None else COLUMNS[task].cell.format(entry[0])


def sources(study, task):
    """The distinct sources of a study's published column on task, in order."""
    seen = []
    for _, src in COLUMNS[task].numbers.get(study, {}).values() if task in COLUMNS else ():
        if src not in seen:
            seen.append(src)
    return seen
