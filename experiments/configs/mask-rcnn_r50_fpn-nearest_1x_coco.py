# Baseline: nearest upsampling in the same FPN neck, mmdet's default
# deconvolution in the mask head.
_base_ = "./mask-rcnn_r50_fpn-carafe_1x_coco.py"
model = dict(
    neck=dict(upsample_cfg=dict(_delete_=True, type="nearest")),
    roi_head=dict(mask_head=dict(upsample_cfg=dict(_delete_=True, type="deconv", scale_factor=2))),
)
