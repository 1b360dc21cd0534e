"""carafe.carafe against the reference, over shapes, dtypes, layouts and devices,
plus gradcheck, opcheck, torch.compile and determinism."""

import itertools
import json
import os
import platform
import subprocess
import sys

import pytest
import torch
from conftest import devices, make_inputs, requires_cuda
from cuda_paths import warp_votes

import carafe
from carafe.reference import carafe_reference, misaligned_copy, random_inputs

# Tolerances against a float64 reference, per dtype (outputs are O(1)).
TOL = {
    torch.float64: dict(rtol=1e-10, atol=1e-10),
    torch.float32: dict(rtol=1e-5, atol=1e-5),
    torch.float16: dict(rtol=1e-2, atol=1e-2),
    torch.bfloat16: dict(rtol=4e-2, atol=4e-2),
}


def reference_with_grads(features, masks, k, G, s, grad_output):
    f = features.detach().double().cpu().requires_grad_()
    m = masks.detach().double().cpu().requires_grad_()
    out = carafe_reference(f, m, k, G, s)
    out.backward(grad_output.detach().double().cpu())
    return out.detach(), f.grad, m.grad


def check_against_reference(features, masks, k, G, s, tol=None):
    tol = tol or TOL[features.dtype]
    f = features.detach().clone().requires_grad_()
    m = masks.detach().clone().requires_grad_()
    out = carafe.carafe(f, m, k, G, s)
    assert out.shape == (f.shape[0], f.shape[1], f.shape[2] * s, f.shape[3] * s)
    assert out.dtype == f.dtype and out.device == f.device
    grad_output = torch.randn(
        out.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64
    ).to(out)
    out.backward(grad_output)
    ref_out, ref_gf, ref_gm = reference_with_grads(features, masks, k, G, s, grad_output)
    torch.testing.assert_close(out.detach().cpu().double(), ref_out, **tol)
    torch.testing.assert_close(f.grad.cpu().double(), ref_gf, **tol)
    torch.testing.assert_close(m.grad.cpu().double(), ref_gm, **tol)


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("k,G,s", list(itertools.product([1, 3, 5, 7], [1, 2, 4], [1, 2, 3, 4])))
def test_matches_reference(device, k, G, s):
    features, masks = make_inputs(
        N=2, C=8, H=4, W=5, k=k, G=G, s=s, device=device, normalized=False
    )
    check_against_reference(features, masks, k, G, s)


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("k,G,s", [(5, 1, 2), (3, 4, 2), (9, 2, 3)])
def test_dtypes(device, dtype, k, G, s):
    features, masks = make_inputs(N=2, C=16, H=6, W=9, k=k, G=G, s=s, device=device, dtype=dtype)
    check_against_reference(features, masks, k, G, s)


# The CPU's float32 kernels are chosen by row width (vector blocks of 8 or 16
# input columns, the last block overlapping the one before), scale (window
# kernels for s = 1, 2), k (grad_masks kernels keep k*s*s sums in registers)
# and channels per group (blocks of 2, 4 or 8 channels, then a remainder);
# these shapes reach each kernel and the fallbacks around them.
@pytest.mark.parametrize("W", [7, 8, 15, 16, 17, 37])
@pytest.mark.parametrize(
    "k,G,s,C",
    [
        (3, 1, 2, 6),
        (5, 1, 2, 13),
        (5, 2, 1, 18),
        (7, 1, 1, 9),
        (7, 3, 2, 12),
        (1, 1, 2, 4),
        (3, 1, 3, 4),
        (9, 1, 2, 5),
    ],
)
def test_float32_cpu_kernels_match_reference(W, k, G, s, C):
    features, masks = make_inputs(
        N=2, C=C, H=5, W=W, k=k, G=G, s=s, dtype=torch.float32, normalized=False
    )
    check_against_reference(features, masks, k, G, s)


