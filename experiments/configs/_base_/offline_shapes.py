# The offline shapes dataset (carafe_lab.experiments.data): COCO format, 4 classes,
# generated at data_root on first use (about 15 s) by CarafeOfflineCocoDataset,
# from any entry point (our launcher, mmdet's tools/train.py, mim train). 128x128 images, 2,000
# for training and 200 held out, objects of radius 6 px to a third of the
# image, on smooth (low-frequency, tinted photograph) backgrounds: the sizes
# and the budget at which a detector trained from scratch on a 2-core CPU in
# ~10 minutes learns the task (see docs/detection.md). Paths are relative
# to the directory the launcher runs in (the repository root).
# (registered by carafe_lab.experiments.offline_dataset, which the offline model
# base imports: two bases may not both define custom_imports)
dataset_type = "CarafeOfflineCocoDataset"
data_root = "data/offline_coco/"
# Must match carafe_lab.experiments.data.DEFAULT_PARAMS (tests check it).
offline_data = dict(
    root=data_root,
    num_train=2000,
    num_val=200,
    size=128,
    max_objects=6,
    min_radius=6,
    background="smooth",
    seed=0,
)
metainfo = dict(classes=("disk", "square", "triangle", "star"))
backend_args = None
image_scale = (128, 128)

train_pipeline = [
    dict(type="LoadImageFromFile", backend_args=backend_args),
    dict(type="LoadAnnotations", with_bbox=True, with_mask=True),
    dict(type="Resize", scale=image_scale, keep_ratio=True),
    dict(type="RandomFlip", prob=0.5),
    dict(type="PackDetInputs"),
]
test_pipeline = [
    dict(type="LoadImageFromFile", backend_args=backend_args),
    dict(type="Resize", scale=image_scale, keep_ratio=True),
    dict(type="LoadAnnotations", with_bbox=True, with_mask=True),
    dict(
        type="PackDetInputs",
        meta_keys=("img_id", "img_path", "ori_shape", "img_shape", "scale_factor"),
    ),
]
train_dataloader = dict(
    batch_size=8,
    num_workers=0,
    persistent_workers=False,
    sampler=dict(type="DefaultSampler", shuffle=True),
    batch_sampler=dict(type="AspectRatioBatchSampler"),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        metainfo=metainfo,
        ann_file="annotations/instances_train.json",
        offline_data=offline_data,
        data_prefix=dict(img="train/"),
        filter_cfg=dict(filter_empty_gt=True, min_size=0),
        pipeline=train_pipeline,
        backend_args=backend_args,
    ),
)
val_dataloader = dict(
    batch_size=8,
    num_workers=0,
    persistent_workers=False,
    drop_last=False,
    sampler=dict(type="DefaultSampler", shuffle=False),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        metainfo=metainfo,
        ann_file="annotations/instances_val.json",
        offline_data=offline_data,
        data_prefix=dict(img="val/"),
        test_mode=True,
        pipeline=test_pipeline,
        backend_args=backend_args,
    ),
)
test_dataloader = val_dataloader
val_evaluator = dict(
    type="CocoMetric",
    ann_file=data_root + "annotations/instances_val.json",
    metric=["bbox", "segm"],
    format_only=False,
    backend_args=backend_args,
)
test_evaluator = val_evaluator
