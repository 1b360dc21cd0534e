"""Malformed calls raise a ValueError/TypeError that names the argument and the
expected value. The op's checks are written once, in C++: the kernels run
them, and the fake kernels through carafe::check_args, so both raise the same
errors, on meta tensors, on fake tensors and with symbolic sizes."""

import pytest
import torch
from conftest import make_inputs

import carafe


def good(**kw):
    args = dict(N=2, C=8, H=3, W=4, k=5, G=2, s=2, dtype=torch.float32)
    args.update(kw)
    f, m = make_inputs(**args)
    return [f, m, args["k"], args["G"], args["s"]]


def with_(index, value, base=None):
    args = base or good()
    args[index] = value
    return args


CASES = {
    "even kernel_size": (with_(2, 4), "kernel_size must be an odd integer >= 1, got 4"),
    "negative kernel_size": (with_(2, -3), "kernel_size must be an odd integer >= 1, got -3"),
    "zero group_size": (with_(3, 0), "group_size must be an integer >= 1, got 0"),
    "zero scale_factor": (with_(4, 0), "scale_factor must be an integer >= 1, got 0"),
    "3-D features": (
        with_(0, torch.zeros(8, 3, 4)),
        "features must be a 4-D tensor (N, C, H, W), got shape [8, 3, 4]",
    ),
    "5-D masks": (
        with_(1, torch.zeros(2, 50, 6, 8, 1)),
        "masks must be a 4-D tensor (N, kernel_size*kernel_size*group_size, "
        "H*scale_factor, W*scale_factor), got shape [2, 50, 6, 8, 1]",
    ),
    "integer features": (
        with_(0, torch.zeros(2, 8, 3, 4, dtype=torch.int32)),
        "features must be float16, bfloat16, float32 or float64, got torch.int32",
    ),
    "dtype mismatch": (
        with_(1, torch.zeros(2, 50, 6, 8, dtype=torch.float64)),
        "masks must have the dtype of features (torch.float32), got torch.float64",
    ),
    "G does not divide C": (
        good(G=3, C=9)[:3] + [2] + [2],
        "group_size must divide the number of feature channels C=9, got group_size=2",
    ),
    "wrong mask channels": (
        with_(1, torch.zeros(2, 49, 6, 8)),
        "masks must have kernel_size*kernel_size*group_size=50 channels, got 49",
    ),
    "batch mismatch": (
        with_(1, torch.zeros(3, 50, 6, 8)),
        "masks must have the batch size of features (2), got 3",
    ),
    "mask size": (
        with_(1, torch.zeros(2, 50, 6, 7)),
        "masks must have spatial size (H*scale_factor, W*scale_factor)=(6, 8), got (6, 7)",
    ),
    "mask size for another scale": (
        with_(4, 3),
        "masks must have spatial size (H*scale_factor, W*scale_factor)=(9, 12), got (6, 8)",
    ),
}


def to_meta(args):
    return [a.to("meta") if isinstance(a, torch.Tensor) else a for a in args]


@pytest.mark.parametrize("case", list(CASES))
def test_public_function(case):
    args, message = CASES[case]
    with pytest.raises(ValueError) as info:
        carafe.carafe(*args)
    assert str(info.value).splitlines()[0] == "carafe: " + message


@pytest.mark.parametrize("case", list(CASES))
def test_kernel_and_fake_kernel_agree(case):
    args, message = CASES[case]
    with pytest.raises(ValueError) as real:
        torch.ops.carafe.carafe(*args)
    with pytest.raises(ValueError) as fake:
        torch.ops.carafe.carafe(*to_meta(args))
    assert str(real.value).splitlines()[0] == "carafe: " + message
    assert str(fake.value).splitlines()[0] == "carafe: " + message


def test_device_mismatch():
    f, m, k, G, s = good()
    with pytest.raises(
        ValueError,
        match=r"masks must be on the device of features \(cpu\), "
        r"got meta",
    ):
        carafe.carafe(f, m.to("meta"), k, G, s)


