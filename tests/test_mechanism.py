"""The mechanism controls: the phase-mean swap, the static twin, the kernel
score's controls, and the statistics of the tables."""

import math

import pytest
import torch

import carafe
from carafe.modules import CARAFEPack
from carafe_lab import mechanism, stats, viz
from carafe_lab.upsamplers import StaticCARAFE, build_upsampler, tile_phase_kernels


def test_tiled_phase_kernels_follow_the_output_phase():
    s, k = 3, 3
    phase = torch.rand(2, k * k, s, s)
    masks = tile_phase_kernels(phase, 2, 4, 5)
    assert masks.shape == (2, 2 * k * k, 12, 15)
    for p, q in [(0, 0), (4, 7), (11, 14), (5, 2)]:
        torch.testing.assert_close(masks[1, :, p, q].view(2, k * k), phase[:, :, p % s, q % s])


def test_static_carafe_is_the_op_with_learned_phase_kernels():
    m = StaticCARAFE(8, 2, up_kernel=3)
    with torch.no_grad():
        m.kernel_logits.normal_()
    x = torch.randn(2, 8, 5, 6)
    expected = carafe.carafe(x, m.predict_kernels(x), 3, 1, 2)
    torch.testing.assert_close(m(x), expected)
    # the kernels do not depend on the input
    torch.testing.assert_close(m.predict_kernels(x), m.predict_kernels(torch.randn_like(x)))
    with pytest.raises(ValueError, match="up_kernel must be an odd"):
        StaticCARAFE(8, 2, up_kernel=4)


