"""The CUDA kernels' arithmetic, checked without a GPU: the kernels of
csrc/cuda/carafe_kernels.cuh compiled for the host and run under a sequential
emulation of the CUDA grid (tests/cuda_emulation/), against the CPU op. The
emulation runs a warp's lanes together at their votes (warp_all), as a GPU
does, and counts the votes: the tests check the counts against the
prediction of cuda_paths.py, so they know which loops ran. On a GPU machine
test_ops.py runs the real kernels too."""

import itertools
import re
from pathlib import Path

import pytest
import torch
from conftest import make_inputs
from cuda_paths import warp_votes

import carafe  # noqa: F401  (registers torch.ops.carafe)
from carafe.reference import misaligned_copy

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def emulated():
    from torch.utils.cpp_extension import load

    build = ROOT / "build" / "cuda_emulation"
    build.mkdir(parents=True, exist_ok=True)
    load(
        name="carafe_cuda_emulation",
        sources=[str(ROOT / "tests" / "cuda_emulation" / "carafe_emulated.cpp")],
        extra_include_paths=[str(ROOT / "csrc")],
        extra_cflags=["-O1"],
        build_directory=str(build),
        is_python_module=False,
        verbose=False,
    )
    return torch.ops.carafe_cuda_emulation


TOL = {torch.float64: 1e-10, torch.float32: 1e-5, torch.float16: 1e-2, torch.bfloat16: 5e-2}
KERNELS = ("forward", "grad_masks", "grad_features")


def emulate(emulated, f, m, go, k, G, s, index_bits=0, max_blocks=2**20):
    """The emulated forward and backward (non-empty inputs: three launches):
    (out, grad_features, grad_masks), {kernel: [threads, blocks, votes for
    the interior loop, votes against]}, the kernels' names."""
    emulated.kernels_launched(), emulated.launch_counts()  # clear
    results = (
        emulated.forward(f, m, k, G, s, index_bits, max_blocks),
        *emulated.backward(go, f, m, k, G, s, index_bits, max_blocks),
    )
    counts = dict(zip(KERNELS, emulated.launch_counts().tolist(), strict=True))
    return results, counts, emulated.kernels_launched()


def votes_of(counts):
    return {kernel: tuple(c[2:]) for kernel, c in counts.items()}


def assert_matches_cpu(results, f, m, go, k, G, s, tol):
    expected = (carafe.carafe(f, m, k, G, s), *torch.ops.carafe.carafe_backward(go, f, m, k, G, s))
    for name, a, b in zip(("output", "grad_features", "grad_masks"), results, expected):
        torch.testing.assert_close(a.double(), b.double(), rtol=tol, atol=tol, msg=name)


@pytest.mark.parametrize(
    "k,G,s", [(1, 1, 2), (3, 2, 2), (5, 1, 2), (5, 4, 3), (7, 2, 2), (9, 1, 2), (11, 2, 1)]
)
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
    results, counts, _ = emulate(emulated, f, m, go, k, G, s, index_bits, 2)
    assert_matches_cpu(results, f, m, go, k, G, s, 1e-12)
    # the warps vote as predicted, windows across row ends and past the input included
    assert votes_of(counts) == warp_votes(2, 20 * G, H, W, k, G, s)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_kernels_reduced_precision(emulated, dtype):
    f, m = make_inputs(N=1, C=8, H=3, W=6, k=5, G=2, s=2, dtype=dtype)
    go = torch.randn(1, 8, 6, 12).to(dtype)
    results = (
        emulated.forward(f, m, 5, 2, 2, 0, 1000),
        *emulated.backward(go, f, m, 5, 2, 2, 0, 1000),
    )
    expected = (carafe.carafe(f, m, 5, 2, 2), *torch.ops.carafe.carafe_backward(go, f, m, 5, 2, 2))
    for a, b in zip(results, expected):
        torch.testing.assert_close(a.double(), b.double(), rtol=TOL[dtype], atol=TOL[dtype])