# Many channels per group: the grad_masks kernel splits the columns into
# strips (about 512 KiB of rows per item: 3 blocks of 16 columns at 256
# channels, k = 5, s = 2) and the channels into chunks of 32, carrying sums
# across chunks; grad_features runs blocks of 4 channels in chunks of 32.
@pytest.mark.parametrize("C,G,W", [(256, 1, 152), (256, 1, 100), (200, 2, 61)])
def test_float32_cpu_kernels_many_channels(C, G, W):
    features, masks = make_inputs(
        N=2, C=C, H=3, W=W, k=5, G=G, s=2, dtype=torch.float32, normalized=False
    )
    # grad_masks sums C/G products of O(1): float32 rounding up to ~C/G * 6e-8
    check_against_reference(features, masks, 5, G, 2, tol=dict(rtol=1e-5, atol=5e-5))


# float16 and bfloat16 on the CPU run the float32 kernels (the forward on rows
# converted in cache, the backward on float32 copies of blocks of channels)
# and round the results once: the float32 op's results on the upcast inputs,
# rounded. grad_masks sums the group's blocks: with the float32 grad_masks
# kernel each block adds to the sums before it (bit for bit one pass; at
# 120x120 (s = 2) and 184x184 (s = 1), 64 channels: two blocks of 32, rows
# whose last vector block overlaps the one before), elsewhere (the portable path,
# CARAFE_CPU_CAPABILITY=default) each block sums alone and the sums are added
# (at 464x464, 16 channels: two blocks of 8), which is only close.
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize(
    "N,C,H,W,k,G,s,exact_masks",
    [
        (2, 13, 5, 37, 5, 1, 2, True),
        (2, 12, 6, 17, 3, 3, 1, True),
        (1, 6, 4, 5, 7, 2, 3, True),
        (1, 64, 120, 120, 3, 1, 2, True),
        (1, 64, 184, 184, 5, 1, 1, True),
        (1, 16, 464, 464, 3, 1, 2, False),
    ],
)
def test_half_cpu_is_float32_rounded(dtype, N, C, H, W, k, G, s, exact_masks):
    f, m, go = random_inputs(
        N, C, H, W, k, G, s, dtype=dtype, normalized=False, with_grad_output=True
    )
    out = carafe.carafe(f, m, k, G, s)
    gf, gm = torch.ops.carafe.carafe_backward(go, f, m, k, G, s)
    out32 = carafe.carafe(f.float(), m.float(), k, G, s)
    gf32, gm32 = torch.ops.carafe.carafe_backward(go.float(), f.float(), m.float(), k, G, s)
    assert out.dtype == gf.dtype == gm.dtype == dtype
    assert torch.equal(out, out32.to(dtype))
    assert torch.equal(gf, gf32.to(dtype))
    if exact_masks:
        assert torch.equal(gm, gm32.to(dtype))
    else:
        # float32 sums of 8 channels added, against one sum of 16: within
        # float32 rounding before the rounding to dtype
        torch.testing.assert_close(gm.float(), gm32, **TOL[dtype])
        exact = (gm == gm32.to(dtype)).float().mean().item()
        assert exact > 0.99, f"only {exact:.4f} of grad_masks equal float32's rounded"


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("s", [1, 2])
def test_half_cpu_special_values(dtype, s):
    """Zeros, infinities, NaN, subnormals and the largest finite values, in
    rows of 40 columns (whole vectors and an overlapping last one), k = 1:
    each output is one product, rounded to dtype as Tensor.to() rounds."""
    info = torch.finfo(dtype)
    special = torch.tensor(
        [
            0.0,
            -0.0,
            float("inf"),
            -float("inf"),
            float("nan"),
            info.tiny,
            info.tiny / 4,
            info.smallest_normal / 8,
            info.max,
            -info.max,
            1.0,
            -1.0 / 3,
        ],
        dtype=torch.float32,
    )
    g = torch.Generator().manual_seed(0)
    f = torch.randn(1, 3, 5, 40, generator=g)
    f.view(-1)[torch.randperm(f.numel(), generator=g)[:120]] = special.repeat(10)
    m = torch.empty(1, 1, 5 * s, 40 * s).uniform_(0.4, 2.5, generator=g)
    f, m = f.to(dtype), m.to(dtype)
    out = carafe.carafe(f, m, 1, 1, s)
    expected = carafe.carafe(f.float(), m.float(), 1, 1, s).to(dtype)
    torch.testing.assert_close(out, expected, rtol=0, atol=0, equal_nan=True)
    assert out.isnan().any() and out.isinf().any()


