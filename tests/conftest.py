"""Shared test helpers: the device list (CUDA visibly skipped where it cannot
run) and input factories."""

import pytest
import torch

import carafe

CUDA_SKIP_REASON = (
    "needs a CUDA GPU and carafe's CUDA kernels "
    f"(GPU visible: {torch.cuda.is_available()}, CUDA kernels built: {carafe.has_kernel('cuda')})"
)
requires_cuda = pytest.mark.skipif(not carafe.cuda_available(), reason=CUDA_SKIP_REASON)


def devices():
    """Every device to test on: cpu always, cuda as a marked, visibly skipped param."""
    return ["cpu", pytest.param("cuda", marks=[pytest.mark.cuda, requires_cuda])]


def make_inputs(N=2, C=8, H=5, W=7, k=5, G=2, s=2, dtype=torch.float64, device="cpu",
                normalized=True, seed=0, requires_grad=False):
    """features (N, C, H, W) ~ N(0, 1) and masks (N, k*k*G, s*H, s*W): softmax-normalised
    per kernel (as CARAFEPack makes them) or raw N(0, 1)."""
    g = torch.Generator().manual_seed(seed)
    features = torch.randn(N, C, H, W, generator=g, dtype=torch.float64)
    masks = torch.randn(N, G, k * k, H * s, W * s, generator=g, dtype=torch.float64)
    if normalized:
        masks = masks.softmax(dim=2)
    masks = masks.reshape(N, G * k * k, H * s, W * s)
    features = features.to(device=device, dtype=dtype).requires_grad_(requires_grad)
    masks = masks.to(device=device, dtype=dtype).requires_grad_(requires_grad)
    return features, masks


def tree_digest(folder):
    """{relative path: sha256} of every file under folder: tests that a
    command only reads a folder compare it before and after."""
    import hashlib
    from pathlib import Path
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(Path(folder).rglob("*")) if p.is_file()}
