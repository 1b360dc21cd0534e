"""carafe.window_similarity: the reference against the formula and against
CARAFE's gradients, the op against the reference over shapes, dtypes,
layouts and devices, gradcheck, opcheck, torch.compile, fake tensors,
argument errors, and the SAPA-style composition softmax -> carafe."""

import itertools

import pytest
import torch
from conftest import devices, requires_cuda

import carafe
from carafe.reference import carafe_reference, window_similarity_reference

# Tolerances against a float64 reference, per dtype, as in test_ops.py
# (similarities are sums of C/G products of N(0, 1) values: O(1) to O(3)).
TOL = {
    torch.float64: dict(rtol=1e-10, atol=1e-10),
    torch.float32: dict(rtol=1e-5, atol=1e-5),
    torch.float16: dict(rtol=1e-2, atol=1e-2),
    torch.bfloat16: dict(rtol=4e-2, atol=4e-2),
}


def make_qk(N=2, C=4, H=4, W=5, s=2, dtype=torch.float64, device="cpu", seed=0, grad=False):
    """query (N, C, s*H, s*W) and key (N, C, H, W) ~ N(0, 1), drawn in float64
    on the CPU (the same values on every device and dtype)."""
    g = torch.Generator().manual_seed(seed)
    key = torch.randn(N, C, H, W, generator=g, dtype=torch.float64)
    query = torch.randn(N, C, H * s, W * s, generator=g, dtype=torch.float64)
    out = [t.to(device=device, dtype=dtype).requires_grad_(grad) for t in (query, key)]
    return out[0], out[1]


def similarity_loops(query, key, k, G, s):
    """sim[n, g*k*k + ky*k + kx, p, q] = sum_{c in group g} query[n, c, p, q]
    * key[n, c, p//s + ky - r, q//s + kx - r], outside taps 0."""
    N, C, H, W = key.shape
    r, cpg = k // 2, C // G
    q, kt = query.tolist(), key.tolist()
    out = torch.zeros(N, G * k * k, H * s, W * s, dtype=torch.float64)
    for n, g, p, x in itertools.product(range(N), range(G), range(H * s), range(W * s)):
        for ky, kx in itertools.product(range(k), range(k)):
            y, z = p // s + ky - r, x // s + kx - r
            if 0 <= y < H and 0 <= z < W:
                out[n, g * k * k + ky * k + kx, p, x] = sum(
                    q[n][c][p][x] * kt[n][c][y][z] for c in range(g * cpg, (g + 1) * cpg)
                )
    return out


@pytest.mark.parametrize("k,G,s", [(1, 1, 1), (3, 2, 2), (5, 1, 3), (3, 1, 1)])
def test_reference_matches_formula(k, G, s):
    query, key = make_qk(N=1, C=4, H=3, W=4, s=s)
    torch.testing.assert_close(
        window_similarity_reference(query, key, k, G, s), similarity_loops(query, key, k, G, s)
    )


@pytest.mark.parametrize("k,G,s", [(3, 2, 2), (5, 1, 3), (1, 1, 1)])
def test_reference_is_carafes_mask_gradient(k, G, s):
    """The identities the op is built on, checked on the pure-PyTorch
    references alone: sim is CARAFE's mask gradient at grad_output = query,
    features = key; its gradients are CARAFE's reassembly of key with
    kernels grad_sim, and CARAFE's feature gradient for masks grad_sim."""
    query, key = make_qk(N=2, C=4, H=4, W=5, s=s, grad=True)
    g = torch.Generator().manual_seed(1)
    sim = window_similarity_reference(query, key, k, G, s)
    grad_sim = torch.randn(sim.shape, generator=g, dtype=torch.float64)
    grad_query, grad_key = torch.autograd.grad(sim, (query, key), grad_sim)

    masks = torch.zeros_like(grad_sim, requires_grad=True)
    features = key.detach().requires_grad_()
    (grad_masks,) = torch.autograd.grad(
        carafe_reference(features, masks, k, G, s), masks, query.detach()
    )
    torch.testing.assert_close(sim, grad_masks)
    torch.testing.assert_close(grad_query, carafe_reference(key.detach(), grad_sim, k, G, s))
    (grad_features,) = torch.autograd.grad(
        carafe_reference(features, grad_sim, k, G, s), features, query.detach()
    )
    torch.testing.assert_close(grad_key, grad_features)


