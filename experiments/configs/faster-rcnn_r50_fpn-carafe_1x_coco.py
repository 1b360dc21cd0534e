# The paper's Faster R-CNN R50-FPN + CARAFE, 1x COCO (mmdet's config), with
# our op: same layers and state_dict keys as mmdet's FPN_CARAFE, so mmdet's
# released checkpoints load unchanged. ImageNet-pretrained backbone
# (torchvision://resnet50) as in mmdet; COCO under data/coco/.
_base_ = "mmdet::carafe/faster-rcnn_r50_fpn-carafe_1x_coco.py"
custom_imports = dict(imports=["carafe.mmdet"], allow_failed_imports=False)
model = dict(neck=dict(type="CARAFEOpFPN", upsample_cfg=dict(type="carafe_op")))