def test_phase_mean_swap_replaces_the_kernels_and_restores_them():
    torch.manual_seed(0)
    m = CARAFEPack(8, 2, up_kernel=3, compressed_channels=4)
    torch.nn.init.normal_(m.content_encoder.weight, std=1.0)  # content-dependent kernels
    xs = [torch.randn(2, 8, 6, 6) for _ in range(3)]
    with mechanism.recording_phase_means([m]) as means:
        for x in xs:
            m(x)
        (phase,) = means()
    masks = torch.cat([m.predict_kernels(x) for x in xs])  # (6, 9, 12, 12)
    manual = masks.view(6, 9, 6, 2, 6, 2).double().mean((0, 2, 4)).float()
    torch.testing.assert_close(phase.view(9, 2, 2), manual)
    before = m(xs[0])
    with mechanism.swapped_kernels([m], [phase]):
        swapped = m(xs[0])
        static = StaticCARAFE(8, 2, up_kernel=3)
        with torch.no_grad():
            static.kernel_logits.copy_(phase.log())
        torch.testing.assert_close(swapped, static(xs[0]), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(m(xs[0]), before)  # restored
    assert "predict_kernels" not in m.__dict__
    with pytest.raises(ValueError, match="expected shape"):
        with mechanism.swapped_kernels([m], [torch.rand(1, 25, 2, 2)]):
            pass


def test_phase_means_of_a_model_needs_a_carafe():
    with pytest.raises(ValueError, match="no CARAFE upsampler"):
        mechanism.phase_means_of(torch.nn.Conv2d(3, 3, 1), [torch.randn(1, 3, 4, 4)])


def _disks(N=3, size=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    labels = torch.zeros(N, size, size, dtype=torch.long)
    for n in range(N):
        for j in range(3):
            cy, cx = torch.randint(12, size - 12, (2,), generator=g).tolist()
            r = int(torch.randint(6, 14, (1,), generator=g))
            labels[n][(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = j + 1
    return labels


def test_ca_separates_content_adaptation_from_width():
    """A kernel that weights taps by their own-segment share is content
    adaptive (CA > 0, pulling towards the own segment); a wide fixed kernel
    scores a low mass but CA = 0 exactly: the score measures adaptation, not
    spread."""
    labels = _disks()
    k, s, Ho = 5, 2, 32
    same = viz.tap_same_fractions(labels, k, (Ho, Ho), s)
    adaptive = (same + 1e-3) / (same + 1e-3).sum(1, keepdim=True)
    adaptive = adaptive.view(3, 1, k, k, Ho, Ho)
    report = viz.kernel_report(adaptive, labels, s)
    assert report["ca"] > 0.2 and report["ca_permuted"] > 0.2
    assert report["direction"]["shift"] > 0.9
    wide = torch.full((3, 1, k, k, Ho, Ho), 1 / 25)
    flat = viz.kernel_report(wide, labels, s)
    assert flat["ca"] == 0 and flat["ca_permuted"] == 0
    assert flat["masses"]["carafe"]["boundary"] < flat["masses"]["nearest"]["boundary"]
    assert flat["one_hot_share"] == 0 and flat["gaussian_sigma"] is None


def test_phase_mean_and_permutations_keep_each_phase_kernels():
    k, s = 3, 2
    kernels = torch.rand(2, 1, k, k, 8, 6)
    twin = viz.phase_mean_kernels(kernels, s)
    torch.testing.assert_close(twin[0, 0, :, :, 0, 0], kernels[..., ::2, ::2].mean((0, 4, 5))[0])
    torch.testing.assert_close(twin[1, 0, :, :, 6, 4], twin[0, 0, :, :, 0, 0])
    perm = viz.permuted_kernels(kernels, s, torch.Generator().manual_seed(0))
    for a in range(s):
        for b in range(s):
            orig = kernels[..., a::s, b::s].permute(0, 1, 4, 5, 2, 3).reshape(-1, k * k)
            new = perm[..., a::s, b::s].permute(0, 1, 4, 5, 2, 3).reshape(-1, k * k)
            assert not torch.equal(orig, new)
            assert torch.equal(orig.sort(0).values, new.sort(0).values)  # the same kernels


def test_entropy_matched_gaussian_and_distance_shares():
    for target in (0.5, 1.5, 2.8):
        sigma = viz.entropy_matched_sigma(5, target)
        w = viz.gaussian_kernel(5, sigma)
        assert float(-(w * w.log()).sum()) == pytest.approx(target, abs=1e-6)
    assert math.isinf(viz.entropy_matched_sigma(5, math.log(25)))
    corner = torch.zeros(1, 25, 2, 2)
    corner[:, 24] = 1  # all weight two input pixels away (dy = dx = +2)
    assert viz.weight_by_distance(corner) == {0: 0.0, 1: 0.0, 2: 1.0}


def test_mean_ci_compare_and_holm():
    from scipy import stats as st

    values = [0.31, 0.29, 0.35, 0.30, 0.33]
    mean, low, high = stats.mean_ci(values)
    ref = st.t.interval(0.95, 4, loc=mean, scale=st.sem(values))
    assert (low, high) == pytest.approx(ref)
    assert math.isnan(stats.mean_ci([1.0])[1])
    a, b = [1.0, 1.2, 0.9, 1.1, 1.0], [0.8, 1.0, 0.85, 0.9, 0.7]
    welch = stats.compare_seeds(a, b)
    assert welch["p"] == pytest.approx(st.ttest_ind(a, b, equal_var=False).pvalue)
    assert welch["low"] < welch["diff"] < welch["high"]
    paired = stats.compare_seeds(a, b, paired=True)
    assert paired["p"] == pytest.approx(st.ttest_rel(a, b).pvalue) and paired["test"] == "paired t"
    assert stats.compare_seeds([1.0], b) is None
    assert stats.compare_seeds([1, 1], [1, 1])["p"] == 1.0
    # Holm: 0.01, 0.04, 0.03 over three -> 0.03, 0.06, 0.06; None left out
    assert stats.holm([0.01, 0.04, 0.03, None]) == pytest.approx([0.03, 0.06, 0.06, None])
    with pytest.raises(ValueError, match="paired"):
        stats.compare_seeds([1, 2, 3], [1, 2], paired=True)


def test_parameter_control_matches_carafe():
    for c in (16, 24, 128, 256):
        carafe = sum(p.numel() for p in build_upsampler("carafe", c, 2).parameters())
        control = sum(p.numel() for p in build_upsampler("nearest_conv", c, 2).parameters())
        assert abs(control - carafe) <= 11 * c + 1  # one hidden channel's worth
    x = torch.randn(1, 16, 4, 4)
    # the residual block starts at zero: the control starts as nearest
    torch.testing.assert_close(
        build_upsampler("nearest_conv", 16, 2)(x),
        torch.nn.functional.interpolate(x, scale_factor=2),
    )
