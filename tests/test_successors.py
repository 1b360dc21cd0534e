"""FADE and SAPA-B in the zoo: their equations against pure-torch unfold
references, their counts, the skip protocol and the harness passing skip."""

import pytest
import torch
import torch.nn.functional as F

from carafe_lab import upsamplers as U

SUCCESSORS = ["fade", "sapa"]


def _unfold_windows(x, k, s):
    """(N, C, k*k, s*H, s*W): for output pixel (p, q), x's k x k window
    around (p // s, q // s), zero outside."""
    N, C, H, W = x.shape
    up = x.repeat_interleave(s, dim=2).repeat_interleave(s, dim=3)
    cols = F.unfold(up, kernel_size=k, dilation=s, padding=(k // 2) * s)
    return cols.view(N, C, k * k, H * s, W * s)


def _reassemble(x, kernels, k, s):
    """CARAFE by unfold: sum over the window of kernels (N, k*k, sH, sW) * x."""
    return (_unfold_windows(x, k, s) * kernels.unsqueeze(1)).sum(2)


def _conv1x1(x, conv):
    out = torch.einsum("oc,nchw->nohw", conv.weight[:, :, 0, 0], x)
    return out if conv.bias is None else out + conv.bias.view(1, -1, 1, 1)


def fade_reference(m, x, skip):
    """FADE as the paper writes the semi-shift convolution: for each sub-pixel
    phase (a, b), a stride-s e x e convolution of the compressed encoder
    feature shifted by the phase, plus the same weights' convolution of the
    compressed decoder feature at its own resolution; softmax; reassembly by
    unfold; the decoder-predicted gate."""
    s, k, e = m.scale_factor, m.up_kernel, m.encoder_kernel
    N, C, H, W = x.shape
    r = e // 2
    weight, bias = m.kernel_conv.weight, m.kernel_conv.bias
    enc = F.pad(_conv1x1(skip, m.compress_skip), (r, r, r, r))
    dec = F.conv2d(_conv1x1(x, m.compress_x), weight, padding=r)
    logits = x.new_zeros(N, k * k, s * H, s * W)
    for a in range(s):
        for b in range(s):
            phase = F.conv2d(enc[:, :, a:, b:], weight, bias, stride=s)[:, :, :H, :W]
            logits[:, :, a::s, b::s] = phase + dec
    up = _reassemble(x, logits.softmax(1), k, s)
    gate = torch.sigmoid(_conv1x1(x, m.gate)).repeat_interleave(s, 2).repeat_interleave(s, 3)
    return gate * skip + (1 - gate) * up


def sapa_reference(m, x, skip):
    """SAPA-B: normalised inputs, linear embeddings, each output pixel's dot
    products with its k x k key window, softmax, reassembly by unfold."""
    s, k = m.scale_factor, m.up_kernel
    norm = m.norm_skip
    q = _conv1x1(F.group_norm(skip, norm.num_groups, norm.weight, norm.bias, norm.eps), m.query)
    norm = m.norm_x
    key = _conv1x1(F.group_norm(x, norm.num_groups, norm.weight, norm.bias, norm.eps), m.key)
    sim = (_unfold_windows(key, k, s) * q.unsqueeze(2)).sum(1)
    return _reassemble(x, sim.softmax(1), k, s)


REFERENCES = {"fade": fade_reference, "sapa": sapa_reference}


def _inputs(C, s, H=5, W=6, N=2):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(N, C, H, W, generator=g, dtype=torch.float64)
    skip = torch.randn(N, C, s * H, s * W, generator=g, dtype=torch.float64)
    return x, skip


@pytest.mark.parametrize("name", SUCCESSORS)
@pytest.mark.parametrize("s", [2, 3])
def test_composed_ops_match_the_unfold_reference(name, s):
    torch.manual_seed(0)
    m = U.build_upsampler(name, 8, s).double()
    # away from the near-uniform start, so that the kernels discriminate
    for p in m.parameters():
        p.data.add_(0.3 * torch.randn_like(p))
    x, skip = _inputs(8, s)
    torch.testing.assert_close(m(x, skip), REFERENCES[name](m, x, skip))


@pytest.mark.parametrize("name", SUCCESSORS)
def test_every_parameter_and_both_inputs_get_gradients(name):
    torch.manual_seed(0)
    m = U.build_upsampler(name, 8, 2)
    x = torch.randn(2, 8, 4, 5, requires_grad=True)
    skip = torch.randn(2, 8, 8, 10, requires_grad=True)
    m(x, skip).square().sum().backward()
    for tensor_name, t in [("x", x), ("skip", skip), *m.named_parameters()]:
        assert t.grad is not None and t.grad.abs().sum() > 0, tensor_name


@pytest.mark.parametrize("name", SUCCESSORS)
@pytest.mark.parametrize("s", [2, 4])
def test_flops_match_the_counter(name, s):
    m = U.build_upsampler(name, 16, s)
    assert m.flops_per_pixel() == pytest.approx(U.measured_flops_per_pixel(m, 16))


def test_parameter_counts():
    C = 256
    # compressors C*64 + 64 and C*64, semi-shift conv 3*3*64*25 + 25, gate C + 1
    fade = U.build_upsampler("fade", C, 2)
    assert U.count_parameters(fade) == 2 * C * 64 + 64 + 9 * 64 * 25 + 25 + C + 1 == 47_514
    # two affine norms 2*2C, query and key embeddings C*32 + 32 each
    sapa = U.build_upsampler("sapa", C, 2)
    assert U.count_parameters(sapa) == 4 * C + 2 * (C * 32 + 32) == 17_472


@pytest.mark.parametrize("name", SUCCESSORS)
def test_missing_or_misshapen_skip_is_named(name):
    m = U.build_upsampler(name, 8, 2)
    x = torch.randn(1, 8, 4, 4)
    assert U.needs_skip(m) and U.needs_skip(name)
    with pytest.raises(ValueError, match=r"skip .* required, expected .* \(1, 8, 8, 8\), got None"):
        m(x)
    with pytest.raises(ValueError, match=r"skip must have shape \(1, 8, 8, 8\).*got \(1, 8, 4, 4"):
        m(x, x)


def test_bad_options_are_named():
    with pytest.raises(ValueError, match="FADE: up_kernel must be an odd integer"):
        U.build_upsampler("fade", 8, 2, up_kernel=4)
    with pytest.raises(ValueError, match="SAPA: embedding_dim must be an integer >= 1"):
        U.build_upsampler("sapa", 8, 2, embedding_dim=0)


def test_upsample_passes_skip_only_to_those_that_take_it():
    x, skip = torch.randn(1, 4, 3, 3), torch.randn(1, 4, 6, 6)
    nearest = U.build_upsampler("nearest", 4, 2)
    assert not U.needs_skip(nearest)
    torch.testing.assert_close(U.upsample(nearest, x, skip), nearest(x))
    fade = U.build_upsampler("fade", 4, 2)
    torch.testing.assert_close(U.upsample(fade, x, skip), fade(x, skip))


def _skip_consumers(m):
    """The parameters only a passed skip gives gradients to."""
    return [m.compress_skip.weight] if isinstance(m, U.FADE) else [m.query.weight]


@pytest.mark.parametrize("name", SUCCESSORS)
def test_seg_network_passes_the_lateral_as_skip(name):
    from carafe_lab.ablations import seg

    torch.manual_seed(0)
    net = seg.SegNet(name, 8)
    out = net(torch.rand(2, 3, 32, 24))
    assert out.shape == (2, seg.NUM_CLASSES, 32, 24)
    out.square().mean().backward()
    for up in net.ups:
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in _skip_consumers(up))


@pytest.mark.parametrize("name", SUCCESSORS)
def test_inpaint_network_passes_the_lateral_as_skip(name):
    from carafe_lab.ablations import inpaint

    torch.manual_seed(0)
    net = inpaint.InpaintNet(name, 8)
    images, masks = torch.rand(1, 3, 16, 16), torch.zeros(1, 1, 16, 16)
    masks[:, :, 4:10, 4:10] = 1
    net(inpaint.network_input(images, masks)).square().mean().backward()
    for up in net.ups:
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in _skip_consumers(up))