@pytest.mark.parametrize(
    "index,value,name",
    [
        (2, 5.0, "kernel_size"),
        (3, True, "group_size"),
        (4, "2", "scale_factor"),
        (0, [[1.0]], "features"),
    ],
)
def test_argument_types(index, value, name):
    with pytest.raises(TypeError, match=f"carafe: {name} must be"):
        carafe.carafe(*with_(index, value))


BACKWARD_CASES = {
    "grad_output shape": (
        lambda f, m: torch.zeros(2, 8, 6, 7),
        "grad_output must have shape [2, 8, 6, 8], got [2, 8, 6, 7]",
    ),
    "grad_output dtype": (
        lambda f, m: torch.zeros(2, 8, 6, 8, dtype=torch.float64),
        "grad_output must have the dtype of features (torch.float32), got torch.float64",
    ),
}


@pytest.mark.parametrize("case", list(BACKWARD_CASES))
def test_backward_op_checks(case):
    make_grad, message = BACKWARD_CASES[case]
    f, m, k, G, s = good()
    go = make_grad(f, m)
    with pytest.raises(ValueError) as real:
        torch.ops.carafe.carafe_backward(go, f, m, k, G, s)
    with pytest.raises(ValueError) as fake:
        torch.ops.carafe.carafe_backward(*to_meta([go, f, m]), k, G, s)
    assert str(real.value).splitlines()[0] == "carafe: " + message
    assert str(fake.value).splitlines()[0] == "carafe: " + message


def test_nothing_is_modified_on_error():
    f, m, k, G, s = good()
    f0, m0 = f.clone(), m.clone()
    with pytest.raises(ValueError):
        carafe.carafe(f, m[:, :-1], k, G, s)
    assert torch.equal(f, f0) and torch.equal(m, m0)


@pytest.mark.parametrize("case", list(CASES))
def test_fake_tensors_raise_the_kernels_errors(case):
    """Under torch.compile's FakeTensorMode the fake kernel runs the C++
    checks on fake tensors, which keep their device (cpu, not meta)."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    args, message = CASES[case]
    with FakeTensorMode() as mode:
        fake = [mode.from_tensor(a) if isinstance(a, torch.Tensor) else a for a in args]
        with pytest.raises(ValueError) as info:
            torch.ops.carafe.carafe(*fake)
    assert str(info.value).splitlines()[0] == "carafe: " + message


def test_fake_tensors_keep_their_devices():
    from torch._subclasses.fake_tensor import FakeTensorMode

    f, m, k, G, s = good()
    meta_masks, meta_grad = m.to("meta"), torch.zeros(2, 8, 6, 8, device="meta")
    with FakeTensorMode() as mode:
        f, m, meta_masks, meta_grad = map(mode.from_tensor, (f, m, meta_masks, meta_grad))
        with pytest.raises(
            ValueError,
            match=r"masks must be on the device of features "
            r"\(cpu\), got meta",
        ):
            torch.ops.carafe.carafe(f, meta_masks, k, G, s)
        with pytest.raises(
            ValueError,
            match=r"grad_output must be on the device of features "
            r"\(cpu\), got meta",
        ):
            torch.ops.carafe.carafe_backward(meta_grad, f, m, k, G, s)


def test_symbolic_sizes():
    """Traced with symbolic sizes (torch.export, dynamic torch.compile), the
    checks become guards: a good call traces to the op alone (the check op
    leaves no node), a bad one fails with the kernels' message."""
    from torch.fx.experimental.proxy_tensor import make_fx

    f, m, k, G, s = good()

    def op(a, b):
        return torch.ops.carafe.carafe(a, b, k, G, s)

    graph = make_fx(op, tracing_mode="symbolic")(f, m)
    targets = [n.target for n in graph.graph.nodes if n.op == "call_function"]
    assert targets == [torch.ops.carafe.carafe.default]
    with pytest.raises(
        ValueError,
        match=r"carafe: masks must have spatial size \(H\*scale_factor, "
        r"W\*scale_factor\)=",
    ):
        make_fx(op, tracing_mode="symbolic")(f, m[:, :, :5])
    with pytest.raises(
        ValueError, match="carafe: group_size must divide the number of feature channels"
    ):
        make_fx(lambda a, b: torch.ops.carafe.carafe(a, b, k, 3, s), tracing_mode="symbolic")(
            f, torch.zeros(2, 75, 6, 8)
        )


