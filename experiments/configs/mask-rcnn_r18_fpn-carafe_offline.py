# Mask R-CNN, ResNet-18 (random init), CARAFE (ours) in the FPN and in the
# mask head, offline shapes dataset.
_base_ = [
    "./_base_/offline_shapes.py",
    "./_base_/offline_schedule.py",
    "./_base_/mask-rcnn_r18_fpn-carafe.py",
]
model = dict(
    roi_head=dict(
        bbox_head=dict(num_classes=4),
        mask_roi_extractor=dict(out_channels={{_base_.fpn_channels}}, finest_scale=14),
        mask_head=dict(
            type="CARAFEOpMaskHead",
            num_classes=4,
            in_channels={{_base_.fpn_channels}},
            conv_out_channels={{_base_.fpn_channels}},
            upsample_cfg=dict(
                type="carafe_op",
                scale_factor=2,
                up_kernel=5,
                up_group=1,
                encoder_kernel=3,
                encoder_dilation=1,
                compressed_channels=64,
            ),
        ),
    )
)