def check_against_reference(query, key, k, G, s, tol=None):
    """Forward and both gradients of the op against the float64 reference
    on the same (rounded) inputs; returns the largest errors."""
    tol = tol or TOL[key.dtype]
    q = query.detach().clone().requires_grad_()
    kt = key.detach().clone().requires_grad_()
    sim = carafe.window_similarity(q, kt, k, G, s)
    N, C, H, W = key.shape
    assert sim.shape == (N, G * k * k, H * s, W * s)
    assert sim.dtype == key.dtype and sim.device == key.device and sim.is_contiguous()
    g = torch.Generator().manual_seed(2)
    # rounded to the dtype first, so that the reference sees the op's values
    grad_sim = torch.randn(sim.shape, generator=g, dtype=torch.float64).to(key.dtype)
    sim.backward(grad_sim.to(sim.device))
    grad_sim = grad_sim.double()

    q64 = query.detach().double().cpu().requires_grad_()
    k64 = key.detach().double().cpu().requires_grad_()
    ref = window_similarity_reference(q64, k64, k, G, s)
    ref.backward(grad_sim)
    errors = {}
    for name, got, want in (
        ("sim", sim.detach(), ref.detach()),
        ("grad_query", q.grad, q64.grad),
        ("grad_key", kt.grad, k64.grad),
    ):
        got = got.cpu().double()
        torch.testing.assert_close(got, want, **tol, msg=name)
        errors[name] = (got - want).abs().max().item() if want.numel() else 0.0
    return errors


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("k,G,s", list(itertools.product([1, 3, 5], [1, 2], [1, 2, 3])))
def test_matches_reference(device, k, G, s):
    query, key = make_qk(N=2, C=4, H=4, W=5, s=s, device=device)
    check_against_reference(query, key, k, G, s)


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("k,G,s", [(5, 1, 2), (3, 2, 3)])
def test_dtypes(device, dtype, k, G, s):
    query, key = make_qk(N=2, C=8, H=5, W=7, s=s, dtype=dtype, device=device)
    check_against_reference(query, key, k, G, s)


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("layout", ["channels_last", "sliced", "transposed", "expanded_batch"])
def test_layouts(device, layout):
    k, G, s = 3, 2, 2
    query, key = make_qk(N=2, C=8, H=5, W=6, s=s, device=device)
    if layout == "channels_last":
        query = query.contiguous(memory_format=torch.channels_last)
        key = key.contiguous(memory_format=torch.channels_last)
    elif layout == "sliced":
        # every other channel and row of larger tensors: strided, offset storage
        big_q, big_k = make_qk(N=2, C=16, H=10, W=6, s=s, device=device, seed=3)
        query, key = big_q[:, 1::2, ::2][:, :, :10], big_k[:, 1::2, ::2]
        assert not query.is_contiguous() and not key.is_contiguous()
    elif layout == "transposed":
        query = query.transpose(2, 3).contiguous().transpose(2, 3)
        key = key.transpose(2, 3).contiguous().transpose(2, 3)
    elif layout == "expanded_batch":
        query = query[:1].expand(2, -1, -1, -1)
        key = key[:1].expand(2, -1, -1, -1)
    check_against_reference(query, key, k, G, s)
    # The result does not depend on the layout.
    torch.testing.assert_close(
        carafe.window_similarity(query, key, k, G, s),
        carafe.window_similarity(query.contiguous(), key.contiguous(), k, G, s),
        rtol=0,
        atol=0,
    )


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("shape", [(0, 4, 3, 4), (2, 0, 3, 4), (2, 4, 0, 4), (2, 4, 3, 0)])
def test_empty(device, shape):
    N, C, H, W = shape
    G = 1 if C == 0 else 2
    query, key = make_qk(N=N, C=C, H=H, W=W, s=2, device=device, grad=True)
    sim = carafe.window_similarity(query, key, 3, G, 2)
    assert sim.shape == (N, G * 9, 2 * H, 2 * W)
    sim.sum().backward()
    assert query.grad.shape == query.shape and key.grad.shape == key.shape
    assert not query.grad.any() and not key.grad.any()


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_nonfinite_query_on_taps_outside_the_key_gives_zero(device, dtype):
    """Outside taps are not read: their similarity is 0 even where the query
    is inf or NaN (as CARAFE's mask gradient there is 0)."""
    k, G, s = 5, 1, 2
    query, key = make_qk(N=1, C=2, H=4, W=5, s=s, dtype=dtype, device=device)
    query[:, 0, 0, 0] = float("inf")
    query[:, 1, -1, -1] = float("nan")
    sim = carafe.window_similarity(query, key, k, G, s)
    ref = window_similarity_reference(query.double(), key.double(), k, G, s)
    torch.testing.assert_close(sim.double(), ref, **TOL[dtype], equal_nan=True)
    # tap (0, 0) of the top-left pixel and tap (4, 4) of the bottom-right one
    assert sim[0, 0, 0, 0] == 0 and sim[0, k * k - 1, -1, -1] == 0
    assert sim[0, k * k // 2, 0, 0].isinf() and sim[0, k * k // 2, -1, -1].isnan()


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("k,G,s", [(3, 2, 2), (1, 1, 3), (3, 1, 1)])
def test_gradcheck(device, k, G, s):
    """Gradients and second derivatives (the backward is made of CARAFE's
    differentiable ops); small, gradgradcheck builds dense Jacobians."""
    query, key = make_qk(N=1, C=2 * G, H=3, W=3, s=s, device=device, grad=True)
    fn = lambda q, kt: carafe.window_similarity(q, kt, k, G, s)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (query, key))
    assert torch.autograd.gradgradcheck(fn, (query, key))


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_opcheck(device, dtype):
    query, key = make_qk(N=2, C=4, H=3, W=4, s=2, dtype=dtype, device=device, grad=True)
    torch.library.opcheck(torch.ops.carafe.window_similarity.default, (query, key, 3, 2, 2))


