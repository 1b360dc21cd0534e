# Offline model changes shared by Faster and Mask R-CNN, as a variable that
# ./faster-rcnn_r18_fpn-carafe.py and ./mask-rcnn_r18_fpn-carafe.py merge into
# mmdet's models (two bases may not both define `model`): a ResNet-18 trained
# from random initialisation (no pretrained weights can be downloaded here),
# all stages and BN statistics trained; the paper's CARAFE FPN neck (ours).
# Scaled to 128 px images: a 128-channel FPN, anchors and the RoI level
# assignment a quarter of COCO's (objects are 12-85 px, not 32-512), and
# proposals and sampled RoIs for 2-6 objects per image, not COCO's ~7 of up
# to 100; the heads themselves are mmdet's.
# carafe.mmdet: our CARAFE neck and heads; offline_dataset: the offline shapes'
# dataset type (./offline_shapes.py), which generates itself on first use
custom_imports = dict(
    imports=["carafe.mmdet", "carafe_lab.experiments.offline_dataset"], allow_failed_imports=False
)
fpn_channels = 128
offline_r18_carafe = dict(
    data_preprocessor=dict(pad_size_divisor=64),
    backbone=dict(depth=18, frozen_stages=-1, norm_eval=False, init_cfg=None),
    neck=dict(
        _delete_=True,
        type="CARAFEOpFPN",
        in_channels=[64, 128, 256, 512],
        out_channels=fpn_channels,
        num_outs=5,
        start_level=0,
        end_level=-1,
        norm_cfg=None,
        act_cfg=None,
        order=("conv", "norm", "act"),
        upsample_cfg=dict(
            type="carafe_op",
            up_kernel=5,
            up_group=1,
            encoder_kernel=3,
            encoder_dilation=1,
            compressed_channels=64,
        ),
    ),
    rpn_head=dict(
        in_channels=fpn_channels,
        feat_channels=fpn_channels,
        # anchors 16-256 px over P2-P6 (COCO's scale 8: 32-512)
        anchor_generator=dict(scales=[4]),
    ),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=fpn_channels, finest_scale=14),
        bbox_head=dict(in_channels=fpn_channels, fc_out_channels=512),
    ),
    train_cfg=dict(
        rpn_proposal=dict(nms_pre=500, max_per_img=100), rcnn=dict(sampler=dict(num=128))
    ),
    test_cfg=dict(rpn=dict(nms_pre=300, max_per_img=100)),
)
