"""Our op reproduces the outputs and gradients of mmcv's CUDA CARAFE."""

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import devices

import carafe

DATA = Path(__file__).parent / "data" / "mmcv_carafe"
SHAPES = {
    "feat": (2, 64, 3, 3),
    "mask": (2, 100, 6, 6),
    "output": (2, 64, 6, 6),
    "feat_grad": (2, 64, 3, 3),
    "mask_grad": (2, 100, 6, 6),
}


def load(name):
    array = np.fromfile(DATA / f"carafe_{name}.bin", dtype=np.float32).reshape(SHAPES[name])
    return torch.from_numpy(array)


@pytest.mark.parametrize("device", devices())
def test_matches_mmcv_cuda(device):
    features = load("feat").to(device).requires_grad_()
    masks = load("mask").to(device).requires_grad_()
    out = carafe.carafe(features, masks, kernel_size=5, group_size=4, scale_factor=2)
    out.backward(torch.ones_like(out))
    # "an exact implementation agrees to about 1e-6" (the data's README).
    torch.testing.assert_close(out.cpu(), load("output"), rtol=0, atol=1e-5)
    torch.testing.assert_close(features.grad.cpu(), load("feat_grad"), rtol=0, atol=1e-5)
    torch.testing.assert_close(masks.grad.cpu(), load("mask_grad"), rtol=0, atol=1e-5)