@pytest.mark.parametrize("device", devices())
def test_meta_and_fake_tensors(device):
    from torch._subclasses.fake_tensor import FakeTensorMode

    query, key = make_qk(N=2, C=4, H=3, W=4, s=2, dtype=torch.float32, device=device)
    meta = carafe.window_similarity(query.to("meta"), key.to("meta"), 5, 2, 2)
    assert meta.shape == (2, 50, 6, 8) and meta.dtype == torch.float32
    assert meta.device.type == "meta"
    with FakeTensorMode() as mode:
        fq, fk = mode.from_tensor(query), mode.from_tensor(key)
        fake = carafe.window_similarity(fq, fk, 5, 2, 2)
        assert fake.shape == (2, 50, 6, 8) and fake.device == query.device


def test_symbolic_sizes():
    """Traced with symbolic sizes, the op is one node (the checks become
    guards), and a bad call fails with the op's message."""
    from torch.fx.experimental.proxy_tensor import make_fx

    query, key = make_qk(N=2, C=4, H=3, W=4, s=2, dtype=torch.float32)

    def op(q, kt):
        return torch.ops.carafe.window_similarity(q, kt, 3, 2, 2)

    graph = make_fx(op, tracing_mode="symbolic")(query, key)
    targets = [n.target for n in graph.graph.nodes if n.op == "call_function"]
    assert targets == [torch.ops.carafe.window_similarity.default]
    with pytest.raises(ValueError, match=r"window_similarity: query must have spatial size"):
        make_fx(op, tracing_mode="symbolic")(query[:, :, :5], key)


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
def test_compile_fullgraph(device, backend):
    torch._dynamo.reset()
    k, G, s = 3, 2, 2
    query, key = make_qk(N=2, C=4, H=4, W=5, s=s, dtype=torch.float32, device=device, grad=True)

    def fn(q, kt):
        return (carafe.window_similarity(q * 2, kt, k, G, s) + 1).relu()

    compiled = torch.compile(fn, fullgraph=True, backend=backend)
    out = compiled(query, key)
    grads = torch.autograd.grad(out.sum(), (query, key))
    expected = fn(query, key)
    expected_grads = torch.autograd.grad(expected.sum(), (query, key))
    torch.testing.assert_close(out, expected)
    for got, want in zip(grads, expected_grads):
        torch.testing.assert_close(got, want)