# The CPU picks its float32 kernels by instruction set at run time;
# CARAFE_CPU_CAPABILITY lowers that choice, so this machine runs the AVX2 and
# portable paths too. AVX2 and AVX-512 kernels promise the same bits.
_CAPABILITY_SCRIPT = """
import sys, torch, carafe
torch.manual_seed(0)
res = {}
for (k, s, C, W) in [(5, 2, 13, 37), (3, 2, 8, 16), (1, 2, 9, 40), (7, 2, 6, 17),
                     (3, 1, 9, 21), (5, 1, 18, 33), (7, 1, 5, 19), (1, 1, 16, 64),
                     (9, 2, 5, 20), (9, 1, 3, 18)]:
    f32 = torch.randn(2, C, 7, W)
    m32 = torch.randn(2, k * k, 7 * s, W * s)
    go32 = torch.randn(2, C, 7 * s, W * s)
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        f = f32.to(dtype, copy=True).requires_grad_()  # leaves of their own
        m = m32.to(dtype, copy=True).requires_grad_()
        out = carafe.carafe(f, m, k, 1, s)
        out.backward(go32.to(dtype))
        res[(str(dtype), k, s, C, W)] = (out.detach(), f.grad, m.grad)
torch.save(res, sys.argv[1])
"""


def _run_with_capability(capability, path):
    env = dict(os.environ, CARAFE_CPU_CAPABILITY=capability)
    return subprocess.run(
        [sys.executable, "-c", _CAPABILITY_SCRIPT, str(path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.skipif(
    platform.machine() not in ("x86_64", "AMD64"), reason="the instruction-set choice is x86-64's"
)
def test_cpu_capability_paths_agree(tmp_path):
    results = {}
    for capability in ("avx512", "avx2", "default"):
        proc = _run_with_capability(capability, tmp_path / f"{capability}.pt")
        assert proc.returncode == 0, proc.stderr
        results[capability] = torch.load(tmp_path / f"{capability}.pt")
    for key, best in results["avx512"].items():
        for name, x, y, z in zip(
            ("output", "grad_features", "grad_masks"),
            best,
            results["avx2"][key],
            results["default"][key],
        ):
            assert torch.equal(x, y), (key, name)  # same operations in the same order
            # other sum orders (float32), then one rounding (float16/bfloat16)
            rtol = {torch.float32: 1e-5, torch.float16: 1e-3, torch.bfloat16: 1.6e-2}[x.dtype]
            torch.testing.assert_close(x, z, rtol=rtol, atol=1e-4)


@pytest.mark.skipif(
    platform.machine() not in ("x86_64", "AMD64"), reason="the instruction-set choice is x86-64's"
)
def test_cpu_capability_rejects_unknown(tmp_path):
    proc = _run_with_capability("avx1024", tmp_path / "x.pt")
    assert proc.returncode != 0
    assert (
        "CARAFE_CPU_CAPABILITY must be one of avx512, avx2, default; got 'avx1024'" in proc.stderr
    )


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize(
    "N,C,H,W",
    [
        (1, 4, 1, 1),  # one pixel: every tap but the centre is outside
        (2, 4, 1, 9),  # one row
        (2, 4, 11, 2),  # non-square, narrow
        (3, 12, 7, 13),  # odd sizes, C/G = 3
        (1, 4, 2, 3),  # window wider than the map (k = 9 below)
    ],
)
@pytest.mark.parametrize("k,s", [(5, 2), (9, 3)])
def test_shapes(device, N, C, H, W, k, s):
    features, masks = make_inputs(N=N, C=C, H=H, W=W, k=k, G=4, s=s, device=device)
    check_against_reference(features, masks, k, 4, s)


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize(
    "shape",
    [
        (0, 8, 4, 5),
        (2, 0, 4, 5),
        (2, 8, 0, 5),
        (2, 8, 4, 0),
        (0, 8, 4, 40),
        (2, 0, 4, 40),
        (2, 8, 0, 40),
    ],
)
def test_empty(device, dtype, shape):
    N, C, H, W = shape
    G = 1 if C == 0 else 2
    features, masks = make_inputs(
        N=N, C=C, H=H, W=W, k=3, G=G, s=2, device=device, dtype=dtype, requires_grad=True
    )
    out = carafe.carafe(features, masks, 3, G, 2)
    assert out.shape == (N, C, 2 * H, 2 * W)
    out.sum().backward()
    assert features.grad.shape == features.shape and masks.grad.shape == masks.shape
    assert not features.grad.any() and not masks.grad.any()


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("layout", ["channels_last", "sliced", "transposed", "expanded_batch"])
def test_layouts(device, layout):
    k, G, s = 5, 2, 2
    features, masks = make_inputs(N=2, C=8, H=6, W=7, k=k, G=G, s=s, device=device)
    if layout == "channels_last":
        features = features.contiguous(memory_format=torch.channels_last)
        masks = masks.contiguous(memory_format=torch.channels_last)
    elif layout == "sliced":
        # every other channel / row of larger tensors: strided, offset storage
        big_f, big_m = make_inputs(N=2, C=16, H=12, W=7, k=k, G=2 * G, s=s, device=device)
        features = big_f[:, 1::2, ::2]
        masks = big_m[:, k * k * G :, ::2][:, :, :12]
        assert not features.is_contiguous() and not masks.is_contiguous()
    elif layout == "transposed":
        features = features.transpose(2, 3).contiguous().transpose(2, 3)
        masks = masks.transpose(2, 3).contiguous().transpose(2, 3)
    elif layout == "expanded_batch":
        features = features[:1].expand(2, -1, -1, -1)
        masks = masks[:1].expand(2, -1, -1, -1)
    check_against_reference(features, masks, k, G, s)
    # The result does not depend on the layout.
    out = carafe.carafe(features, masks, k, G, s)
    torch.testing.assert_close(
        out, carafe.carafe(features.contiguous(), masks.contiguous(), k, G, s), rtol=0, atol=0
    )


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("k,G,s", [(3, 2, 2), (5, 1, 3), (1, 2, 1)])
def test_gradcheck(device, k, G, s):
    # Small: gradgradcheck builds dense Jacobians over every mask entry.
    features, masks = make_inputs(
        N=1, C=4, H=3, W=4, k=k, G=G, s=s, device=device, requires_grad=True, normalized=False
    )
    fn = lambda f, m: carafe.carafe(f, m, k, G, s)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (features, masks))
    assert torch.autograd.gradgradcheck(fn, (features, masks))


@pytest.mark.parametrize("device", devices())
def test_gradcheck_backward_op(device):
    """The backward op's own autograd (double backward) is exact too."""
    k, G, s = 3, 2, 2
    features, masks = make_inputs(
        N=1, C=4, H=3, W=3, k=k, G=G, s=s, device=device, requires_grad=True, normalized=False
    )
    grad_output = torch.randn(1, 4, 6, 6, dtype=torch.float64, device=device, requires_grad=True)
    fn = lambda go, f, m: torch.ops.carafe.carafe_backward(go, f, m, k, G, s)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (grad_output, features, masks))


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_opcheck(device, dtype):
    k, G, s = 3, 2, 2
    features, masks = make_inputs(
        N=2, C=4, H=3, W=5, k=k, G=G, s=s, device=device, dtype=dtype, requires_grad=True
    )
    torch.library.opcheck(torch.ops.carafe.carafe.default, (features, masks, k, G, s))
    grad_output = torch.randn(2, 4, 6, 10, dtype=dtype, device=device)
    torch.library.opcheck(
        torch.ops.carafe.carafe_backward.default, (grad_output, features, masks, k, G, s)
    )


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
def test_compile_fullgraph(device, backend):
    torch._dynamo.reset()
    k, G, s = 5, 2, 2
    features, masks = make_inputs(
        N=2, C=8, H=4, W=6, k=k, G=G, s=s, device=device, dtype=torch.float32, requires_grad=True
    )

    def fn(f, m):
        return (carafe.carafe(f, m, k, G, s) * 2).relu()

    compiled = torch.compile(fn, fullgraph=True, backend=backend)
    out = compiled(features, masks)
    (gf, gm) = torch.autograd.grad(out.sum(), (features, masks))
    expected = fn(features, masks)
    (ef, em) = torch.autograd.grad(expected.sum(), (features, masks))
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(gf, ef)
    torch.testing.assert_close(gm, em)


@pytest.mark.parametrize("device", devices())
def test_backward_deterministic(device):
    features, masks = make_inputs(
        N=2, C=32, H=9, W=11, k=5, G=4, s=2, device=device, dtype=torch.float32
    )
    grad_output = torch.randn(2, 32, 18, 22, device=device)
    first = torch.ops.carafe.carafe_backward(grad_output, features, masks, 5, 4, 2)
    for _ in range(3):
        again = torch.ops.carafe.carafe_backward(grad_output, features, masks, 5, 4, 2)
        assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])


