# Offline model changes shared by Faster and Mask R-CNN, as a variable that
# ./faster-rcnn_r18_fpn-carafe.py and ./mask-rcnn_r18_fpn-carafe.py merge into
# mmdet's models (two bases may not both define `model`): a ResNet-18 trained
# from random initialisation (no pretrained weights can be downloaded here),
# all stages and BN statistics trained; the paper's CARAFE FPN neck (ours).
custom_imports = dict(imports=['carafe.mmdet'], allow_failed_imports=False)
offline_r18_carafe = dict(
    data_preprocessor=dict(pad_size_divisor=64),
    backbone=dict(depth=18, frozen_stages=-1, norm_eval=False, init_cfg=None),
    neck=dict(
        _delete_=True,
        type='CARAFELabFPN',
        in_channels=[64, 128, 256, 512],
        out_channels=256,
        num_outs=5,
        start_level=0,
        end_level=-1,
        norm_cfg=None,
        act_cfg=None,
        order=('conv', 'norm', 'act'),
        upsample_cfg=dict(
            type='carafe_lab',
            up_kernel=5,
            up_group=1,
            encoder_kernel=3,
            encoder_dilation=1,
            compressed_channels=64)),
    # Few objects per image (2-6): fewer proposals and sampled RoIs than on
    # COCO, which keeps a CPU iteration short; the heads themselves are mmdet's.
    train_cfg=dict(
        rpn_proposal=dict(nms_pre=1000, max_per_img=300),
        rcnn=dict(sampler=dict(num=128))),
    test_cfg=dict(rpn=dict(nms_pre=300, max_per_img=300)))
