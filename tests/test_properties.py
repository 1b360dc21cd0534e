"""Property-based test (hypothesis) of carafe.carafe against the reference:
forward and both gradients over random shapes, dtypes, memory layouts and
k / G / s, on every device present. The fixed-case tests in test_ops.py
cover the named corners; this one searches the space between them."""

import pytest
import torch

hypothesis = pytest.importorskip("hypothesis", reason="hypothesis is in the dev extra")
from conftest import devices  # noqa: E402
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import carafe  # noqa: E402
from carafe.reference import carafe_reference  # noqa: E402

TOL = {
    torch.float64: dict(rtol=1e-10, atol=1e-10),
    torch.float32: dict(rtol=1e-5, atol=1e-5),
    torch.float16: dict(rtol=1e-2, atol=1e-2),
    torch.bfloat16: dict(rtol=4e-2, atol=4e-2),
}


@st.composite
def problems(draw):
    k = draw(st.sampled_from([1, 3, 5, 7]))
    G = draw(st.sampled_from([1, 2, 4]))
    cpg = draw(st.integers(1, 3))
    s = draw(st.integers(1, 4))
    N = draw(st.integers(1, 2))
    H = draw(st.integers(1, 9))
    W = draw(st.integers(1, 40))  # past the CPU kernel's 16- and 32-column blocks
    dtype = draw(st.sampled_from(list(TOL)))
    layout = draw(st.sampled_from(["contiguous", "channels_last", "strided", "expanded"]))
    normalized = draw(st.booleans())
    seed = draw(st.integers(0, 2**31 - 1))
    return dict(
        N=N,
        C=G * cpg,
        H=H,
        W=W,
        k=k,
        G=G,
        s=s,
        dtype=dtype,
        layout=layout,
        normalized=normalized,
        seed=seed,
    )


def with_layout(t, layout):
    """The same values as t, in another memory layout."""
    if layout == "channels_last":
        return t.contiguous(memory_format=torch.channels_last)
    if layout == "strided":  # every other column of a twice-as-wide tensor
        wide = torch.zeros(*t.shape[:-1], 2 * t.shape[-1], dtype=t.dtype, device=t.device)
        wide[..., ::2] = t
        return wide[..., ::2]
    if layout == "expanded" and t.shape[0] == 1:  # a batch of 1 seen through a stride-0 view
        return t[:1].expand(1, *t.shape[1:])
    return t


@pytest.mark.parametrize("device", devices())
@settings(max_examples=60, deadline=None, derandomize=True)
@given(problem=problems())
def test_matches_reference(device, problem):
    p = problem
    g = torch.Generator().manual_seed(p["seed"])
    k, G, s = p["k"], p["G"], p["s"]
    features = torch.randn(p["N"], p["C"], p["H"], p["W"], generator=g, dtype=torch.float64)
    masks = torch.randn(p["N"], G, k * k, p["H"] * s, p["W"] * s, generator=g, dtype=torch.float64)
    if p["normalized"]:
        masks = masks.softmax(dim=2)
    masks = masks.reshape(p["N"], G * k * k, p["H"] * s, p["W"] * s)
    grad_output = torch.randn(
        p["N"], p["C"], p["H"] * s, p["W"] * s, generator=g, dtype=torch.float64
    )
    # the reference sees the values the op sees (rounded to the dtype)
    f = with_layout(features.to(device, p["dtype"]), p["layout"]).requires_grad_()
    m = with_layout(masks.to(device, p["dtype"]), p["layout"]).requires_grad_()
    out = carafe.carafe(f, m, k, G, s)
    out.backward(grad_output.to(device, p["dtype"]))
    f64 = f.detach().double().cpu().requires_grad_()
    m64 = m.detach().double().cpu().requires_grad_()
    ref = carafe_reference(f64, m64, k, G, s)
    ref.backward(grad_output.to(p["dtype"]).double())
    # raw (unnormalised) weights sum to O(k) values: scale the tolerance
    scale = 1.0 if p["normalized"] else float(k)
    tol = {key: value * scale for key, value in TOL[p["dtype"]].items()}
    assert out.shape == ref.shape and out.dtype == p["dtype"] and out.is_contiguous()
    torch.testing.assert_close(out.detach().double().cpu(), ref, **tol)
    torch.testing.assert_close(f.grad.double().cpu(), f64.grad, **tol)
    torch.testing.assert_close(m.grad.double().cpu(), m64.grad, **tol)
