"""carafe.convert_upsamplers: every rule of the conversion, on small models."""

import copy
import inspect
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import carafe
from carafe.convert import OPTIONS, ChannelDispatchCARAFE, convert_upsamplers


def convert_quietly(model, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return convert_upsamplers(model, *args, **kwargs)


class Ladder(nn.Module):
    """conv 3->8, up, conv 8->16, up (the same kind of layer, separate objects)."""

    def __init__(self, up1=None, up2=None):
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.up1 = up1 if up1 is not None else nn.Upsample(scale_factor=2)
        self.b = nn.Conv2d(8, 16, 1)
        self.up2 = up2 if up2 is not None else nn.Upsample(scale_factor=2, mode="bilinear")

    def forward(self, x):
        return self.up2(self.b(self.up1(self.a(x))))


def x_in(n=2, c=3, h=6, w=5, dtype=torch.float32):
    return torch.randn(n, c, h, w, generator=torch.Generator().manual_seed(0), dtype=dtype)


@pytest.mark.parametrize(
    "layer",
    [
        nn.Upsample(scale_factor=2),
        nn.Upsample(scale_factor=2.0, mode="bilinear", align_corners=False),
        nn.Upsample(scale_factor=(2, 2)),
        nn.UpsamplingNearest2d(scale_factor=2),
        nn.UpsamplingBilinear2d(scale_factor=2),
        nn.Upsample(scale_factor=3, mode="bicubic"),
    ],
    ids=["nearest", "bilinear-float", "tuple", "UpsamplingNearest2d", "UpsamplingBilinear2d", "x3"],
)
def test_integer_factor_layers_become_carafepacks_of_their_input_channels(layer):
    factor = int(
        layer.scale_factor[0] if isinstance(layer.scale_factor, tuple) else layer.scale_factor
    )
    model = Ladder(up1=layer)
    converted, report = convert_quietly(model, x_in())
    assert converted is model  # in place
    assert isinstance(model.up1, carafe.CARAFEPack) and isinstance(model.up2, carafe.CARAFEPack)
    assert (model.up1.channels, model.up1.scale_factor) == (8, factor)
    assert (model.up2.channels, model.up2.scale_factor) == (16, 2)
    assert [(r.name, r.channels, r.scale_factor) for r in report.replaced] == [
        ("up1", (8,), factor),
        ("up2", (16,), 2),
    ]
    assert report.left_alone == [] and report.functional == []
    assert model(x_in()).shape == (2, 16, 6 * 2 * factor, 5 * 2 * factor)
    expected = sum(p.numel() for p in model.up1.parameters()) + sum(
        p.numel() for p in model.up2.parameters()
    )
    assert report.params_added == expected


@pytest.mark.parametrize(
    "layer, reason",
    [
        (nn.Upsample(size=(12, 10)), "output size=(12, 10) fixed"),
        (nn.Upsample(scale_factor=1.5), "non-integer scale_factor=1.5"),
        (nn.Upsample(scale_factor=(2, 3)), "anisotropic scale_factor=(2.0, 3.0)"),
        (nn.Upsample(scale_factor=1), "scale_factor=1.0 does not upsample"),
    ],
    ids=["size", "non-integer", "anisotropic", "factor-1"],
)
def test_layers_that_are_not_integer_upsamplings_are_left_alone_and_reported(layer, reason):
    model = Ladder(up1=layer)
    with pytest.warns(UserWarning, match="1 upsampling layer.s. left alone"):
        _, report = convert_upsamplers(model, x_in())
    assert model.up1 is layer
    assert [e.name for e in report.left_alone] == ["up1"]
    assert reason in report.left_alone[0].reason
    assert reason in str(report)
    assert [r.name for r in report.replaced] == ["up2"]


def test_a_layer_the_example_inputs_do_not_reach_is_left_alone():
    class Unused(Ladder):
        def __init__(self):
            super().__init__()
            self.spare = nn.Upsample(scale_factor=2)

    model = Unused()
    with pytest.warns(UserWarning):
        _, report = convert_upsamplers(model, x_in())
    assert isinstance(model.spare, nn.Upsample)
    assert [(e.name, e.reason) for e in report.left_alone] == [
        ("spare", "not called when the model ran on example_inputs")
    ]


def test_a_layer_on_non_4d_input_is_left_alone():
    class OneD(nn.Module):
        def __init__(self):
            super().__init__()
            self.up = nn.Upsample(scale_factor=2, mode="linear")

        def forward(self, x):
            return self.up(x)

    model = OneD()
    with pytest.warns(UserWarning):
        _, report = convert_upsamplers(model, torch.randn(2, 4, 7))
    assert isinstance(model.up, nn.Upsample)
    assert report.left_alone[0].reason.startswith("input is 3-D")


def test_without_example_inputs_channels_come_from_the_layer_before_in_a_sequential():
    model = nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1),
        nn.BatchNorm2d(6),
        nn.ReLU(),
        nn.Upsample(scale_factor=2),
        nn.Conv2d(6, 4, 1),
        nn.Dropout(0.1),
        nn.UpsamplingBilinear2d(scale_factor=2),
    )
    _, report = convert_upsamplers(model)
    assert [(r.name, r.channels, r.channels_from) for r in report.replaced] == [
        ("3", (6,), "the layer before it"),
        ("6", (4,), "the layer before it"),
    ]
    assert model(x_in()).shape == (2, 4, 24, 20)


