"""The ins task (Mask R-CNN on the offline shapes): the upsampler under test
in the FPN and the mask head, its registration, its published column, clear
errors, and (slow) a tiny run through the launcher."""

from pathlib import Path

import pytest
import torch

pytest.importorskip("mmdet", reason="the ins task needs the mmdet extra")

from carafe_lab.ablations import harness, ins, paper  # noqa: E402
from carafe_lab.ablations.studies import STUDIES  # noqa: E402
from carafe_lab.upsamplers import UPSAMPLERS, build_upsampler  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def _mask_head(name, **options):
    from mmdet.registry import MODELS

    import carafe_lab.experiments.necks  # noqa: F401  (registers CARAFEZooMaskHead)

    return MODELS.build(
        dict(
            type="CARAFEZooMaskHead",
            num_convs=2,
            in_channels=16,
            conv_out_channels=16,
            num_classes=4,
            upsample_cfg=dict(type="zoo", name=name, scale_factor=2, **options),
        )
    )


@pytest.mark.parametrize("name", ["nearest", "carafe", "deconv", "dysample"])
def test_mask_head_uses_the_zoo_upsampler(name):
    head = _mask_head(name)
    head.init_weights()
    assert type(head.upsample) is type(build_upsampler(name, 16, 2))
    assert head.upsample_method == ("deconv" if name == "deconv" else "zoo")  # mmdet's ReLU
    if name == "carafe":
        # the CARAFE pack with the paper's (and the offline config's) sizes
        up = head.upsample
        assert (up.up_kernel, up.encoder_kernel, up.compressed_channels) == (5, 3, 64)
    fresh = head._zoo_init  # the zoo's own init survives FCNMaskHead's
    for k, v in head.upsample.state_dict().items():
        assert torch.equal(v, fresh[k]), k
    out = head(torch.randn(3, 16, 14, 14))
    assert tuple(out.shape) == (3, 4, 28, 28)
    out.sum().backward()


def test_mask_head_options_reach_the_upsampler():
    head = _mask_head("carafe", compressed_channels=16, up_kernel=3)
    assert (head.upsample.compressed_channels, head.upsample.up_kernel) == (16, 3)


def test_ins_config_puts_the_upsampler_in_the_neck_and_the_mask_head():
    from mmdet.registry import MODELS

    from carafe_lab import paths
    from carafe_lab.ablations import det
    from carafe_lab.experiments.launcher import load_config

    options = det.offline_cfg_options("carafe", {}, 0, 1, steps=1)
    options.update(ins.mask_head_options("carafe", {}))
    cfg = load_config(paths.configs() / ins.CONFIG_NAME, cfg_options=options)
    model = MODELS.build(cfg.model)
    kind = type(build_upsampler("carafe", 128, 2))
    assert [type(m) for m in model.neck.upsample_modules] == [kind] * 4
    assert type(model.roi_head.mask_head.upsample) is kind
    # the task's declared upsamplers are the model's
    assert ins.TASK.upsampler_channels("default") == (
        *(m.channels for m in model.neck.upsample_modules),
        model.roi_head.mask_head.upsample.channels,
    )


def test_bad_variants_are_clear_errors(tmp_path):
    from mmdet.registry import MODELS

    import carafe_lab.experiments.necks  # noqa: F401

    with pytest.raises(ValueError, match="upsample_cfg: expected dict\\(type='zoo', name="):
        MODELS.build(dict(type="CARAFEZooMaskHead", upsample_cfg=dict(type="carafe")))
    with pytest.raises(ValueError, match="unknown upsampler 'bogus'"):
        _mask_head("bogus")
    with pytest.raises(ValueError, match="upsampler: expected one of .*got 'bogus'"):
        ins.run("bogus", {}, setting="quick", steps=1, work_dir=tmp_path / "run")
    assert not (tmp_path / "run").exists()
    with pytest.raises(ValueError, match="variants: \\['bogus'\\] not in study 'upsamplers'"):
        harness.run_study("upsamplers", "ins", variants=["bogus"], out_root=tmp_path)
    with pytest.raises(ValueError, match="scale"):
        ins.run("nearest", {}, scale=4, setting="quick", steps=1)
    # the phase-mean swap touches the neck only: not offered on ins
    with pytest.raises(ValueError, match="study 'mechanism' runs on"):
        harness.run_study("mechanism", "ins", out_root=tmp_path)


def test_ins_is_a_registered_task_with_its_published_column():
    assert harness.TASKS["ins"] is ins and harness.metrics_of("ins") == ("segm_mAP", "segm_mAP_50")
    assert ins.TASK.shown("segm_mAP", 0.357) == pytest.approx(35.7)  # percent, as det's AP
    assert paper.has_column("upsamplers", "ins") and not paper.has_column("normalizer", "ins")
    assert paper.paper_cell("upsamplers", "nearest", "ins") == "34.2"
    assert paper.paper_cell("upsamplers", "carafe", "ins") == "35.7"
    assert paper.paper_cell("upsamplers", "dysample", "ins") == "-"
    assert "33d3d3a" in paper.source("upsamplers", "ins")


def test_ins_table_shows_mask_ap_in_percent_and_the_published_column():
    from carafe_lab.ablations import tables

    rows = []
    for i, (label, name, options) in enumerate(STUDIES["upsamplers"]):
        mask_ap = [0.30 + 0.01 * i + 0.001 * s for s in range(3)]
        seeds = [
            {"seed": s, "segm_mAP": v, "segm_mAP_50": 0.6, "bbox_mAP": 0.4}
            for s, v in enumerate(mask_ap)
        ]
        rows.append(
            {
                "label": label,
                "upsampler": name,
                "options": options,
                "params_c256_s2": 1,
                "flops_per_pixel_c256_s2": 1,
                "seeds": seeds,
            }
        )
    results = dict(study="upsamplers", task="ins", setting="default", scale=2, seeds=3, rows=rows)
    text = tables.study_markdown(results)
    assert paper.column("ins").header in text and "33d3d3a" in text
    assert "30.0, 30.1, 30.2" in text  # nearest's mask AP per seed, in percent
    assert "| 34.2 |" in text and "| 35.7 |" in text
    assert "params as trained (5 x C=128)" in text  # four FPN steps and the mask head


@pytest.mark.slow
def test_ins_task_trains_through_the_launcher(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)  # the lab root: configs and the offline data
    result = ins.run("carafe", {}, seed=0, setting="quick", steps=1, work_dir=tmp_path / "run")
    assert 0 <= result["segm_mAP"] <= 1 and "segm_mAP_50" in result and "bbox_mAP" in result
    assert result["threads"] == 1
    cfg = (tmp_path / "run" / ins.CONFIG_NAME).read_text()
    assert "'CARAFEZooMaskHead'" in cfg and "'CARAFEZooFPN'" in cfg and "'carafe'" in cfg


def test_every_zoo_upsampler_fits_the_mask_head():
    """All but those that need an encoder feature, which the head refuses by
    name (and the studies leave out on ins)."""
    from carafe_lab.ablations import harness
    from carafe_lab.upsamplers import needs_skip

    for name in sorted(UPSAMPLERS):
        if needs_skip(name):
            with pytest.raises(ValueError, match="needs an encoder feature"):
                _mask_head(name)
            continue
        assert tuple(_mask_head(name)(torch.randn(1, 16, 14, 14)).shape) == (1, 4, 28, 28)
    labels = [v[0] for v in harness.select_variants("upsamplers", task="ins")]
    assert "carafe" in labels and "fade" not in labels and "sapa" not in labels