# (256, 1, 100): grad_masks in two column strips, channel chunks carried over;
# float16/bfloat16 through the float32 kernels (blocks of channels)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("C,G,W", [(16, 2, 11), (16, 2, 37), (256, 1, 100)])
def test_cpu_threads_agree(C, G, W, dtype):
    """The parallel split does not change the result (each element is summed
    in a fixed order by one thread)."""
    features, masks = make_inputs(N=2, C=C, H=9, W=W, k=5, G=G, s=2, dtype=dtype)
    grad_output = torch.randn(2, C, 18, 2 * W).to(dtype)
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = (
            carafe.carafe(features, masks, 5, G, 2),
            *torch.ops.carafe.carafe_backward(grad_output, features, masks, 5, G, 2),
        )
        torch.set_num_threads(max(2, old))
        many = (
            carafe.carafe(features, masks, 5, G, 2),
            *torch.ops.carafe.carafe_backward(grad_output, features, masks, 5, G, 2),
        )
    finally:
        torch.set_num_threads(old)
    for a, b in zip(one, many):
        assert torch.equal(a, b)


def test_nonfinite_features_stay_local():
    """An inf in the input reaches only the outputs whose windows read it."""
    features, masks = make_inputs(N=1, C=2, H=8, W=8, k=3, G=1, s=2, dtype=torch.float32)
    features[0, 0, 0, 0] = float("inf")
    out = carafe.carafe(features, masks, 3, 1, 2)
    ref = carafe_reference(features, masks, 3, 1, 2)
    assert torch.equal(out.isfinite(), ref.isfinite())
    assert out[0, 0, 4:].isfinite().all() and out[0, 1].isfinite().all()


