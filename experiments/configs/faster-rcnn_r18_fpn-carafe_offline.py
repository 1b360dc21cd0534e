# Faster R-CNN, ResNet-18 (random init), FPN with CARAFE (ours), offline shapes dataset.
_base_ = [
    "./_base_/offline_shapes.py",
    "./_base_/offline_schedule.py",
    "./_base_/faster-rcnn_r18_fpn-carafe.py",
]
model = dict(roi_head=dict(bbox_head=dict(num_classes=4)))
train_pipeline = [
    dict(type="LoadImageFromFile"),
    dict(type="LoadAnnotations", with_bbox=True),
    dict(type="Resize", scale={{_base_.image_scale}}, keep_ratio=True),
    dict(type="RandomFlip", prob=0.5),
    dict(type="PackDetInputs"),
]
test_pipeline = [
    dict(type="LoadImageFromFile"),
    dict(type="Resize", scale={{_base_.image_scale}}, keep_ratio=True),
    dict(type="LoadAnnotations", with_bbox=True),
    dict(
        type="PackDetInputs",
        meta_keys=("img_id", "img_path", "ori_shape", "img_shape", "scale_factor"),
    ),
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(metric="bbox")
test_evaluator = val_evaluator
