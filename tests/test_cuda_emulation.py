"""The CUDA kernels' arithmetic, checked without a GPU: the kernels of
csrc/cuda/carafe_kernels.cuh compiled for the host and run under a sequential
emulation of the CUDA grid (tests/cuda_emulation/), against the CPU op. On a
GPU machine test_ops.py runs the real kernels too."""

import itertools
from pathlib import Path

import pytest
import torch

import carafe  # noqa: F401  (registers torch.ops.carafe)
from conftest import make_inputs

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def emulated():
    from torch.utils.cpp_extension import load
    build = ROOT / "build" / "cuda_emulation"
    build.mkdir(parents=True, exist_ok=True)
    load(name="carafe_cuda_emulation", sources=[str(ROOT / "tests" / "cuda_emulation" /
                                                    "carafe_emulated.cpp")],
         extra_include_paths=[str(ROOT / "csrc")], extra_cflags=["-O1"],
         build_directory=str(build), is_python_module=False, verbose=False)
    return torch.ops.carafe_cuda_emulation


TOL = {torch.float64: 1e-10, torch.float32: 1e-5, torch.float16: 1e-2, torch.bfloat16: 5e-2}


@pytest.mark.parametrize("k,G,s", [(1, 1, 2), (3, 2, 2), (5, 1, 2), (5, 4, 3), (7, 2, 2),
                                   (9, 1, 2), (11, 2, 1)])
@pytest.mark.parametrize("wide_index", [False, True])
def test_kernels_match_cpu(emulated, k, G, s, wide_index):
    # C/G = 20 channels: more than one forward channel chunk of 16, with a remainder
    f, m = make_inputs(N=2, C=20 * G, H=4, W=5, k=k, G=G, s=s, normalized=False)
    go = torch.randn(2, 20 * G, 4 * s, 5 * s, dtype=torch.float64)
    # max_blocks=2: the grid is smaller than the work, so every grid-stride loop iterates
    out = emulated.forward(f, m, k, G, s, wide_index, 2)
    gf, gm = emulated.backward(go, f, m, k, G, s, wide_index, 2)
    torch.testing.assert_close(out, carafe.carafe(f, m, k, G, s), rtol=1e-12, atol=1e-12)
    ref_gf, ref_gm = torch.ops.carafe.carafe_backward(go, f, m, k, G, s)
    torch.testing.assert_close(gf, ref_gf, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(gm, ref_gm, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_kernels_reduced_precision(emulated, dtype):
    f, m = make_inputs(N=1, C=8, H=3, W=6, k=5, G=2, s=2, dtype=dtype)
    go = torch.randn(1, 8, 6, 12).to(dtype)
    results = (emulated.forward(f, m, 5, 2, 2, False, 1000),
               *emulated.backward(go, f, m, 5, 2, 2, False, 1000))
    expected = (carafe.carafe(f, m, 5, 2, 2),
                *torch.ops.carafe.carafe_backward(go, f, m, 5, 2, 2))
    for a, b in zip(results, expected):
        torch.testing.assert_close(a.double(), b.double(), rtol=TOL[dtype], atol=TOL[dtype])


@pytest.mark.parametrize("shape", list(itertools.product([0, 1], [1, 3], [1, 2])))
def test_kernels_small_and_empty(emulated, shape):
    N, H, W = shape
    f, m = make_inputs(N=N, C=4, H=H, W=W, k=5, G=2, s=2)
    go = torch.randn(N, 4, 2 * H, 2 * W, dtype=torch.float64)
    torch.testing.assert_close(emulated.forward(f, m, 5, 2, 2, False, 4), carafe.carafe(f, m, 5, 2, 2))
    for a, b in zip(emulated.backward(go, f, m, 5, 2, 2, False, 4),
                    torch.ops.carafe.carafe_backward(go, f, m, 5, 2, 2)):
        torch.testing.assert_close(a, b)
