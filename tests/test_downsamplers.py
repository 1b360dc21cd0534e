"""The downsampler zoo: shapes (odd sizes too), FLOP and parameter counts,
CARAFE++'s reassembly against a direct loop, gradients."""

import pytest
import torch
import torch.nn.functional as F

from carafe_lab import downsamplers as D

NAMES = sorted(D.DOWNSAMPLERS)


def reassembly_loop(x, kernels, k, groups=1):
    """The strided reassembly written out: output (i, j) of channel c in
    group g is the sum over taps (a, b) of kernels[g*k*k + a*k + b, i, j] *
    x[c, 2i + a - k//2, 2j + b - k//2], zero outside the image."""
    N, C, H, W = x.shape
    Ho, Wo = kernels.shape[-2:]
    out = torch.zeros(N, C, Ho, Wo, dtype=x.dtype)
    r = k // 2
    for n in range(N):
        for c in range(C):
            g = c // (C // groups)
            for i in range(Ho):
                for j in range(Wo):
                    for a in range(k):
                        for b in range(k):
                            y, xx = 2 * i + a - r, 2 * j + b - r
                            if 0 <= y < H and 0 <= xx < W:
                                w = kernels[n, g * k * k + a * k + b, i, j]
                                out[n, c, i, j] += w * x[n, c, y, xx]
    return out


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("size", [(8, 8), (7, 9), (1, 2), (5, 4)])
def test_shape_rule_and_gradients(name, size):
    torch.manual_seed(0)
    m = D.build_downsampler(name, 8)
    x = torch.randn(2, 8, *size, requires_grad=True)
    y = m(x)
    assert y.shape == (2, 8, D.output_size(size[0]), D.output_size(size[1]))
    assert y.shape[-2:] == (-(-size[0] // 2), -(-size[1] // 2))
    y.square().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    for p in m.parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all()


@pytest.mark.parametrize("name", NAMES)
def test_flops_formula_matches_counter(name):
    m = D.build_downsampler(name, 32)
    assert m.flops_per_pixel() == pytest.approx(D.measured_flops_per_pixel(m, 32))


def test_flops_of_the_op_composition_match_too():
    m = D.build_downsampler("carafe_pp", 16, impl="op")
    assert m.flops_per_pixel() == pytest.approx(D.measured_flops_per_pixel(m, 16))


def test_counts_at_c256():
    conv, cpp = D.build_downsampler("conv", 256), D.build_downsampler("carafe_pp", 256)
    assert sum(p.numel() for p in conv.parameters()) == 9 * 256 * 256 + 256
    # compressor 256*16 + 16, encoder 3*3*16*25 + 25
    assert sum(p.numel() for p in cpp.parameters()) == 256 * 16 + 16 + 9 * 16 * 25 + 25
    assert cpp.flops_per_pixel() == 2 * (4 * 256 * 16 + 9 * 16 * 25 + 25 * 256)
    assert cpp.flops_per_pixel() < conv.flops_per_pixel() / 20


@pytest.mark.parametrize("groups", [1, 2])
@pytest.mark.parametrize("size", [(6, 6), (5, 7)])
@pytest.mark.parametrize("k", [3, 5])
def test_reassembly_matches_the_loop(groups, size, k):
    torch.manual_seed(1)
    x = torch.randn(2, 4, *size, dtype=torch.float64)
    Ho, Wo = D.output_size(size[0]), D.output_size(size[1])
    kernels = torch.randn(2, groups, k * k, Ho, Wo, dtype=torch.float64).softmax(2)
    kernels = kernels.view(2, -1, Ho, Wo)
    expected = reassembly_loop(x, kernels, k, groups)
    torch.testing.assert_close(D.strided_reassembly(x, kernels, k, groups), expected)
    torch.testing.assert_close(D.strided_reassembly_op(x, kernels, k, groups), expected)


def test_reassembly_gradcheck():
    torch.manual_seed(2)
    x = torch.randn(1, 2, 5, 6, dtype=torch.float64, requires_grad=True)
    kernels = torch.rand(1, 9, 3, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: D.strided_reassembly(a, b, 3), (x, kernels))


def test_carafe_pp_module_matches_the_loop_and_its_op_twin():
    torch.manual_seed(3)
    m = D.build_downsampler("carafe_pp", 6).double()
    with torch.no_grad():  # kernels far from uniform
        m.content_encoder.weight.normal_(std=0.5)
    x = torch.randn(1, 6, 7, 8, dtype=torch.float64)
    kernels = m.predict_kernels(x)
    assert kernels.shape == (1, 25, 4, 4)
    torch.testing.assert_close(kernels.sum(1), torch.ones(1, 4, 4, dtype=torch.float64))
    torch.testing.assert_close(m(x), reassembly_loop(x, kernels, 5))
    twin = D.build_downsampler("carafe_pp", 6, impl="op").double()
    twin.load_state_dict(m.state_dict())
    torch.testing.assert_close(twin(x), m(x))


def test_carafe_pp_starts_as_a_box_average():
    """The encoder starts near zero: every kernel starts uniform, the
    k_down x k_down average of the window (zero padding counted)."""
    m = D.build_downsampler("carafe_pp", 4)
    x = torch.randn(1, 4, 10, 10)
    box = F.avg_pool2d(x, 5, 2, 2, count_include_pad=True)
    torch.testing.assert_close(m(x), box, atol=2e-2, rtol=0)


def test_pools_match_torch_and_the_conv_window():
    x = torch.randn(1, 3, 7, 7)
    torch.testing.assert_close(D.build_downsampler("maxpool", 3)(x), F.max_pool2d(x, 3, 2, 1))
    avg = D.build_downsampler("avgpool", 3)(x)
    assert avg[0, 0, 0, 0] == pytest.approx(x[0, 0, :2, :2].mean().item(), abs=1e-6)


def test_options_and_errors():
    assert D.split_options({"up_kernel": 3}) == ({"up_kernel": 3}, None)
    assert D.split_options({"downsampler": "conv"}) == ({}, ("conv", {}))
    spec = {"downsampler": {"name": "carafe_pp", "down_kernel": 3}, "x": 1}
    assert D.split_options(spec) == ({"x": 1}, ("carafe_pp", {"down_kernel": 3}))
    with pytest.raises(ValueError, match="unknown downsampler"):
        D.build_downsampler("blur", 4)
    with pytest.raises(ValueError, match="down_kernel"):
        D.build_downsampler("carafe_pp", 4, down_kernel=4)
    with pytest.raises(ValueError, match="down_group"):
        D.build_downsampler("carafe_pp", 4, down_group=3)
    with pytest.raises(ValueError, match="kernels: expected shape"):
        D.strided_reassembly(torch.randn(1, 2, 6, 6), torch.rand(1, 9, 2, 2), 3)


# --- the downsamplers study ----------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_seg_model_with_each_downsampler(name):
    from carafe_lab.ablations import seg
    from carafe_lab.ablations.harness import trained_size

    torch.manual_seed(0)
    net = seg.SegNet("nearest", 8, downsampler=name)
    downs = [m for m in net.modules() if isinstance(m, D.DOWNSAMPLERS[name])]
    assert [m.channels for m in downs] == [8 * m for m in seg.DOWNSAMPLER_CHANNELS]
    x = torch.rand(2, 3, 32, 32)
    logits = net(x)
    assert logits.shape == (2, seg.NUM_CLASSES, 32, 32)
    logits.square().mean().backward()
    assert all(p.grad is not None for m in downs for p in m.parameters())
    # the table's counts are of these modules, at the setting's channels
    params, flops = trained_size("seg", "nearest", {"downsampler": name}, "quick")
    quick = seg.SETTINGS["quick"]["channels"]
    built = seg.SegNet("nearest", quick, downsampler=name)
    assert params == sum(
        sum(p.numel() for p in m.parameters())
        for m in built.modules()
        if isinstance(m, D.DOWNSAMPLERS[name])
    )
    assert flops == D.build_downsampler(name, quick).flops_per_pixel()


def test_seg_without_downsampler_is_unchanged():
    """The default model keeps its strided convs (saved models still load)."""
    from carafe_lab.ablations import seg

    net = seg.SegNet("nearest", 8)
    assert "enc1.0.0.weight" in net.state_dict() and net.enc1[0][0].stride == (2, 2)
    assert not any(isinstance(m, tuple(D.DOWNSAMPLERS.values())) for m in net.modules())


def test_carafe_pp_encoder_learns_at_the_kernel_rate():
    from carafe_lab.ablations import seg
    from carafe_lab.ablations.schedule import param_groups

    net = seg.SegNet("nearest", 8, downsampler="carafe_pp")
    rest, slow = param_groups(net, 1.0, 0.1)
    encoders = [m.content_encoder for m in net.modules() if isinstance(m, D.CARAFEDown)]
    assert len(encoders) == 3 and slow["lr"] == pytest.approx(0.1)
    assert {id(p) for p in slow["params"]} == {id(p) for e in encoders for p in e.parameters()}


def test_study_is_listed_and_runs_on_seg(tmp_path, capsys):
    import json

    from carafe_lab.ablations import harness
    from carafe_lab.ablations.__main__ import main
    from carafe_lab.ablations.studies import STUDIES, STUDY_TASKS

    assert STUDY_TASKS["downsamplers"] == ("seg", "det")
    assert main(["list"]) == 0
    assert "downsamplers: conv, maxpool, avgpool, carafe_pp" in capsys.readouterr().out
    with pytest.raises(ValueError, match="runs on"):
        harness.run_study("downsamplers", "sr", quick=True, out_root=tmp_path)
    out = harness.run_study(
        "downsamplers",
        "seg",
        quick=True,
        seeds=1,
        out_root=tmp_path,
        steps=1,
        log=lambda *_: None,
        variants=["conv", "carafe_pp"],
    )
    results = json.loads((out / "results.json").read_text())
    rows = {r["label"]: r for r in results["rows"]}
    assert [lb for lb, _, _ in STUDIES["downsamplers"]] == [
        "conv",
        "maxpool",
        "avgpool",
        "carafe_pp",
    ]
    conv, cpp = D.build_downsampler("conv", 256), D.build_downsampler("carafe_pp", 256)
    assert rows["carafe_pp"]["sized"] == "downsampler"
    assert rows["carafe_pp"]["params_c256_s2"] == sum(p.numel() for p in cpp.parameters())
    assert rows["conv"]["flops_per_pixel_c256_s2"] == conv.flops_per_pixel()
    assert rows["conv"]["downsampler_channels"] == [16, 16, 32]  # quick: 16 channels
    table = (out / "table.md").read_text()
    assert "downsampler params as trained (C=16, 16, 32)" in table
    assert "FLOPs/output px" in table and "carafe_pp - conv" in table


def _det_model(options):
    pytest.importorskip("mmdet", reason="the det task needs the mmdet extra")
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    from mmengine.config import Config

    import carafe_lab.experiments.backbones  # noqa: F401
    import carafe_lab.experiments.necks  # noqa: F401
    from carafe_lab import paths
    from carafe_lab.ablations import det

    register_all_modules()
    cfg = Config.fromfile(str(paths.configs() / det.CONFIG_NAME))
    overrides = det.offline_cfg_options("nearest", options, seed=0, max_epochs=1)
    cfg.merge_from_dict({k: v for k, v in overrides.items() if k.startswith("model.")})
    model = MODELS.build(cfg.model)
    model.init_weights()
    return model


def test_det_backbone_takes_the_carafe_pp_downsampler(monkeypatch):
    from pathlib import Path

    from carafe_lab.ablations import det
    from carafe_lab.ablations.harness import trained_size

    monkeypatch.chdir(Path(__file__).resolve().parent.parent)  # the lab root: its configs
    torch.manual_seed(0)
    model = _det_model({"downsampler": "carafe_pp"})
    backbone = model.backbone
    assert type(backbone).__name__ == "ZooDownResNet"
    downs = [m for m in backbone.modules() if isinstance(m, D.CARAFEDown)]
    assert tuple(m.channels for m in downs) == det.DOWNSAMPLER_CHANNELS
    # every stride-2 conv of the strided stages is gone; the stem keeps its own
    strided = [
        n
        for n, m in backbone.named_modules()
        if getattr(m, "stride", None) == (2, 2) and ".down." not in n
    ]
    assert strided == ["conv1"]
    # the downsampler's own init survived ResNet's Kaiming init
    assert all(m.content_encoder.weight.std() < 0.01 for m in downs)
    # the block's zero_init_residual init still reached the wrapped block
    assert backbone.layer2[0].block.norm2.weight.abs().sum() == 0
    model.eval()
    with torch.no_grad():
        feats = model.extract_feat(torch.randn(1, 3, 64, 64))
    assert [f.shape[-1] for f in feats] == [16, 8, 4, 2, 1]
    params, _ = trained_size("det", "nearest", {"downsampler": "carafe_pp"}, "quick")
    assert params == sum(p.numel() for m in downs for p in m.parameters())


def test_det_without_downsampler_keeps_resnet(monkeypatch):
    from pathlib import Path

    monkeypatch.chdir(Path(__file__).resolve().parent.parent)
    model = _det_model({})
    assert type(model.backbone).__name__ == "ResNet"
    assert model.backbone.layer2[0].conv1.stride == (2, 2)
