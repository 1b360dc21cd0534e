# Baseline of faster-rcnn_r18_fpn-carafe_offline.py: the same neck with
# nearest-neighbour upsampling, everything else identical.
_base_ = "./faster-rcnn_r18_fpn-carafe_offline.py"
model = dict(neck=dict(upsample_cfg=dict(_delete_=True, type="nearest")))
