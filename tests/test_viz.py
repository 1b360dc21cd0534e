"""carafe.viz: kernel extraction, entropy / centre-of-mass maps, bilinear's
equivalent kernels (checked against F.interpolate through the op), figures."""

import math

import pytest
import torch
import torch.nn.functional as F

import carafe
from carafe import viz


def one_hot_kernels(k, ky, kx, Ho=4, Wo=6):
    w = torch.zeros(k, k, Ho, Wo)
    w[ky, kx] = 1
    return w


def test_reassembly_kernels_are_the_modules_masks():
    torch.manual_seed(0)
    m = carafe.CARAFEPack(16, 2, up_kernel=5, up_group=2, compressed_channels=8)
    torch.nn.init.normal_(m.content_encoder.weight, std=0.1)
    x = torch.randn(2, 16, 6, 7)
    kernels = viz.reassembly_kernels(m, x)
    assert kernels.shape == (2, 2, 5, 5, 12, 14)
    assert torch.allclose(kernels.sum(dim=(2, 3)), torch.ones(2, 2, 12, 14), atol=1e-5)
    out = carafe.carafe(x, kernels.reshape(2, 50, 12, 14), 5, 2, 2)
    assert torch.allclose(out, m(x), atol=1e-5)


def test_entropy_limits():
    k = 5
    assert torch.allclose(viz.kernel_entropy(one_hot_kernels(k, 1, 3)), torch.zeros(4, 6))
    uniform = torch.full((k, k, 4, 6), 1 / k ** 2)
    assert torch.allclose(viz.kernel_entropy(uniform), torch.full((4, 6), math.log(k * k)))
    # a sigmoid normaliser's kernels are scaled to sum to one first
    assert torch.allclose(viz.kernel_entropy(0.3 * uniform), torch.full((4, 6), math.log(25)))


@pytest.mark.parametrize("ky,kx", [(0, 0), (2, 2), (4, 1)])
def test_center_of_mass_of_a_one_hot_kernel(ky, kx):
    com = viz.kernel_center_of_mass(one_hot_kernels(5, ky, kx))
    assert com.shape == (2, 4, 6)
    assert torch.all(com[0] == ky - 2) and torch.all(com[1] == kx - 2)


def test_center_of_mass_batched_shape():
    kernels = torch.rand(2, 3, 3, 3, 4, 6)
    assert viz.kernel_center_of_mass(kernels).shape == (2, 3, 2, 4, 6)
    assert viz.kernel_entropy(kernels).shape == (2, 3, 4, 6)


@pytest.mark.parametrize("scale", [2, 4])
def test_bilinear_masks_reproduce_interpolate(scale):
    torch.manual_seed(0)
    x = torch.randn(1, 3, 9, 11)
    masks = viz.bilinear_masks(9, 11, scale, k=3)
    ours = carafe.carafe(x, masks, 3, 1, scale)
    ref = F.interpolate(x, scale_factor=scale, mode="bilinear", align_corners=False)
    b = scale  # one input pixel of border, where interpolate clamps instead of padding zeros
    assert torch.allclose(ours[..., b:-b, b:-b], ref[..., b:-b, b:-b], atol=1e-5)
    assert not torch.allclose(ours, ref, atol=1e-3)  # and the border does differ


def test_bilinear_kernel():
    w = viz.bilinear_kernel(0, 1, 2, k=5)
    assert w.shape == (5, 5) and w.sum().item() == pytest.approx(1.0)
    # output (0, 1) at s=2: rows 0.25 / 0.75 at offsets -1 / 0, columns 0.75 / 0.25 at 0 / +1
    assert w[1, 2] == pytest.approx(0.25 * 0.75) and w[2, 3] == pytest.approx(0.75 * 0.25)
    assert w[2, 2] == pytest.approx(0.75 * 0.75)
    with pytest.raises(ValueError, match="k: bilinear"):
        viz.bilinear_kernel(0, 0, 2, k=1)


def test_edge_and_flat_locations():
    image = torch.zeros(3, 32, 32)
    image[:, :, 16:] = 1.0  # one vertical edge between columns 15 and 16
    edges, flats = viz.edge_and_flat_locations(image, scale=2, n=2)
    assert len(edges) == 2 and len(flats) == 2
    for p, q in edges:
        assert abs(q // 2 - 15.5) <= 1.5
    for p, q in flats:
        assert abs(q // 2 - 15.5) >= 3


def test_figures():
    pytest.importorskip("matplotlib", reason="figures need matplotlib")
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    torch.manual_seed(0)
    m = carafe.CARAFEPack(3, 2, up_kernel=5, compressed_channels=4)
    image = torch.rand(3, 16, 16)
    kernels = viz.reassembly_kernels(m, image[None])
    fig = viz.plot_kernels(image, kernels, [(5, 5), (20, 11)], scale=2)
    assert len(fig.axes) == 6
    plt.close(fig)
    fig = viz.plot_kernel_maps(image, kernels, scale=2)
    assert len(fig.axes) == 5  # three panels and two colour bars
    plt.close(fig)
