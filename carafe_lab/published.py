"""The sources of the published numbers the tables quote (each number was
read in the source named, via ../shared/published-numbers.md; none is typed
from memory). The numbers sit beside the tables that show them:
ablations/paper.py (upsampler comparison, inpainting gain) and experiments/summarize.py
(detection)."""

SAPA = "tiny-smart/sapa README (commit a5acd52)"
CARAFE_ABSTRACT = "the CARAFE paper's abstract (Wang et al., ICCV 2019, arXiv 1905.02188)"
DYSAMPLE = "tiny-smart/dysample README (commit 81a1de5)"
MMDET = "open-mmlab/mmdetection configs/carafe README (v2 commit 96eea76; 3.x agrees)"
PAPER_VIA = "CARAFE paper, as quoted in chensnathan/CARAFE_CUDA README (commit 33d3d3a)"