def outside_taps(H, W, k, s):
    """(k*k, s*H, s*W) bool: True where tap (ky, kx) of output pixel (p, q)
    reads outside the (H, W) input."""
    r = k // 2
    y = torch.arange(H * s) // s
    x = torch.arange(W * s) // s
    out = torch.zeros(k * k, H * s, W * s, dtype=torch.bool)
    for ky in range(k):
        for kx in range(k):
            iy, ix = y + ky - r, x + kx - r
            out[ky * k + kx] = ~(((iy >= 0) & (iy < H))[:, None] & ((ix >= 0) & (ix < W))[None, :])
    return out


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize(
    "k,G,s,H,W", [(3, 1, 2, 5, 6), (5, 2, 2, 4, 40), (7, 1, 3, 3, 2), (5, 1, 1, 6, 37)]
)
def test_nonfinite_weights_on_taps_outside_the_input_are_skipped(
    device, dtype, value, k, G, s, H, W
):
    """mmcv's rule, in every implementation: a tap outside the input is never
    read, so a NaN/inf weight there changes neither the output nor the
    gradients (grad_masks there is 0, even for an inf grad_output)."""
    features, masks = make_inputs(N=2, C=2 * G, H=H, W=W, k=k, G=G, s=s, dtype=dtype, device=device)
    outside = outside_taps(H, W, k, s).repeat(G, 1, 1).to(device)  # (k*k*G, s*H, s*W)
    poisoned = masks.clone()
    poisoned[:, outside] = value
    expected = carafe.carafe(features, torch.where(outside, 0, masks), k, G, s)
    out = carafe.carafe(features, poisoned, k, G, s)
    assert out.isfinite().all()
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    ref = carafe_reference(features.double(), poisoned.double(), k, G, s)
    torch.testing.assert_close(ref, expected.double(), **TOL[dtype])
    grad_output = torch.ones_like(out)
    grad_output[:, :, 0, 0] = float("inf")  # the corner reads outside on two sides (k > 1)
    gf, gm = torch.ops.carafe.carafe_backward(grad_output, features, poisoned, k, G, s)
    assert gm[:, outside].eq(0).all()
    # grad_features is finite wherever the inf grad_output is not read
    finite_go = torch.ones_like(out)
    gf, gm = torch.ops.carafe.carafe_backward(finite_go, features, poisoned, k, G, s)
    assert gf.isfinite().all() and gm.isfinite().all()
    gf0, gm0 = torch.ops.carafe.carafe_backward(
        finite_go, features, torch.where(outside, 0, masks), k, G, s
    )
    torch.testing.assert_close(gf, gf0, rtol=0, atol=0)
    torch.testing.assert_close(gm, gm0, rtol=0, atol=0)


