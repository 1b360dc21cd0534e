"""mmdet's CocoDataset over the offline shapes, generating them at its
data_root on first use, whichever entry point builds it: our launcher,
mmdetection's tools/train.py or `mim train mmdet CONFIG` (the offline
configs import this module through custom_imports)."""

from carafe.mmcv_ext import install

# mmdet.datasets imports mmcv.ops: on mmcv-lite its compiled ops come from
# carafe.mmcv_ext, which must be in place first (with full mmcv, a no-op)
install()

from mmdet.datasets import CocoDataset  # noqa: E402
from mmdet.registry import DATASETS  # noqa: E402


@DATASETS.register_module()
class CarafeOfflineCocoDataset(CocoDataset):
    """CocoDataset(**kwargs) whose files are written first when missing.

    offline_data: the generator's parameters (carafe_lab.experiments.data
    DEFAULT_PARAMS; a `root` entry is ignored: data_root decides), as the
    offline base config declares them. Data this generator did not write are
    never written over (ensure_offline_coco refuses)."""

    def __init__(self, *args, offline_data=None, **kwargs):
        from .data import ensure_offline_coco

        root = kwargs.get("data_root")
        if not root:
            raise ValueError(
                "CarafeOfflineCocoDataset: data_root is required (the folder the "
                "offline dataset is generated in)"
            )
        params = {k: v for k, v in dict(offline_data or {}).items() if k != "root"}
        ensure_offline_coco(root, **params)
        super().__init__(*args, **kwargs)