@pytest.mark.parametrize(
    "case", ["first-in-sequential", "after-unknown-layer", "sequential-subclass", "attribute"]
)
def test_without_example_inputs_unknown_channels_leave_the_layer_alone(case):
    class Routed(nn.Sequential):  # a subclass may feed its layers otherwise
        pass

    if case == "first-in-sequential":
        model = nn.Sequential(nn.Upsample(scale_factor=2), nn.Conv2d(3, 4, 1))
    elif case == "after-unknown-layer":
        model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.Flatten(), nn.Upsample(scale_factor=2))
    elif case == "sequential-subclass":
        model = Routed(nn.Conv2d(3, 4, 1), nn.Upsample(scale_factor=2))
    else:
        model = Ladder()
    with pytest.warns(UserWarning, match="left alone"):
        _, report = convert_upsamplers(model)
    assert report.replaced == []
    assert all(
        "input channels unknown without example_inputs" in e.reason for e in report.left_alone
    )
    assert not any(isinstance(m, carafe.CARAFEPack) for m in model.modules())


def test_one_module_called_with_several_channel_counts_gets_one_pack_per_count():
    shared = nn.Upsample(scale_factor=2)
    model = Ladder(up1=shared, up2=shared)  # one object, two names, 8 and 16 channels
    _, report = convert_quietly(model, x_in())
    assert model.up1 is model.up2 and isinstance(model.up1, ChannelDispatchCARAFE)
    assert model.up1.channels == (8, 16)
    assert [(r.name, r.aliases, r.channels) for r in report.replaced] == [
        ("up1", ("up2",), (8, 16))
    ]
    packs = model.up1.packs
    assert packs["8"].channels == 8 and packs["16"].channels == 16
    ids8 = {id(p) for p in packs["8"].parameters()}
    assert ids8.isdisjoint(id(p) for p in packs["16"].parameters())  # own weights
    x = torch.randn(2, 16, 4, 4)
    torch.testing.assert_close(model.up1(x), packs["16"](x))
    with pytest.raises(ValueError, match=r"C one of \[8, 16\].*got \[2, 4, 4, 4\]"):
        model.up1(torch.randn(2, 4, 4, 4))


def test_a_module_reused_at_one_channel_count_stays_one_pack_under_both_names():
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 5, 1)
            self.up = nn.Upsample(scale_factor=2)
            self.again = self.up

        def forward(self, x):
            return self.again(self.up(self.conv(x)))

    model = Twice()
    _, report = convert_quietly(model, x_in())
    assert isinstance(model.up, carafe.CARAFEPack) and model.up is model.again
    assert report.replaced[0].aliases == ("again",)
    assert model(x_in()).shape == (2, 5, 24, 20)


def test_options_reach_every_pack_and_match_carafepacks_constructor():
    parameters = list(inspect.signature(carafe.CARAFEPack.__init__).parameters)
    assert set(OPTIONS) == set(parameters) - {"self", "channels", "scale_factor"}
    model = Ladder()
    options = dict(
        up_kernel=3, up_group=2, encoder_kernel=1, encoder_dilation=1, compressed_channels=16
    )
    convert_quietly(model, x_in(), **options)
    for pack in (model.up1, model.up2):
        assert {k: getattr(pack, k) for k in options} == options


def test_bad_arguments_raise_errors_that_name_them():
    with pytest.raises(TypeError, match=r"unknown option\(s\) \['kernel_size'\]"):
        convert_upsamplers(Ladder(), x_in(), kernel_size=5)
    with pytest.raises(ValueError, match=r"convert_upsamplers: up1 \(channels \[8\]\).*up_kernel"):
        convert_upsamplers(Ladder(), x_in(), up_kernel=4)
    with pytest.raises(
        ValueError, match=r"up1 \(channels \[8\]\).*up_group must divide channels=8"
    ):
        convert_upsamplers(Ladder(), x_in(), up_group=3)
    with pytest.raises(TypeError, match="model must be an nn.Module, got str"):
        convert_upsamplers("resnet", x_in())
    with pytest.raises(TypeError, match="example_inputs must be a tensor.*got int"):
        convert_upsamplers(Ladder(), 3)


def test_a_failed_conversion_leaves_the_model_unchanged():
    model = Ladder()
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(ValueError):
        convert_upsamplers(model, x_in(), up_kernel=4)
    assert isinstance(model.up1, nn.Upsample) and isinstance(model.up2, nn.Upsample)
    assert model.state_dict().keys() == before.keys()


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_replacements_take_the_models_dtype(dtype):
    model = Ladder().to(dtype)
    convert_quietly(model, x_in(dtype=dtype))
    assert {p.dtype for p in model.parameters()} == {dtype}
    assert model(x_in(dtype=dtype)).dtype == dtype