@pytest.mark.parametrize("shape", list(itertools.product([0, 1], [1, 3], [1, 2])))
def test_kernels_small_and_empty(emulated, shape):
    N, H, W = shape
    f, m = make_inputs(N=N, C=4, H=H, W=W, k=5, G=2, s=2)
    go = torch.randn(N, 4, 2 * H, 2 * W, dtype=torch.float64)
    torch.testing.assert_close(emulated.forward(f, m, 5, 2, 2, 0, 4), carafe.carafe(f, m, 5, 2, 2))
    for a, b in zip(
        emulated.backward(go, f, m, 5, 2, 2, 0, 4),
        torch.ops.carafe.carafe_backward(go, f, m, 5, 2, 2),
    ):
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
    aligned, counts_aligned, names_aligned = emulate(emulated, f, m, go, k, 2, 2, 0, 3)
    shifted, counts_shifted, names_shifted = emulate(
        emulated, f, _shifted(m), _shifted(go), k, 2, 2, 0, 3
    )
    for a, b in zip(aligned, shifted):
        assert torch.equal(a, b)
    assert votes_of(counts_aligned) == warp_votes(1, 24, 9, 10, k, 2, 2, aligned=True)
    assert votes_of(counts_shifted) == warp_votes(1, 24, 9, 10, k, 2, 2, aligned=False)
    # small tensors: 32-bit indices, as fits_int32 chooses
    type_name = {torch.float64: "double", torch.float32: "float", torch.float16: "c10::Half"}
    assert all(re.search(f"<{type_name[dtype]}, int[,>]", n) for n in names_aligned)
    unrolled = k in (1, 3, 5, 7)
    S = {True: ", 2>", False: ", 0>"}
    fwd, gm, gf = names_aligned
    assert fwd.startswith(
        "void carafe::kernels::carafe_forward_window_kernel"
        if unrolled
        else "void carafe::kernels::carafe_forward_generic_kernel"
    )
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


# Shapes whose warps lie wholly inside the input: rows of 80 columns, so a
# warp of 32 consecutive columns (or of s outputs per column) fits between
# the border columns, and 24 rows, of which 24 - 2 * (k // 2) are interior.
# At the earlier shapes (W <= 17) no forward warp took the interior loop.
INTERIOR = dict(N=1, C=32, H=24, W=80)
K_S = list(itertools.product([3, 5, 7], [1, 2, 3, 4]))


def _interior_inputs(k, G, s, dtype):
    # float64: masks of any sign and size; the other dtypes: softmax masks
    f, m = make_inputs(**INTERIOR, k=k, G=G, s=s, dtype=dtype, normalized=dtype != torch.float64)
    go = torch.randn(
        1, 32, 24 * s, 80 * s, generator=torch.Generator().manual_seed(2), dtype=torch.float64
    ).to(dtype)
    return f, m, go


def assert_both_loops_ran(counts, votes):
    """Every kernel's warps voted as cuda_paths predicts, and some took each loop."""
    assert votes_of(counts) == votes
    for kernel, (interior, checked) in votes.items():
        assert interior > 0 and checked > 0, (kernel, interior, checked)


@pytest.mark.parametrize("k,s", K_S)
def test_interior_loops_float64(emulated, k, s):
    """The bounds-test-free loops of all three kernels, for k in {3, 5, 7}
    and s in 1..4 (output pairs at s = 2, k <= 5 for the forward and s = 2
    for grad_masks; one output per thread otherwise), against the CPU op."""
    G = 2
    f, m, go = _interior_inputs(k, G, s, torch.float64)
    results, counts, names = emulate(emulated, f, m, go, k, G, s)
    assert all("<double, int, " in n for n in names)
    assert_both_loops_ran(counts, warp_votes(**INTERIOR, k=k, G=G, s=s))
    assert_matches_cpu(results, f, m, go, k, G, s, 1e-12)


# Each k and each s, pairs (5, 2) and one output per thread with paired
# gradients (7, 2): the reduced dtypes' paths (Vec of two halves, float sums)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("k,s", [(3, 1), (5, 2), (7, 2), (7, 3), (3, 4)])
def test_interior_loops_reduced_precision(emulated, dtype, k, s):
    f, m, go = _interior_inputs(k, 1, s, dtype)
    results, counts, names = emulate(emulated, f, m, go, k, 1, s)
    assert_both_loops_ran(counts, warp_votes(**INTERIOR, k=k, G=1, s=s))
    assert_matches_cpu(results, f, m, go, k, 1, s, TOL[dtype])


