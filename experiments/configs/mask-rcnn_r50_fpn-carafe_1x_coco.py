# The paper's Mask R-CNN R50-FPN + CARAFE (FPN and mask head), 1x COCO
# (mmdet's config), with our op; mmdet checkpoints load unchanged.
_base_ = "mmdet::carafe/mask-rcnn_r50_fpn-carafe_1x_coco.py"
custom_imports = dict(imports=["carafe.mmdet"], allow_failed_imports=False)
model = dict(
    neck=dict(type="CARAFEOpFPN", upsample_cfg=dict(type="carafe_op")),
    roi_head=dict(mask_head=dict(type="CARAFEOpMaskHead", upsample_cfg=dict(type="carafe_op"))),
)
