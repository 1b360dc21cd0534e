"""Published numbers for the ablation tables, as data, each with its source
(transcribed from ../shared/published-numbers.md, where every number was read
in the source named; none is typed from memory).

The CARAFE paper's own ablation tables (C_m, k_encoder x k_up, normaliser,
the upsampler comparison with its AP breakdown) could not be read here, so
those studies have no published column at all rather than a column of
"not verified". The upsampler comparison has published COCO numbers from
the SAPA and DySample authors' repositories (Faster R-CNN R50-FPN, 1x).
Our parameter and FLOP counts are computed, not copied (see
carafe_lab.upsamplers), and CARAFE's match the paper's text: 74,148 parameters
and ~199K FLOPs per pixel at C=256, s=2.
"""

from ..published import DYSAMPLE, SAPA

#: What the published column reports.
COLUMN = "published: Faster R-CNN R50-FPN 1x COCO box AP"

# study -> variant label -> (box AP, source)
PUBLISHED = {
    "upsamplers": {
        "nearest": (37.4, SAPA),
        "deconv": (37.3, SAPA),
        "pixel_shuffle": (37.5, SAPA),
        "carafe": (38.6, SAPA),
        "dysample": (38.6, DYSAMPLE),
    },
}
# Stated in the paper's abstract / Sec. 3.
PAPER_TEXT = {"carafe_flops_per_pixel_c256_s2": 199_000, "carafe_gain_faster_rcnn_box_ap": 1.2}
SOURCE = (
    "Faster R-CNN R50-FPN 1x COCO box AP from "
    + SAPA
    + " and "
    + DYSAMPLE
    + "; see ../shared/published-numbers.md"
)


#: The task the published numbers were measured on (detection): no other
#: task's table carries the column.
TASK = "det"


def has_column(study, task):
    """Whether the study's table on task has a published column: the study
    has a published number, and the task is the one they were measured on."""
    return task == TASK and bool(PUBLISHED.get(study))


def paper_cell(study, label):
    """The published box AP of a variant, or "-" where none was published
    for it (or none could be read)."""
    entry = PUBLISHED.get(study, {}).get(label)
    return "-" if entry is None else f"{entry[0]:.1f}"


def sources(study):
    """The distinct sources of a study's published column, in order."""
    seen = []
    for _, src in PUBLISHED.get(study, {}).values():
        if src not in seen:
            seen.append(src)
    return seen