class SimilarityUpsampler(torch.nn.Module):
    """A SAPA-style upsampler (Lu et al., arXiv 2209.12866, without its gate):
    kernels from the similarity of a high-resolution guide's embedding with
    the embedded low-resolution window, softmax-normalised per group over
    the k*k taps, then CARAFE's reassembly of x (N, C, H, W) -> (N, C, s*H, s*W)."""

    def __init__(self, channels, guide_channels, embed, k, G, s):
        super().__init__()
        self.query = torch.nn.Conv2d(guide_channels, embed, 1)
        self.key = torch.nn.Conv2d(channels, embed, 1)
        self.args = (k, G, s)

    def forward(self, x, guide, similarity=carafe.window_similarity, reassemble=carafe.carafe):
        k, G, s = self.args
        sim = similarity(self.query(guide), self.key(x), k, G, s)
        masks = sim.unflatten(1, (G, k * k)).softmax(dim=2).flatten(1, 2)
        return reassemble(x, masks, k, G, s)


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("k,G,s", [(5, 1, 2), (3, 2, 3)])
def test_composes_with_softmax_and_carafe(device, k, G, s):
    """window_similarity -> softmax per group -> carafe, forward and
    backward through both inputs and the embeddings, against the same
    pipeline on the two references."""
    torch.manual_seed(0)
    up = SimilarityUpsampler(8, 6, 4, k, G, s).double().to(device)
    g = torch.Generator().manual_seed(4)
    x = torch.randn(2, 8, 5, 6, generator=g, dtype=torch.float64).to(device).requires_grad_()
    guide = torch.randn(2, 6, 5 * s, 6 * s, generator=g, dtype=torch.float64)
    guide = guide.to(device).requires_grad_()
    leaves = [x, guide, *up.parameters()]

    out = up(x, guide)
    assert out.shape == (2, 8, 5 * s, 6 * s)
    grads = torch.autograd.grad(out.square().sum(), leaves)
    ref = up(x, guide, window_similarity_reference, carafe_reference)
    ref_grads = torch.autograd.grad(ref.square().sum(), leaves)
    torch.testing.assert_close(out, ref, **TOL[torch.float64])
    for got, want in zip(grads, ref_grads):
        torch.testing.assert_close(got, want, **TOL[torch.float64])


def test_composition_compiles_without_graph_break():
    torch._dynamo.reset()
    torch.manual_seed(0)
    up = SimilarityUpsampler(8, 6, 4, 3, 2, 2)
    x, guide = torch.randn(2, 8, 5, 6), torch.randn(2, 6, 10, 12)
    compiled = torch.compile(up, fullgraph=True, backend="aot_eager")
    out = compiled(x, guide)
    torch.testing.assert_close(out, up(x, guide))
    out.sum().backward()
    assert up.query.weight.grad is not None and up.key.weight.grad is not None


def test_autocast():
    """Under autocast both inputs run in the autocast dtype (a float32 query
    from a conv outside the region and a bfloat16 key, say)."""
    query, key = make_qk(N=2, C=4, H=4, W=5, s=2, dtype=torch.float32)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        sim = carafe.window_similarity(query, key.bfloat16(), 3, 2, 2)
    assert sim.dtype == torch.bfloat16
    expected = carafe.window_similarity(query, key, 3, 2, 2)
    torch.testing.assert_close(sim.float(), expected, **TOL[torch.bfloat16])


@requires_cuda
@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_cuda_agrees_with_cpu(dtype):
    query, key = make_qk(N=2, C=16, H=13, W=17, s=2, dtype=dtype)
    results = []
    for device in ("cpu", "cuda"):
        q = query.to(device).requires_grad_()
        kt = key.to(device).requires_grad_()
        sim = carafe.window_similarity(q, kt, 5, 2, 2)
        sim.backward(torch.ones_like(sim))
        results.append([t.detach().cpu().double() for t in (sim, q.grad, kt.grad)])
    tol = {torch.float64: 1e-10, torch.float32: 1e-4, torch.float16: 1e-2, torch.bfloat16: 5e-2}
    for name, a, b in zip(("sim", "grad_query", "grad_key"), *results):
        torch.testing.assert_close(b, a, rtol=tol[dtype], atol=tol[dtype], msg=name)


