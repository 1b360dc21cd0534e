# Baseline: the same neck with nearest upsampling (mmdet's FPN-equivalent).
_base_ = "./faster-rcnn_r50_fpn-carafe_1x_coco.py"
model = dict(neck=dict(upsample_cfg=dict(_delete_=True, type="nearest")))