@pytest.mark.parametrize("k,s", K_S)
def test_interior_loops_64bit_indices(emulated, monkeypatch, k, s):
    """CARAFE_TEST_CUDA_INDEX64=1, the switch carafe_kernel.cu reads too:
    the launch code (index_bits=0: its own choice) runs the 64-bit kernels
    at shapes where 32 bits fit, interior loops included."""
    monkeypatch.setenv("CARAFE_TEST_CUDA_INDEX64", "1")
    f, m, go = _interior_inputs(k, 1, s, torch.float64)
    results, counts, names = emulate(emulated, f, m, go, k, 1, s)
    assert len(names) == 3 and all("<double, long, " in n for n in names)
    assert_both_loops_ran(counts, warp_votes(**INTERIOR, k=k, G=1, s=s))
    assert_matches_cpu(results, f, m, go, k, 1, s, 1e-12)


@pytest.mark.parametrize("k,s", K_S)
def test_interior_loops_repeating_grid(emulated, monkeypatch, k, s):
    """CARAFE_TEST_CUDA_MAX_BLOCKS=3, the switch carafe_kernel.cu reads too:
    grids of 3 blocks, so every kernel's grid-stride loop runs at least 5
    iterations here; its warps vote as with a full grid."""
    monkeypatch.setenv("CARAFE_TEST_CUDA_MAX_BLOCKS", "3")
    f, m, go = _interior_inputs(k, 1, s, torch.float64)
    results, counts, _ = emulate(emulated, f, m, go, k, 1, s)
    for kernel, (threads, blocks, *_) in counts.items():
        assert blocks == 3 and threads >= 5 * 3 * 256, (kernel, threads, blocks)
    assert_both_loops_ran(counts, warp_votes(**INTERIOR, k=k, G=1, s=s))
    assert_matches_cpu(results, f, m, go, k, 1, s, 1e-12)


def test_test_switches_are_checked(emulated, monkeypatch):
    f, m = make_inputs(N=1, C=8, H=5, W=6, k=3, G=1, s=2)
    monkeypatch.setenv("CARAFE_TEST_CUDA_MAX_BLOCKS", "5")
    assert emulated.launch_blocks(2**20) == 5 and emulated.launch_blocks(256) == 1
    for value in ("0", "-1", "3x"):
        monkeypatch.setenv("CARAFE_TEST_CUDA_MAX_BLOCKS", value)
        with pytest.raises(RuntimeError, match="CARAFE_TEST_CUDA_MAX_BLOCKS must be"):
            emulated.forward(f, m, 3, 1, 2, 0, 8)
    monkeypatch.setenv("CARAFE_TEST_CUDA_MAX_BLOCKS", "")  # empty: unset
    monkeypatch.setenv("CARAFE_TEST_CUDA_INDEX64", "yes")
    with pytest.raises(RuntimeError, match="CARAFE_TEST_CUDA_INDEX64 must be 0 or 1"):
        emulated.forward(f, m, 3, 1, 2, 0, 8)
    monkeypatch.setenv("CARAFE_TEST_CUDA_INDEX64", "0")
    emulated.kernels_launched()
    emulated.forward(f, m, 3, 1, 2, 0, 8)
    assert "<double, int, 3, 2>" in emulated.kernels_launched()[0]


def test_benchmark_shape_votes():
    """cuda_paths' count at the benchmark shape, 2x256x100x152, k = 5, s = 2:
    21,504 of the forward's 30,400 warps take the interior loop."""
    votes = warp_votes(2, 256, 100, 152, 5, 1, 2)
    assert votes["forward"] == (21504, 30400 - 21504)
    assert all(v[0] > 0 for v in votes.values())
    # at the shapes of test_ops' CUDA tests, no forward warp does
    assert warp_votes(2, 40, 13, 17, 5, 1, 2)["forward"][0] == 0


def test_sanitizer_workload_reaches_the_interior_loops():
    """scripts/gpu_sanitize.py, the workload of compute-sanitizer: every k in
    3, 5, 7 with every s in 1..4 at shapes where each kernel's warps take
    both loops."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "gpu_sanitize", ROOT / "scripts" / "gpu_sanitize.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert sorted((k, s) for _, _, _, _, k, _, s in module.INTERIOR_CASES) == K_S
    for N, C, H, W, k, G, s in module.INTERIOR_CASES:
        for kernel, (interior, checked) in warp_votes(N, C, H, W, k, G, s).items():
            assert interior > 0 and checked > 0, (kernel, k, s)
    assert {name for switch in module.SWITCHES for name in switch} == {
        "CARAFE_TEST_CUDA_INDEX64",
        "CARAFE_TEST_CUDA_MAX_BLOCKS",
    }
