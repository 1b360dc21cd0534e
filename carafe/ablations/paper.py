"""The paper's numbers for each ablation table, as data, so that tables can
show them beside ours. Every entry names its source; an entry whose value
could not be checked against the paper in this repository is None with
verified=False, and tables print it as "not verified" rather than a number.

The paper's ablations (Wang et al., ICCV 2019, Sec. 4.4) are on Faster
R-CNN / COCO box AP; the upsampler comparison also gives FLOPs and
parameters. Our parameter and FLOP counts are computed, not copied (see
carafe.upsamplers), and CARAFE's match the paper's text: 74,148 parameters
and ~199K FLOPs per pixel at C=256, s=2.
"""

from .studies import STUDIES

SOURCE = "Wang et al., CARAFE, ICCV 2019 (arXiv 1905.02188), Sec. 4.4 ablation tables"

# study -> variant label -> {"box_ap": value or None, "verified": bool}
PAPER = {
    study: {label: {"box_ap": None, "verified": False} for label, _, _ in variants}
    for study, variants in STUDIES.items()
}
# Stated in the paper's text (abstract / Sec. 3), hence verified.
PAPER_TEXT = {"carafe_flops_per_pixel_c256_s2": 199_000, "carafe_gain_faster_rcnn_box_ap": 1.2}
# DySample is not in the CARAFE paper.
for _study in PAPER.values():
    if "dysample" in _study:
        _study["dysample"] = {"box_ap": None, "verified": True, "note": "not in the paper"}


def paper_cell(study, label):
    entry = PAPER.get(study, {}).get(label)
    if entry is None or entry.get("note"):
        return "-" if entry is None else entry["note"]
    if entry["box_ap"] is None:
        return "not verified"
    return f"{entry['box_ap']}" + ("" if entry["verified"] else " (unverified)")