def test_check_op():
    """carafe::check_args, the checks the fake kernels run: nothing for good
    arguments, the op's errors otherwise."""
    f, m, k, G, s = good()
    assert torch.ops.carafe.check_args(f, m, k, G, s) is None
    assert torch.ops.carafe.check_args(f, m, k, G, s, torch.zeros(2, 8, 6, 8)) is None
    with pytest.raises(ValueError, match="carafe: grad_output must have shape"):
        torch.ops.carafe.check_args(f, m, k, G, s, torch.zeros(2, 8, 6, 7))
    for args, message in CASES.values():
        with pytest.raises(ValueError) as info:
            torch.ops.carafe.check_args(*args)
        assert str(info.value).splitlines()[0] == "carafe: " + message


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(kernel_size=4, group_size=1, scale_factor=2), "kernel_size"),
        (dict(kernel_size=5, group_size=0, scale_factor=2), "group_size"),
        (dict(kernel_size=5, group_size=1, scale_factor=0), "scale_factor"),
    ],
)
def test_module_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        carafe.CARAFE(**kwargs)


@pytest.mark.parametrize(
    "kwargs,error,message",
    [
        (
            dict(kernel_size=4, group_size=1, scale_factor=2),
            ValueError,
            "kernel_size must be an odd integer >= 1, got 4",
        ),
        (
            dict(kernel_size=-1, group_size=1, scale_factor=2),
            ValueError,
            "kernel_size must be an odd integer >= 1, got -1",
        ),
        (
            dict(kernel_size=5, group_size=0, scale_factor=2),
            ValueError,
            "group_size must be an integer >= 1, got 0",
        ),
        (
            dict(kernel_size=5, group_size=1, scale_factor=0),
            ValueError,
            "scale_factor must be an integer >= 1, got 0",
        ),
        (
            dict(kernel_size=5.0, group_size=1, scale_factor=2),
            TypeError,
            "kernel_size must be an int, got float 5.0",
        ),
        (
            dict(kernel_size=5, group_size=True, scale_factor=2),
            TypeError,
            "group_size must be an int, got bool True",
        ),
        (
            dict(kernel_size=5, group_size=1, scale_factor="2"),
            TypeError,
            "scale_factor must be an int, got str '2'",
        ),
    ],
)
def test_module_messages(kwargs, error, message):
    with pytest.raises(error) as info:
        carafe.CARAFE(**kwargs)
    assert str(info.value) == "CARAFE: " + message


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(channels=8, scale_factor=2, up_kernel=4), "up_kernel"),
        (dict(channels=8, scale_factor=2, up_group=3), "up_group"),
        (dict(channels=8, scale_factor=0), "scale_factor"),
        (dict(channels=8, scale_factor=2, encoder_kernel=2), "encoder_kernel"),
    ],
)
def test_pack_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        carafe.CARAFEPack(**kwargs)


INT64_MAX = 2**63 - 1
# Sizes whose int64 products wrap round to the ones the tensors have: without
# an overflow check they pass the shape checks and the kernel reads far out of
# bounds. (2**63 - 3)**2 = 9 (mod 2**64), so k*k*G "matches" 9 mask channels.
OVERFLOW_CASES = {
    "k*k*G wraps to 9": (
        [1, 1, 4, 4],
        [1, 9, 4, 4],
        2**63 - 3,
        1,
        1,
        "kernel_size*kernel_size*group_size must fit in int64, got "
        f"kernel_size={2**63 - 3}, group_size=1",
    ),
    "k*k*G overflows": (
        [1, 0, 4, 4],
        [1, 9, 8, 8],
        3,
        2**62,
        2,
        "kernel_size*kernel_size*group_size must fit in int64, got "
        f"kernel_size=3, group_size={2**62}",
    ),
    "k*k*G overflows through G": (
        [1, 0, 4, 4],
        [1, 9, 8, 8],
        2**31 + 1,
        2**3,
        2,
        "kernel_size*kernel_size*group_size must fit in int64, got "
        f"kernel_size={2**31 + 1}, group_size=8",
    ),
    "H*s wraps": (
        [1, 1, 2, 2],
        [1, 1, 0, 0],
        1,
        1,
        2**63,
        f"H*scale_factor and W*scale_factor must fit in int64, got H=2, W=2, scale_factor={2**63}",
    ),
    "H*s overflows": (
        [1, 1, 3, 1],
        [1, 1, 3, 1],
        1,
        1,
        2**62,
        f"H*scale_factor and W*scale_factor must fit in int64, got H=3, W=1, scale_factor={2**62}",
    ),
}