# Bad arguments: (query, key, k, G, s) edits of a good call, and the message
# after "window_similarity: ".
def good(**kw):
    args = dict(N=2, C=8, H=3, W=4, s=2, dtype=torch.float32)
    args.update(kw)
    query, key = make_qk(**args)
    return [query, key, 3, 2, args["s"]]


def with_(index, value, base=None):
    args = base or good()
    args[index] = value
    return args


CASES = {
    "even kernel_size": (with_(2, 4), "kernel_size must be an odd integer >= 1, got 4"),
    "negative kernel_size": (with_(2, -3), "kernel_size must be an odd integer >= 1, got -3"),
    "zero group_size": (with_(3, 0), "group_size must be an integer >= 1, got 0"),
    "zero scale_factor": (with_(4, 0), "scale_factor must be an integer >= 1, got 0"),
    "3-D key": (
        with_(1, torch.zeros(8, 3, 4)),
        "key must be a 4-D tensor (N, C, H, W), got shape [8, 3, 4]",
    ),
    "5-D query": (
        with_(0, torch.zeros(2, 8, 6, 8, 1)),
        "query must be a 4-D tensor (N, C, H*scale_factor, W*scale_factor), "
        "got shape [2, 8, 6, 8, 1]",
    ),
    "integer key": (
        with_(1, torch.zeros(2, 8, 3, 4, dtype=torch.int32)),
        "key must be float16, bfloat16, float32 or float64, got torch.int32",
    ),
    "dtype mismatch": (
        with_(0, torch.zeros(2, 8, 6, 8, dtype=torch.float64)),
        "query must have the dtype of key (torch.float32), got torch.float64",
    ),
    "G does not divide C": (
        with_(3, 3),
        "group_size must divide the number of channels C=8, got group_size=3",
    ),
    "k*k*G overflows int64": (
        with_(2, 2**32 + 1),
        "kernel_size*kernel_size*group_size must fit in int64, got "
        f"kernel_size={2**32 + 1}, group_size=2",
    ),
    "batch mismatch": (
        with_(0, torch.zeros(3, 8, 6, 8)),
        "query must have the batch size of key (2), got 3",
    ),
    "channel mismatch": (
        with_(0, torch.zeros(2, 6, 6, 8)),
        "query must have the number of channels of key (8), got 6",
    ),
    "query size": (
        with_(0, torch.zeros(2, 8, 6, 7)),
        "query must have spatial size (H*scale_factor, W*scale_factor)=(6, 8), got (6, 7)",
    ),
    "query size for another scale": (
        with_(4, 3),
        "query must have spatial size (H*scale_factor, W*scale_factor)=(9, 12), got (6, 8)",
    ),
}


def first_line(info):
    return str(info.value).splitlines()[0]


@pytest.mark.parametrize("case", list(CASES))
def test_bad_arguments(case):
    """The public function, the op and the fake kernel (meta tensors) raise
    the same ValueError, naming the argument and the expected value."""
    args, message = CASES[case]
    to_meta = [a.to("meta") if isinstance(a, torch.Tensor) else a for a in args]
    for fn, call_args in (
        (carafe.window_similarity, args),
        (torch.ops.carafe.window_similarity, args),
        (torch.ops.carafe.window_similarity, to_meta),
    ):
        with pytest.raises(ValueError) as info:
            fn(*call_args)
        assert first_line(info) == "window_similarity: " + message


def test_device_mismatch():
    query, key, k, G, s = good()
    with pytest.raises(
        ValueError, match=r"window_similarity: query must be on the device of key \(cpu\), got meta"
    ):
        carafe.window_similarity(query.to("meta"), key, k, G, s)


@pytest.mark.parametrize(
    "index,value,name",
    [
        (2, 3.0, "kernel_size"),
        (3, True, "group_size"),
        (4, "2", "scale_factor"),
        (0, [[1.0]], "query"),
        (1, None, "key"),
    ],
)
def test_argument_types(index, value, name):
    with pytest.raises(TypeError, match=f"window_similarity: {name} must be"):
        carafe.window_similarity(*with_(index, value))


def test_scale_factor_must_fit_in_int64():
    with pytest.raises(ValueError, match="window_similarity: scale_factor must fit in int64"):
        carafe.window_similarity(*with_(4, 2**63))