def assert_cuda_agrees_with_cpu(N, C, H, W, k, G, s, dtype):
    """Forward and both gradients on the GPU against the CPU op."""
    features, masks = make_inputs(N=N, C=C, H=H, W=W, k=k, G=G, s=s, dtype=dtype)
    grad_output = torch.randn(N, C, H * s, W * s).to(dtype)
    cpu = (
        carafe.carafe(features, masks, k, G, s),
        *torch.ops.carafe.carafe_backward(grad_output, features, masks, k, G, s),
    )
    cuda = (
        carafe.carafe(features.cuda(), masks.cuda(), k, G, s),
        *torch.ops.carafe.carafe_backward(
            grad_output.cuda(), features.cuda(), masks.cuda(), k, G, s
        ),
    )
    # Both accumulate in float (double for float64), in different orders.
    tol = {torch.float64: 1e-10, torch.float32: 1e-4, torch.float16: 1e-2, torch.bfloat16: 5e-2}[
        dtype
    ]
    for name, a, b in zip(("output", "grad_features", "grad_masks"), cpu, cuda):
        torch.testing.assert_close(b.cpu(), a, rtol=tol, atol=tol, msg=name)


@requires_cuda
@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize(
    "k,G,s", [(1, 1, 2), (3, 2, 2), (5, 1, 2), (5, 4, 4), (7, 2, 3), (9, 1, 2)]
)
def test_cuda_agrees_with_cpu(dtype, k, G, s):
    assert_cuda_agrees_with_cpu(2, 40, 13, 17, k, G, s, dtype)


# Shapes whose warps lie wholly inside the input, so that the warps' votes
# send some of them down the kernels' bounds-test-free loops: rows of 80 or
# 76 columns hold a warp of 32 consecutive columns (or of s outputs per
# column) between the border columns. At 13x17 above no forward warp does.
# cuda_paths.warp_votes counts the votes of each kernel (checked against the
# emulated kernels' own count in test_cuda_emulation.py).
CUDA_K_S = list(itertools.product([3, 5, 7], [1, 2, 3, 4]))