def test_replacements_take_the_models_dtype_without_example_inputs():
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.Upsample(scale_factor=2)).double()
    convert_upsamplers(model)
    assert model[1].channel_compressor.weight.dtype == torch.float64


def test_replacements_take_the_models_device():
    # the meta device stands in for a second device (no GPU in CI): the op's
    # fake kernel lets the example forward run there
    model = Ladder().to("meta")
    convert_quietly(model, x_in().to("meta"))
    assert {p.device.type for p in model.parameters()} == {"meta"}


@pytest.mark.skipif(
    not carafe.cuda_available(), reason="needs a CUDA GPU and carafe's CUDA kernels"
)
def test_replacements_take_the_models_cuda_device():
    model = Ladder().cuda()
    convert_quietly(model, x_in().cuda())
    assert {p.device.type for p in model.parameters()} == {"cuda"}
    assert model(x_in().cuda()).is_cuda


@pytest.mark.parametrize("training", [True, False])
def test_modes_are_kept_and_the_example_pass_moves_no_statistics(training):
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4), nn.Upsample(scale_factor=2))
    model.train(training)
    stats = copy.deepcopy(model[1].state_dict())
    _, report = convert_upsamplers(model, x_in() * 5 + 3)
    assert [m.training for m in model.modules()] == [training] * len(list(model.modules()))
    for key, value in stats.items():
        torch.testing.assert_close(model[1].state_dict()[key], value, rtol=0, atol=0)
    assert torch.is_grad_enabled()


def test_attributes_a_framework_set_on_the_layer_are_copied():
    layer = nn.Upsample(scale_factor=2)
    layer.f, layer.i, layer.type = -1, 10, "torch.nn.modules.upsampling.Upsample"
    model = Ladder(up1=layer)
    convert_quietly(model, x_in())
    assert (model.up1.f, model.up1.i, model.up1.type) == (-1, 10, layer.type)
    assert not hasattr(model.up1, "size")  # nn.Upsample's own attributes are not


def test_functional_calls_are_found_with_their_caller_and_not_swapped():
    class Functional(Ladder):
        def forward(self, x):
            y = F.interpolate(self.a(x), scale_factor=2, mode="bilinear")
            return self.up2(self.b(y))

    model = Functional()
    line = inspect.getsourcelines(Functional.forward)[1] + 1
    with pytest.warns(UserWarning, match="1 functional F.interpolate call site"):
        _, report = convert_upsamplers(model, x_in())
    assert [r.name for r in report.replaced] == ["up2"]
    [call] = report.functional
    assert call.location.endswith(f"test_convert.py:{line} in forward")
    assert (call.calls, call.input_shape, call.scale, call.mode) == (
        1,
        (2, 8, 6, 5),
        "scale_factor=2",
        "bilinear",
    )
    # nn.Upsample's own F.interpolate is not a functional call
    _, clean = convert_quietly(Ladder(), x_in())
    assert clean.functional == []


def test_keyword_and_positional_example_inputs():
    class TwoInputs(nn.Module):
        def __init__(self):
            super().__init__()
            self.up = nn.Upsample(scale_factor=2)

        def forward(self, x, y=None):
            return self.up(torch.cat([x, y], 1))

    a, b = x_in(c=2), x_in(c=3)
    _, by_name = convert_quietly(TwoInputs(), {"x": a, "y": b})
    _, by_position = convert_quietly(TwoInputs(), (a, b))
    assert by_name.replaced[0].channels == by_position.replaced[0].channels == (5,)


def test_the_model_itself_an_upsample_is_returned_converted():
    layer = nn.Upsample(scale_factor=2)
    converted, report = convert_quietly(layer, x_in())
    assert isinstance(converted, carafe.CARAFEPack) and converted.channels == 3
    assert report.replaced[0].name == "(the model)"


def test_the_converted_model_trains():
    torch.manual_seed(0)
    model = Ladder()
    convert_quietly(model, x_in())
    model(x_in()).square().mean().backward()
    for pack in (model.up1, model.up2):
        grads = [p.grad for p in pack.parameters()]
        assert all(g is not None and torch.isfinite(g).all() for g in grads)
        assert any(g.abs().sum() > 0 for g in grads)


def test_init_weights_restores_carafes_initialisation_in_every_pack():
    shared = nn.Upsample(scale_factor=2)
    model = Ladder(up1=shared, up2=shared)
    convert_quietly(model, x_in())
    for pack in model.up1.packs.values():
        nn.init.kaiming_uniform_(pack.content_encoder.weight)  # as a parent's init_cfg would
    model.up1.init_weights()
    for pack in model.up1.packs.values():
        assert pack.content_encoder.weight.std() < 0.002
