"""Shared test helpers: the device list (CUDA visibly skipped where it cannot
run) and input factories."""

import pytest
import torch

import carafe
from carafe.reference import random_inputs

CUDA_SKIP_REASON = (
    "needs a CUDA GPU and carafe's CUDA kernels "
    f"(GPU visible: {torch.cuda.is_available()}, CUDA kernels built: {carafe.has_kernel('cuda')})"
)
requires_cuda = pytest.mark.skipif(not carafe.cuda_available(), reason=CUDA_SKIP_REASON)


def devices():
    """Every device to test on: cpu always, cuda as a marked, visibly skipped param."""
    return ["cpu", pytest.param("cuda", marks=[pytest.mark.cuda, requires_cuda])]


def make_inputs(
    N=2,
    C=8,
    H=5,
    W=7,
    k=5,
    G=2,
    s=2,
    dtype=torch.float64,
    device="cpu",
    normalized=True,
    seed=0,
    requires_grad=False,
):
    """carafe.reference.random_inputs with the tests' small defaults (float64):
    features (N, C, H, W), masks (N, k*k*G, s*H, s*W)."""
    return random_inputs(
        N,
        C,
        H,
        W,
        k,
        G,
        s,
        dtype=dtype,
        device=device,
        normalized=normalized,
        seed=seed,
        requires_grad=requires_grad,
    )


def tree_digest(folder):
    """{relative path: sha256} of every file under folder: tests that a
    command only reads a folder compare it before and after."""
    import hashlib
    from pathlib import Path

    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(Path(folder).rglob("*"))
        if p.is_file()
    }
