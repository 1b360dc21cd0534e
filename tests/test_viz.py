"""carafe_lab.viz: kernel extraction, entropy / centre-of-mass maps, bilinear's
equivalent kernels (checked against F.interpolate through the op), figures."""

import math

import pytest
import torch
import torch.nn.functional as F

import carafe
from carafe_lab import viz


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
    uniform = torch.full((k, k, 4, 6), 1 / k**2)
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
    for _, q in edges:
        assert abs(q // 2 - 15.5) <= 1.5
    for _, q in flats:
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


# --- content-awareness: same-segment mass on hand-made masks -----------------


def halves(n=1, size=16, split=8):
    """Labels (n, size, size): segment 0 left of column `split`, 1 from it."""
    labels = torch.zeros(n, size, size, dtype=torch.long)
    labels[..., split:] = 1
    return labels


def test_same_segment_mass_of_nearest_on_block_aligned_halves_is_one():
    # input 8x8 -> output 16x16; the boundary falls between input pixels 3 and 4
    kernels = viz.fixed_kernels("nearest", 1, 8, 8, 2, k=5)
    mass = viz.same_segment_mass(kernels, halves(), 2, "block")
    assert mass.shape == (1, 1, 16, 16)
    assert torch.allclose(mass, torch.ones_like(mass))


def test_same_segment_mass_of_bilinear_next_to_the_boundary():
    kernels = viz.fixed_kernels("bilinear", 1, 8, 8, 2, k=5)
    mass = viz.same_segment_mass(kernels, halves(), 2, "block")[0, 0]
    # output column 7 samples input columns 3 (0.75) and 4 (0.25, the other
    # segment); column 8 mirrors it; columns 5 and 10 read one segment only
    assert torch.allclose(mass[4:12, 7], torch.full((8,), 0.75))
    assert torch.allclose(mass[4:12, 8], torch.full((8,), 0.75))
    assert torch.allclose(mass[4:12, 5], torch.ones(8))
    assert torch.allclose(mass[4:12, 10], torch.ones(8))


def test_same_segment_mass_of_a_uniform_kernel_counts_taps():
    kernels = torch.full((1, 1, 5, 5, 16, 16), 1 / 25)
    mass = viz.same_segment_mass(kernels, halves(), 2, "block")[0, 0]
    # source column 3: window columns 1..5, of which 4 and 5 are the other segment
    assert torch.allclose(mass[8, 7], torch.tensor(3 / 5))
    # source column 2: window 0..4, one column across
    assert torch.allclose(mass[8, 4], torch.tensor(4 / 5))
    # the corner: taps outside the input read zero padding, never "own segment"
    assert torch.allclose(mass[0, 0], torch.tensor(9 / 25))


def test_same_segment_mass_penalises_a_shifted_copy():
    # every kernel copies its source pixel's left neighbour (tap dx = -1):
    # right of the boundary, output columns 8 and 9 (source 4) read source 3
    kernels = viz.fixed_kernels("nearest", 1, 8, 8, 2, k=5).clone()
    kernels[..., 2, 2, :, :] = 0
    kernels[..., 2, 1, :, :] = 1
    mass = viz.same_segment_mass(kernels, halves(), 2, "block")[0, 0]
    assert torch.all(mass[:, 8:10] == 0)
    assert torch.all(mass[:, 2:8] == 1) and torch.all(mass[:, 10:] == 1)


def test_same_segment_mass_gives_partial_credit_to_mixed_blocks():
    # boundary at column 9: input pixel 4 (columns 8, 9) is half and half
    kernels = viz.fixed_kernels("nearest", 1, 8, 8, 2, k=3)
    mass = viz.same_segment_mass(kernels, halves(split=9), 2, "block")[0, 0]
    assert torch.allclose(mass[:, 8], torch.full((16,), 0.5))  # own segment 0 (column 8)
    assert torch.allclose(mass[:, 9], torch.full((16,), 0.5))  # own segment 1
    assert torch.allclose(mass[:, 10], torch.ones(16))


def test_same_segment_mass_at_a_coarser_output_grid():
    # labels at 32x32 for an output grid of 16x16 (t = 2) and input 8x8
    labels = halves(size=32, split=16)
    kernels = viz.fixed_kernels("bilinear", 1, 8, 8, 2, k=5)
    mass = viz.same_segment_mass(kernels, labels, 2, "block")[0, 0]
    assert torch.allclose(mass[8, 7], torch.tensor(0.75))


def test_content_awareness_bands():
    band = viz.boundary_band(halves(), (16, 16), width=1, alignment="block")
    assert band.shape == (1, 16, 16)
    assert band[0, :, 6:10].all() and not band[0, :, :6].any() and not band[0, :, 10:].any()
    uniform = torch.full((1, 2, 5, 5, 16, 16), 1 / 25)
    scores = viz.content_awareness(uniform, halves(), 2, width=1, alignment="block")
    # margin 4: rows 4..11; the band is columns 6..9 (sources 3, 3, 4, 4), each
    # reading two columns of the other segment; counts are output pixels
    assert scores["n_boundary"] == 8 * 4 and scores["n_interior"] == 8 * 4
    assert math.isclose(scores["boundary"], 3 / 5, rel_tol=1e-6)
    # interior columns 4, 5 (source 2: 4/5) and 10, 11 (source 5: 4/5)
    assert math.isclose(scores["interior"], 4 / 5, rel_tol=1e-6)
    nearest = viz.content_awareness(
        viz.fixed_kernels("nearest", 1, 8, 8, 2), halves(), 2, alignment="block"
    )
    assert nearest["boundary"] == 1.0 and nearest["interior"] == 1.0


def test_same_segment_mass_rejects_bad_shapes():
    kernels = torch.full((1, 1, 5, 5, 16, 16), 1 / 25)
    with pytest.raises(ValueError, match="labels"):
        viz.same_segment_mass(kernels, torch.zeros(1, 15, 15, dtype=torch.long), 2)
    with pytest.raises(ValueError, match="kernels"):
        viz.same_segment_mass(kernels[0], halves(), 2)
    with pytest.raises(ValueError, match="name"):
        viz.fixed_kernels("bicubic", 1, 8, 8, 2)


def test_centre_alignment_places_footprints_on_stride_multiples():
    # stride 2, "centre": feature pixel i covers image pixels 2i - 1 and 2i
    labels = halves(size=16, split=7)
    frac = viz.segment_fractions(labels, 2, alignment="centre")
    assert torch.allclose(frac[0, 1, 0], torch.tensor([0, 0, 0, 0, 1, 1, 1, 1.0]))
    frac = viz.segment_fractions(labels, 2, alignment="block")
    assert torch.allclose(frac[0, 1, 0], torch.tensor([0, 0, 0, 0.5, 1, 1, 1, 1.0]))
    # nearest copies source p // 2: under "centre" only output column 7 (image
    # pixel 7, segment 1) misses, reading source 3 (image pixels 5, 6); under
    # "block" source 3 is half and half, for columns 6 and 7
    kernels = viz.fixed_kernels("nearest", 1, 8, 8, 2, k=3)
    centre = viz.same_segment_mass(kernels, labels, 2, "centre")[0, 0, 0]
    block = viz.same_segment_mass(kernels, labels, 2, "block")[0, 0, 0]
    assert torch.equal(centre, torch.tensor([1.0] * 7 + [0.0] + [1.0] * 8))
    assert torch.equal(block, torch.tensor([1.0] * 6 + [0.5, 0.5] + [1.0] * 8))
    with pytest.raises(ValueError, match="alignment"):
        viz.segment_fractions(labels, 2, alignment="corner")


def test_aggregate_and_compare_scores():
    run = lambda b: {
        "L": {
            "carafe": {"boundary": b, "interior": 0.9},
            "bilinear": {"boundary": 0.7, "interior": 1.0},
        }
    }
    agg = viz.aggregate_scores([run(0.80), run(0.82), run(0.84)])
    assert agg["L"]["carafe"]["boundary_mean"] == pytest.approx(0.82)
    assert agg["L"]["carafe"]["boundary_std"] == pytest.approx(0.02)
    assert agg["L"]["carafe"]["n"] == 3 and agg["L"]["bilinear"]["boundary_std"] == 0
    assert "is higher than bilinear's" in viz.compare(agg, "L")
    assert "not distinguishable" in viz.compare(viz.aggregate_scores([run(0.60), run(0.80)]), "L")
    assert "one run" in viz.compare(viz.aggregate_scores([run(0.9)]), "L")
    assert "| L | carafe | 0.820 ± 0.020 |" in viz.scores_markdown(agg)
    with pytest.raises(ValueError, match="runs"):
        viz.aggregate_scores([])


def test_aggregate_scores_leaves_out_unscorable_levels():
    nan = float("nan")
    run = {
        "big": {"carafe": {"boundary": 0.8, "interior": 0.9}},
        "tiny": {"carafe": {"boundary": nan, "interior": nan}},
    }
    assert list(viz.aggregate_scores([run, run])) == ["big"]
