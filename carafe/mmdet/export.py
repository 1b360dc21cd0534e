"""ONNX export of an mmdet detector whose FPN uses our CARAFE (CARAFEOpFPN).

:class:`RawDetector` is the part of a two-stage detector that is a pure
tensor function: the data preprocessor's normalisation, backbone, neck and
RPN head, up to their raw outputs. What follows in mmdet (proposal decoding
and NMS, RoIAlign of mmcv's compiled ops, the RoI head, box decoding) stays
in PyTorch/mmdet; mmcv's RoIAlign has no exportable form.

    from carafe.mmdet.export import RawDetector, export_detector
    export_detector(detector, torch.zeros(2, 3, 128, 128), "faster_rcnn_raw.onnx")
"""

import torch
from torch import nn


class RawDetector(nn.Module):
    """image (N, 3, H, W) float, BGR 0-255 as mmdet's loading pipeline reads
    it, H and W multiples of the preprocessor's pad_size_divisor ->
    (P_2 .. P_top of the neck, each (N, C, H/stride, W/stride); then the RPN
    head's class scores per level (N, A, h, w) and box deltas per level
    (N, 4A, h, w)): the tensors mmdet's model.extract_feat and rpn_head
    return for the same image after its data_preprocessor."""

    def __init__(self, detector):
        super().__init__()
        pre = detector.data_preprocessor
        self.detector = detector
        self.register_buffer("mean", pre.mean.detach().clone().view(1, -1, 1, 1))
        self.register_buffer("std", pre.std.detach().clone().view(1, -1, 1, 1))
        self.bgr_to_rgb = bool(getattr(pre, "_channel_conversion", False))
        self.levels = None

    def forward(self, image):
        if self.bgr_to_rgb:
            image = image.flip(1)
        x = (image - self.mean) / self.std
        features = self.detector.extract_feat(x)
        scores, deltas = self.detector.rpn_head(features)
        self.levels = len(features)
        return (*features, *scores, *deltas)


def output_names(levels):
    return (
        [f"fpn_p{i + 2}" for i in range(levels)]
        + [f"rpn_cls_p{i + 2}" for i in range(levels)]
        + [f"rpn_bbox_p{i + 2}" for i in range(levels)]
    )


def export_detector(detector, example, path=None, **kwargs):
    """Export RawDetector(detector) (put in eval mode) with example images
    (N, 3, H, W), N >= 2 (torch.export specialises a batch of 1); batch and
    image size stay dynamic. Returns the
    ONNXProgram (see carafe.export.export_onnx)."""
    from ..export import export_onnx

    raw = RawDetector(detector).eval()
    with torch.no_grad():
        raw(example)
    return export_onnx(
        raw,
        (example,),
        path,
        input_names=["image"],
        output_names=output_names(raw.levels),
        **kwargs,
    )
