# mmdet's Mask R-CNN with the offline ResNet-18 + CARAFE FPN changes.
_base_ = ["mmdet::_base_/models/mask-rcnn_r50_fpn.py", "./offline_r18_fpn_carafe.py"]
model = {{_base_.offline_r18_carafe}}
