"""The CUDA kernels' arithmetic, checked without a GPU: the kernels of
csrc/cuda/carafe_kernels.cuh compiled for the host and run under a sequential
emulation of the CUDA grid (tests/cuda_emulation/), against the CPU op. On a
GPU machine test_ops.py runs the real kernels too."""

import itertools
import re
from pathlib import Path

import pytest
import torch

import carafe  # noqa: F401  (registers torch.ops.carafe)
from carafe.reference import misaligned_copy
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
@pytest.mark.parametrize("index_bits", [32, 64])
@pytest.mark.parametrize("H,W", [(4, 5), (9, 11)])
def test_kernels_match_cpu(emulated, k, G, s, index_bits, H, W):
    # C/G = 20 channels: more than one channel chunk (16 forward, 8 grad_features),
    # with a remainder.
    # 9x11: most windows up to k = 7 lie inside the input (the kernels' interior
    # path); at 4x5 most reach past the border.
    f, m = make_inputs(N=2, C=20 * G, H=H, W=W, k=k, G=G, s=s, normalized=False)
    go = torch.randn(2, 20 * G, H * s, W * s, dtype=torch.float64)
    # max_blocks=2: the grid is smaller than the work, so every grid-stride loop iterates
    out = emulated.forward(f, m, k, G, s, index_bits, 2)
    gf, gm = emulated.backward(go, f, m, k, G, s, index_bits, 2)
    torch.testing.assert_close(out, carafe.carafe(f, m, k, G, s), rtol=1e-12, atol=1e-12)
    ref_gf, ref_gm = torch.ops.carafe.carafe_backward(go, f, m, k, G, s)
    torch.testing.assert_close(gf, ref_gf, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(gm, ref_gm, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_kernels_reduced_precision(emulated, dtype):
    f, m = make_inputs(N=1, C=8, H=3, W=6, k=5, G=2, s=2, dtype=dtype)
    go = torch.randn(1, 8, 6, 12).to(dtype)
    results = (emulated.forward(f, m, 5, 2, 2, 0, 1000),
               *emulated.backward(go, f, m, 5, 2, 2, 0, 1000))
    expected = (carafe.carafe(f, m, 5, 2, 2),
                *torch.ops.carafe.carafe_backward(go, f, m, 5, 2, 2))
    for a, b in zip(results, expected):
        torch.testing.assert_close(a.double(), b.double(), rtol=TOL[dtype], atol=TOL[dtype])


@pytest.mark.parametrize("shape", list(itertools.product([0, 1], [1, 3], [1, 2])))
def test_kernels_small_and_empty(emulated, shape):
    N, H, W = shape
    f, m = make_inputs(N=N, C=4, H=H, W=W, k=5, G=2, s=2)
    go = torch.randn(N, 4, 2 * H, 2 * W, dtype=torch.float64)
    torch.testing.assert_close(emulated.forward(f, m, 5, 2, 2, 0, 4), carafe.carafe(f, m, 5, 2, 2))
    for a, b in zip(emulated.backward(go, f, m, 5, 2, 2, 0, 4),
                    torch.ops.carafe.carafe_backward(go, f, m, 5, 2, 2)):
        torch.testing.assert_close(a, b)


def _shifted(t):
    view = misaligned_copy(t)
    assert view.is_contiguous() and view.data_ptr() % (2 * t.element_size()) != 0
    return view


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16])
@pytest.mark.parametrize("k", [1, 3, 5, 7, 9])
def test_launch_choice_and_paths_agree(emulated, dtype, k):
    """The launch code's choice: at s = 2 with aligned tensors the kernels that
    take output pairs as one access (k <= 5 for the forward, k <= 7 for the
    gradients; generic kernels beyond k = 7, for grad_masks one thread per
    mask element); with
    an input one element off alignment, the one-output kernels. All variants
    sum in the same order, so the results agree bit for bit."""
    f, m = make_inputs(N=1, C=24, H=9, W=10, k=k, G=2, s=2, dtype=dtype, normalized=False)
    go = torch.randn(1, 24, 18, 20).to(dtype)
    emulated.kernels_launched()  # clear
    aligned = (emulated.forward(f, m, k, 2, 2, 0, 3),
               *emulated.backward(go, f, m, k, 2, 2, 0, 3))
    names_aligned = emulated.kernels_launched()
    shifted = (emulated.forward(f, _shifted(m), k, 2, 2, 0, 3),
               *emulated.backward(_shifted(go), f, _shifted(m), k, 2, 2, 0, 3))
    names_shifted = emulated.kernels_launched()
    for a, b in zip(aligned, shifted):
        assert torch.equal(a, b)
    # small tensors: 32-bit indices, as fits_int32 chooses
    type_name = {torch.float64: "double", torch.float32: "float", torch.float16: "c10::Half"}
    assert all(re.search(f"<{type_name[dtype]}, int[,>]", n) for n in names_aligned)
    unrolled = k in (1, 3, 5, 7)
    S = {True: ", 2>", False: ", 0>"}
    fwd, gm, gf = names_aligned
    assert fwd.startswith("void carafe::kernels::carafe_forward_window_kernel" if unrolled
                          else "void carafe::kernels::carafe_forward_generic_kernel")
    assert fwd.endswith(S[k <= 5]) or not unrolled
    assert ("grad_masks_window_kernel" in gm and gm.endswith(S[True])) == unrolled
    assert "carafe_grad_features_chunk_kernel" in gf and gf.endswith(S[True])
    # misaligned: no paired kernel anywhere
    assert len(names_shifted) == 3 and not any(n.endswith(S[True]) for n in names_shifted)


def test_launch_geometry(emulated):
    """The launch code's sizes, as carafe_kernel.cu computes them: blocks of
    256 threads, at most 2^20 of them (grid-stride loops cover the rest), and
    32-bit indices only while every tensor has at most 2^30 elements (an index
    plus one grid stride then stays below 2^31)."""
    assert emulated.launch_blocks(1) == 1
    assert emulated.launch_blocks(256) == 1 and emulated.launch_blocks(257) == 2
    assert emulated.launch_blocks(2**28) == 2**20 and emulated.launch_blocks(2**40) == 2**20
    assert emulated.index_fits_int32([2**30, 5])
    assert not emulated.index_fits_int32([5, 2**30 + 1])
    assert (2**30 - 1) + 2**20 * 256 < 2**31


def test_index_width_choice(emulated):
    """index_bits=0 takes the width fits_int32 chooses (32 bits for these
    small tensors); forcing 64 bits runs the 64-bit kernels, same results."""
    f, m = make_inputs(N=1, C=8, H=5, W=6, k=3, G=1, s=2)
    emulated.kernels_launched()
    chosen = emulated.forward(f, m, 3, 1, 2, 0, 8)
    wide = emulated.forward(f, m, 3, 1, 2, 64, 8)
    narrow_name, wide_name = emulated.kernels_launched()
    assert "<double, int, 3, 2>" in narrow_name and "<double, long, 3, 2>" in wide_name
    assert torch.equal(chosen, wide)
    with pytest.raises(RuntimeError, match="index_bits must be 0, 32 or 64"):
        emulated.forward(f, m, 3, 1, 2, 16, 8)