def assert_both_loops_taken(N, C, H, W, k, G, s):
    for kernel, (interior, checked) in warp_votes(N, C, H, W, k, G, s).items():
        assert interior > 0 and checked > 0, (kernel, interior, checked)


@requires_cuda
@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("k,s", CUDA_K_S)
def test_cuda_interior_warps_agree_with_cpu(dtype, k, s):
    assert_both_loops_taken(1, 32, 24, 80, k, 2, s)
    assert_cuda_agrees_with_cpu(1, 32, 24, 80, k, 2, s, dtype)


@requires_cuda
@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("k,s", [(3, 1), (5, 2), (7, 2), (7, 3), (3, 4)])
def test_cuda_interior_warps_larger(dtype, k, s):
    """A quarter of the benchmark's shape (2x256x50x76 there), two samples,
    channel chunks of every size."""
    assert_both_loops_taken(2, 72, 50, 76, k, 3, s)
    assert_cuda_agrees_with_cpu(2, 72, 50, 76, k, 3, s, dtype)


def _set_switches(monkeypatch, switches):
    for name, value in switches.items():
        monkeypatch.setenv(name, value)


# The test-only launch switches of csrc/cuda/grid.cuh
SWITCHES = {
    "index64": {"CARAFE_TEST_CUDA_INDEX64": "1"},
    "max_blocks": {"CARAFE_TEST_CUDA_MAX_BLOCKS": "3"},
    "both": {"CARAFE_TEST_CUDA_INDEX64": "1", "CARAFE_TEST_CUDA_MAX_BLOCKS": "3"},
}


@requires_cuda
@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("k,s", CUDA_K_S)
def test_cuda_64bit_kernels_and_repeating_grid(monkeypatch, dtype, k, s):
    """The 64-bit index kernels (CARAFE_TEST_CUDA_INDEX64=1) and grids of 3
    blocks, whose grid-stride loops then repeat (CARAFE_TEST_CUDA_MAX_BLOCKS=3),
    at a shape where both loops of every kernel run: the same bits as the
    default launch (32-bit, full grid; compared with the CPU op above), since
    each result element is summed by one thread in the same order whatever
    the index width and the grid."""
    assert_both_loops_taken(1, 32, 24, 80, k, 2, s)
    f, m, go = random_inputs(
        1, 32, 24, 80, k, 2, s, dtype=dtype, device="cuda", with_grad_output=True
    )

    def run():
        return (carafe.carafe(f, m, k, 2, s), *torch.ops.carafe.carafe_backward(go, f, m, k, 2, s))

    default = run()
    for what, switches in SWITCHES.items():
        with monkeypatch.context() as patch:
            _set_switches(patch, switches)
            for name, a, b in zip(("output", "grad_features", "grad_masks"), run(), default):
                assert torch.equal(a, b), (what, name)


