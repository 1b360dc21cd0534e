"""The upsampler zoo: shapes, gradients, parameter and FLOP counts."""

import pytest
import torch

from carafe_lab import upsamplers as U

NAMES = sorted(U.UPSAMPLERS)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("s", [2, 4])
def test_shape_and_gradient_flow(name, s):
    torch.manual_seed(0)
    m = U.build_upsampler(name, 16, s)
    x = torch.randn(2, 16, 5, 7, requires_grad=True)
    # the encoder feature, for the upsamplers that take one (FADE, SAPA)
    skip = torch.randn(2, 16, 5 * s, 7 * s, requires_grad=True) if U.needs_skip(m) else None
    y = U.upsample(m, x, skip)
    assert y.shape == (2, 16, 5 * s, 7 * s)
    y.square().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert skip is None or skip.grad.abs().sum() > 0
    for p in m.parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all()


@pytest.mark.parametrize("name", NAMES)
def test_flops_formula_matches_counter(name):
    m = U.build_upsampler(name, 32, 2)
    assert m.flops_per_pixel() == pytest.approx(U.measured_flops_per_pixel(m, 32))


def test_carafe_matches_the_paper():
    m = U.build_upsampler("carafe", 256, 2)
    assert U.count_parameters(m) == 74_148  # mmcv's CARAFEPack, biases included
    assert m.flops_per_pixel() == 199_168  # the paper's "199K FLOPs"


@pytest.mark.parametrize("name", ["nearest", "bilinear", "gum", "dysample", "spatial_attention"])
def test_sampling_upsamplers_start_from_interpolation(name):
    """GUM, DySample and spatial attention start close to plain interpolation."""
    x = torch.randn(1, 8, 6, 6)
    m = U.build_upsampler(name, 8, 2)
    mode = "nearest" if name in ("nearest", "spatial_attention") else "bilinear"
    ref = torch.nn.functional.interpolate(
        x, scale_factor=2, mode=mode, **({} if mode == "nearest" else {"align_corners": False})
    )
    tol = 1e-2 if name == "dysample" else 1e-5  # DySample's offsets start tiny, not zero
    torch.testing.assert_close(m(x), ref, rtol=tol, atol=tol)


@pytest.mark.parametrize("normalizer", U.NORMALIZERS)
def test_carafe_normalizers(normalizer):
    m = U.build_upsampler("carafe", 16, 2, normalizer=normalizer, compressed_channels=8)
    torch.nn.init.normal_(m.content_encoder.weight, std=0.5)
    kernels = m.predict_kernels(torch.randn(1, 16, 4, 4))
    sums = kernels.view(1, 1, 25, 8, 8).sum(2)
    if normalizer == "sigmoid":
        assert (kernels > 0).all() and (kernels < 1).all()
        assert not torch.allclose(sums, torch.ones_like(sums))
    else:
        torch.testing.assert_close(sums, torch.ones_like(sums))


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown upsampler 'bicubic'"):
        U.build_upsampler("bicubic", 8, 2)
    with pytest.raises(ValueError, match="scale_factor"):
        U.build_upsampler("nearest", 8, 0)
    with pytest.raises(ValueError, match="normalizer"):
        U.build_upsampler("carafe", 8, 2, normalizer="tanh")
    with pytest.raises(ValueError, match="groups=3 must divide channels=8"):
        U.build_upsampler("dysample", 8, 2, groups=3)


@pytest.mark.parametrize("s", [2, 3])
@pytest.mark.parametrize("init", ["nearest", "bilinear"])
def test_carafe_kernel_init_starts_as_the_interpolation(init, s):
    """With the encoder's weights at zero, CARAFE started at `init` is that
    interpolation mixed with KERNEL_INIT_UNIFORM_SHARE of the 5x5 box kernel,
    away from the border (where the box reads zero padding)."""
    import torch.nn.functional as F

    from carafe import carafe

    torch.manual_seed(0)
    up = U.build_upsampler("carafe", 8, s, kernel_init=init)
    torch.nn.init.zeros_(up.content_encoder.weight)
    x = torch.randn(2, 8, 12, 12)
    if init == "nearest":
        interpolated = F.interpolate(x, scale_factor=s, mode="nearest")
    else:
        interpolated = F.interpolate(x, scale_factor=s, mode="bilinear", align_corners=False)
    box = carafe(x, torch.full((2, 25, 12 * s, 12 * s), 1 / 25), 5, 1, s)
    share = U.KERNEL_INIT_UNIFORM_SHARE
    expected = (1 - share) * interpolated + share * box
    b = 3 * s
    torch.testing.assert_close(up(x)[..., b:-b, b:-b], expected[..., b:-b, b:-b])
    # the uniform start (mmcv's) is the box kernel itself
    uniform = U.build_upsampler("carafe", 8, s)
    torch.nn.init.zeros_(uniform.content_encoder.weight)
    torch.testing.assert_close(uniform(x), box)


def test_bilinear_phase_kernels_are_convex_and_separable():
    kernels = U.bilinear_phase_kernels(5, 2)  # (25, 2, 2)
    torch.testing.assert_close(kernels.sum(0), torch.ones(2, 2, dtype=kernels.dtype))
    assert (kernels >= 0).all()
    # phase (0, 0) samples at i - 0.25: weights 0.75 on the source pixel, 0.25 on i - 1
    grid = kernels[:, 0, 0].reshape(5, 5)
    row = torch.tensor([0, 0.25, 0.75, 0, 0], dtype=kernels.dtype)
    torch.testing.assert_close(grid, torch.outer(row, row))


def test_carafe_kernel_init_bad_arguments():
    with pytest.raises(
        ValueError,
        match=r"kernel_init must be one of \['uniform', 'nearest', 'bilinear'\], got 'box'",
    ):
        U.build_upsampler("carafe", 8, 2, kernel_init="box")
    with pytest.raises(ValueError, match="kernel_init='nearest' needs normalizer='softmax'"):
        U.build_upsampler("carafe", 8, 2, kernel_init="nearest", normalizer="sigmoid")