@pytest.mark.parametrize("case", list(OVERFLOW_CASES))
def test_sizes_whose_products_overflow_int64(case):
    f_shape, m_shape, k, G, s, message = OVERFLOW_CASES[case]
    f, m = torch.zeros(f_shape), torch.zeros(m_shape)
    if s > INT64_MAX:  # the schema's int is int64: the Python wrapper says so first
        with pytest.raises(ValueError, match="carafe: scale_factor must fit in int64"):
            carafe.carafe(f, m, k, G, s)
        return
    with pytest.raises(ValueError) as public:
        carafe.carafe(f, m, k, G, s)
    with pytest.raises(ValueError) as real:
        torch.ops.carafe.carafe(f, m, k, G, s)
    with pytest.raises(ValueError) as fake:
        torch.ops.carafe.carafe(f.to("meta"), m.to("meta"), k, G, s)
    for info in (public, real, fake):
        assert str(info.value).splitlines()[0] == "carafe: " + message
    with pytest.raises(ValueError) as backward:
        torch.ops.carafe.carafe_backward(torch.zeros(1), f, m, k, G, s)
    assert str(backward.value).splitlines()[0] == "carafe: " + message


PACK_CASES = [
    (dict(channels=0, scale_factor=2), ValueError, "channels must be an integer >= 1, got 0"),
    (
        dict(channels=8, scale_factor=2, compressed_channels=0),
        ValueError,
        "compressed_channels must be an integer >= 1, got 0",
    ),
    (
        dict(channels=8, scale_factor=2, encoder_dilation=0),
        ValueError,
        "encoder_dilation must be an integer >= 1, got 0",
    ),
    (dict(channels=-8, scale_factor=2), ValueError, "channels must be an integer >= 1, got -8"),
    (
        dict(channels=8, scale_factor=2, up_group=-1),
        ValueError,
        "up_group must be an integer >= 1, got -1",
    ),
    (dict(channels=8.0, scale_factor=2), TypeError, "channels must be an int, got float 8.0"),
    (dict(channels=8, scale_factor=2.5), TypeError, "scale_factor must be an int, got float"),
    (
        dict(channels=8, scale_factor=2, up_kernel=True),
        TypeError,
        "up_kernel must be an int, got bool",
    ),
    (
        dict(channels=8, scale_factor=2, compressed_channels="64"),
        TypeError,
        "compressed_channels must be an int, got str",
    ),
]


@pytest.mark.parametrize("kwargs,error,message", PACK_CASES)
def test_pack_checks_every_argument(kwargs, error, message):
    with pytest.raises(error) as info:
        carafe.CARAFEPack(**kwargs)
    assert str(info.value).startswith("CARAFEPack: " + message)


@pytest.mark.parametrize("shape", [(8, 6, 5), (1, 2, 8, 6, 5), (2, 4, 6, 5), (8,)])
def test_pack_input_shape(shape):
    pack = carafe.CARAFEPack(8, 2)
    with pytest.raises(ValueError) as info:
        pack(torch.zeros(shape))
    assert str(info.value) == (
        f"CARAFEPack: x must be a 4-D tensor (N, C, H, W) with C=8, got shape {list(shape)}"
    )
    with pytest.raises(ValueError, match="CARAFEPack: x must be a 4-D tensor"):
        pack.predict_kernels(torch.zeros(shape))


def test_pack_input_type():
    with pytest.raises(TypeError, match="CARAFEPack: x must be a torch.Tensor, got list"):
        carafe.CARAFEPack(8, 2)([[1.0]])


def test_pack_up_group_must_divide_channels():
    with pytest.raises(ValueError) as info:
        carafe.CARAFEPack(8, 2, up_group=3)
    assert str(info.value) == "CARAFEPack: up_group must divide channels=8, got 3"