def cuda_kernel_launches(fn, folder):
    """(name, grid) of each carafe kernel that fn() launches, from the
    profiler's trace (names demangled, grid as [x, y, z])."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    trace = folder / "trace.json"
    prof.export_chrome_trace(str(trace))
    events = json.loads(trace.read_text())["traceEvents"]
    return [
        (e["name"], e.get("args", {}).get("grid"))
        for e in events
        if str(e.get("cat", "")).lower() == "kernel" and "carafe" in e.get("name", "")
    ]


@requires_cuda
@pytest.mark.cuda
def test_cuda_test_switches_reach_the_launch(monkeypatch, tmp_path):
    """What the switches change, as the GPU saw it: the kernels' index type
    and their grids."""
    f, m, go = random_inputs(
        1, 32, 24, 80, 5, 1, 2, dtype=torch.float32, device="cuda", with_grad_output=True
    )

    def run():
        carafe.carafe(f, m, 5, 1, 2)
        torch.ops.carafe.carafe_backward(go, f, m, 5, 1, 2)

    default = cuda_kernel_launches(run, tmp_path)
    assert len(default) == 3, default
    assert all("<float, int, 5, 2>" in name and grid[0] > 3 for name, grid in default), default
    _set_switches(monkeypatch, SWITCHES["both"])
    switched = cuda_kernel_launches(run, tmp_path)
    assert len(switched) == 3, switched
    assert all("<float, long, 5, 2>" in name and grid == [3, 1, 1] for name, grid in switched), (
        switched
    )


@requires_cuda
@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("k", [3, 5, 7])
def test_cuda_misaligned_inputs(dtype, k):
    """Masks and grad_output one element off alignment (contiguous views):
    the CUDA launch code must not read them in pairs (a misaligned wide
    access faults) and gives the same bits as with aligned inputs."""
    f, m, go = random_inputs(
        2, 24, 11, 13, k, 2, 2, dtype=dtype, device="cuda", with_grad_output=True
    )
    m2, go2 = misaligned_copy(m), misaligned_copy(go)
    assert m2.data_ptr() % (2 * m.element_size()) != 0
    assert torch.equal(carafe.carafe(f, m2, k, 2, 2), carafe.carafe(f, m, k, 2, 2))
    for a, b in zip(
        torch.ops.carafe.carafe_backward(go2, f, m2, k, 2, 2),
        torch.ops.carafe.carafe_backward(go, f, m, k, 2, 2),
    ):
        assert torch.equal(a, b)


@requires_cuda
@pytest.mark.cuda
def test_cuda_other_stream_and_device_guard():
    features, masks = make_inputs(
        N=2, C=8, H=5, W=7, k=5, G=2, s=2, dtype=torch.float32, device="cuda"
    )
    expected = carafe.carafe(features, masks, 5, 2, 2)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        out = carafe.carafe(features, masks, 5, 2, 2)
    torch.cuda.current_stream().wait_stream(stream)
    torch.testing.assert_close(out, expected, rtol=0, atol=0)


@pytest.mark.parametrize("device", devices())
def test_autocast(device):
    """Mixed precision: conv outputs in the autocast dtype, softmax kernels in
    float32; the op runs in the autocast dtype (accumulating in float32)."""
    dtype = torch.bfloat16 if device == "cpu" else torch.float16
    pack = carafe.CARAFEPack(channels=16, scale_factor=2, compressed_channels=8).to(device)
    torch.nn.init.normal_(pack.content_encoder.weight, std=0.3)
    x = torch.randn(2, 16, 6, 7, device=device)
    with torch.autocast(device_type=device, dtype=dtype):
        out = pack(x)
    assert out.dtype == dtype
    expected = pack(x)
    torch.testing.assert_close(out.float(), expected, rtol=5e-2, atol=5e-2)
    out.float().sum().backward()
    assert pack.content_encoder.weight.grad is not None


@requires_cuda
@pytest.mark.cuda
def test_cuda_64bit_indices_and_repeating_grid_stride():
    """An output of 2^31 elements (past fits_int32's 2^30: the 64-bit kernels)
    with 8 groups, so 2^31 threads of work for a grid of at most 2^28: every
    grid-stride loop repeats. Each channel alone (2^28 elements) takes the
    32-bit path; the two must agree exactly (k=1: one product per output)."""
    torch.manual_seed(0)
    N, C, G, H, W, k, s = 1, 8, 8, 8192, 8192, 1, 2
    f = torch.randn(N, C, H, W, device="cuda", dtype=torch.float16)
    m = torch.rand(N, G, s * H, s * W, device="cuda", dtype=torch.float16)
    out = carafe.carafe(f, m, k, G, s)
    assert out.numel() == 2**31
    go = torch.randn_like(out)
    gf, gm = torch.ops.carafe.carafe_backward(go, f, m, k, G, s)
    for c in range(C):
        sl = slice(c, c + 1)
        assert torch.equal(out[:, sl], carafe.carafe(f[:, sl], m[:, sl], k, 1, s))
        gf_c, gm_c = torch.ops.carafe.carafe_backward(
            go[:, sl].contiguous(), f[:, sl], m[:, sl], k, 1, s
        )
        assert torch.equal(gf[:, sl], gf_c) and torch.equal(gm[:, sl], gm_c)