def test_sr_refuses_upsamplers_that_need_an_encoder_feature():
    from carafe_lab.ablations import harness, sr

    with pytest.raises(ValueError, match="upsampler: 'fade' needs an encoder feature"):
        sr.SRNet("fade", 2, 8)
    labels = [label for label, _, _ in harness.select_variants("upsamplers", task="sr")]
    assert "fade" not in labels and "sapa" not in labels and "carafe" in labels
    seg_labels = [label for label, _, _ in harness.select_variants("upsamplers", task="seg")]
    assert "fade" in seg_labels and "sapa" in seg_labels
    with pytest.raises(ValueError, match=r"variants: \['sapa'\] need the encoder feature"):
        harness.select_variants("upsamplers", ["carafe", "sapa"], task="sr")


@pytest.mark.parametrize("name", SUCCESSORS)
def test_det_neck_passes_the_finer_lateral_at_odd_sizes(name):
    pytest.importorskip("mmdet", reason="the det task needs the mmdet extra")
    from mmdet.registry import MODELS

    import carafe_lab.experiments.necks  # noqa: F401

    neck = MODELS.build(
        dict(
            type="CARAFEZooFPN",
            in_channels=[8, 16, 32],
            out_channels=16,
            num_outs=4,
            upsample_cfg=dict(type="zoo", name=name),
        )
    )
    neck.init_weights()
    # odd sizes: each coarser level upsamples to one more row and column
    feats = [torch.randn(1, 8, 30, 26), torch.randn(1, 16, 15, 13), torch.randn(1, 32, 8, 7)]
    outs = neck(feats)
    assert [tuple(o.shape[-2:]) for o in outs] == [(30, 26), (15, 13), (8, 7), (4, 4)]
    sum(o.sum() for o in outs).backward()
    for up in neck.upsample_modules:
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in _skip_consumers(up))


def test_published_det_numbers():
    from carafe_lab.ablations import paper
    from carafe_lab.published import SAPA

    assert paper.paper_cell("upsamplers", "fade", "det") == "38.5"
    assert paper.paper_cell("upsamplers", "sapa", "det") == "37.8"
    numbers = paper.COLUMNS["det"].numbers["upsamplers"]
    assert numbers["fade"][1] == numbers["sapa"][1] == SAPA
