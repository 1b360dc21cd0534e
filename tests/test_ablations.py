"""The ablation harness: every study runs end to end on the sr task at a tiny
size and writes results.json (every variant), table.md and a figure; the seg
task and its metrics; the det task's neck (and, slow, a tiny det run)."""

import json
import subprocess
import sys

import pytest

pytest.importorskip("skimage", reason="the sr task needs scikit-image's photographs")
pytest.importorskip("matplotlib", reason="figures need matplotlib")

from pathlib import Path  # noqa: E402

import torch  # noqa: E402

from carafe_lab.ablations import harness, paper, report, seg  # noqa: E402
from carafe_lab.ablations.studies import STUDIES, STUDY_TASKS  # noqa: E402
from carafe_lab.readme import read_section  # noqa: E402
from carafe_lab.upsamplers import UPSAMPLERS  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("study", sorted(s for s in STUDIES if "sr" in STUDY_TASKS.get(s, ("sr",))))
def test_study_runs(study, tmp_path):
    out = harness.run_study(
        study, "sr", quick=True, seeds=2, out_root=tmp_path, steps=2, log=lambda *_: None
    )
    results = json.loads((out / "results.json").read_text())
    expected = [label for label, _, _ in harness.select_variants(study, task="sr")]
    assert [r["label"] for r in results["rows"]] == expected
    for row in results["rows"]:
        assert len(row["seeds"]) == 2
        for s in row["seeds"]:
            assert 10 < s["psnr"] < 60 and 0 < s["ssim"] <= 1
            assert 10 < s["bicubic_psnr"] < 60
        assert row["psnr_std"] >= 0 and row["params_c256_s2"] >= 0
    table = (out / "table.md").read_text()
    assert all(row["label"] in table for row in results["rows"])
    assert (out / "figure.png").stat().st_size > 1000


def test_published_numbers_have_sources_and_match_the_shared_file():
    shared = REPO.parent / "shared" / "published-numbers.md"
    for task, by_study in paper.PUBLISHED.items():
        for study, entries in by_study.items():
            labels = {label for label, _, _ in STUDIES[study]}
            for label, (value, source) in entries.items():
                assert label in labels and source
                cell = paper.paper_cell(study, label, task)
                assert cell == paper.COLUMNS[task].cell.format(value)
                if shared.exists():  # the numbers are read from there, never typed from memory
                    assert f"{value:.1f}" in shared.read_text()
    if shared.exists():
        assert "1.1 dB (inpainting)" in shared.read_text()
    # studies without any published number get no column at all
    assert not paper.has_column("normalizer", "det") and paper.has_column("upsamplers", "det")
    # each column on the task its numbers were measured on, and on no other
    assert not paper.has_column("upsamplers", "seg") and not paper.has_column("upsamplers", "sr")
    assert paper.paper_cell("upsamplers", "gum", "det") == "-"


def test_unknown_study_and_task(tmp_path):
    with pytest.raises(ValueError, match="unknown study"):
        harness.run_study("bogus", out_root=tmp_path)
    with pytest.raises(ValueError, match="task 'bogus' is not available"):
        harness.run_study("upsamplers", "bogus", out_root=tmp_path)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error when CUDA is missing")
def test_cuda_device_without_cuda_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="device: 'cuda'"):
        harness.run_study("normalizer", "sr", device="cuda", out_root=tmp_path)


def test_mechanism_study_on_seg(tmp_path):
    """The mechanism study trains four arms and evaluates CARAFE's trained
    models with their phase-mean kernels (no training of its own); a study
    restricted to other tasks refuses sr."""
    out = harness.run_study(
        "mechanism", "seg", quick=True, seeds=2, out_root=tmp_path, steps=3, log=lambda *_: None
    )
    results = json.loads((out / "results.json").read_text())
    rows = {r["label"]: r for r in results["rows"]}
    assert results["complete"] and list(rows) == [lb for lb, _, _ in STUDIES["mechanism"]]
    swap, carafe_row = rows["carafe_phase_mean"], rows["carafe"]
    assert swap["evaluates"] == {"variant": "carafe", "evaluation": "phase_mean"}
    assert [s["of"] for s in swap["seeds"]] == [s["work_dir"] for s in carafe_row["seeds"]]
    assert "train_seconds" not in swap["seeds"][0]
    # the parameter control matches CARAFE's count within one hidden channel's worth
    assert (
        abs(rows["nearest_conv"]["params_trained"] - carafe_row["params_trained"])
        < 0.01 * carafe_row["params_trained"]
    )
    assert rows["static_carafe"]["params_trained"] == 3 * 100
    with pytest.raises(ValueError, match="study 'mechanism' runs on"):
        harness.run_study("mechanism", "sr", out_root=tmp_path)
    with pytest.raises(ValueError, match="choose 'carafe' too"):
        harness.run_study(
            "mechanism", "seg", quick=True, variants=["carafe_phase_mean"], out_root=tmp_path
        )


def test_seg_study_runs(tmp_path):
    out = harness.run_study(
        "upsamplers", "seg", quick=True, seeds=1, out_root=tmp_path, steps=2, log=lambda *_: None
    )
    results = json.loads((out / "results.json").read_text())
    assert [r["label"] for r in results["rows"]] == [label for label, _, _ in STUDIES["upsamplers"]]
    for row in results["rows"]:
        s = row["seeds"][0]
        assert 0 <= s["miou"] <= 1 and 0 <= s["boundary_f"] <= 1 and 0 <= s["pixel_acc"] <= 1
    assert "miou" in (out / "table.md").read_text()


def test_seg_data_is_the_offline_generator():
    x, y = seg.make_split(4, 64, seed=3)
    assert x.shape == (4, 3, 64, 64) and y.shape == (4, 64, 64)
    assert 0 <= x.min() and x.max() <= 1
    assert set(y.unique().tolist()) <= set(range(seg.NUM_CLASSES)) and (y > 0).any()
    x2, y2 = seg.make_split(4, 64, seed=3)
    assert torch.equal(x, x2) and torch.equal(y, y2)


def _square_labels(shift=0):
    y = torch.zeros(1, 64, 64, dtype=torch.long)
    y[:, 20:40, 20 + shift : 40 + shift] = 2
    return y


def test_seg_metrics():
    y = _square_labels()
    assert seg.miou(seg.confusion(y, y)) == 1.0
    assert seg.boundary_f(y, y) == 1.0
    # a 1 px shift is inside the 2 px boundary tolerance, a 6 px one is not
    assert seg.boundary_f(_square_labels(1), y) == 1.0
    assert seg.boundary_f(_square_labels(6), y) < 0.5
    # IoU of the shifted square: 20x14 / 20x26; background 64*64 - 20*26 union
    iou_sq = (20 * 14) / (20 * 26)
    iou_bg = (64 * 64 - 20 * 26) / (64 * 64 - 20 * 14)
    assert seg.miou(seg.confusion(_square_labels(6), y)) == pytest.approx((iou_sq + iou_bg) / 2)
    # predicting background everywhere: square class IoU 0, no predicted boundary
    assert seg.boundary_f(torch.zeros_like(y), y) == 0.0


def test_seg_rejects_scale_4():
    with pytest.raises(ValueError, match="scale"):
        seg.run("nearest", {}, scale=4, setting="quick", steps=1)


def test_cli_list():
    proc = subprocess.run(
        [sys.executable, "-m", "carafe_lab.ablations", "list"],
        capture_output=True,
        text=True,
        check=True,
    )
    for study, variants in STUDIES.items():
        assert study in proc.stdout and variants[-1][0] in proc.stdout


@pytest.mark.parametrize("name", sorted(UPSAMPLERS))
def test_det_neck_uses_the_zoo_upsampler(name):
    pytest.importorskip("mmdet", reason="the det task needs the mmdet extra")
    from mmdet.registry import MODELS

    import carafe_lab.experiments.necks  # noqa: F401
    from carafe_lab.upsamplers import build_upsampler

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
    kind = type(build_upsampler(name, 16, 2))
    assert len(neck.upsample_modules) == 3
    assert all(type(m) is kind for m in neck.upsample_modules)
    fresh = build_upsampler(name, 16, 2)
    if name in ("spatial_attention", "gum"):
        # their own init (start as nearest) survives FPN_CARAFE's xavier init
        for (k, v), w in zip(
            neck.upsample_modules[0].state_dict().items(), fresh.state_dict().values()
        ):
            assert torch.equal(v, w), k
    feats = [torch.randn(1, 8, 32, 32), torch.randn(1, 16, 16, 16), torch.randn(1, 32, 8, 8)]
    outs = neck(feats)
    assert [tuple(o.shape) for o in outs] == [
        (1, 16, 32, 32),
        (1, 16, 16, 16),
        (1, 16, 8, 8),
        (1, 16, 4, 4),
    ]
    sum(o.sum() for o in outs).backward()


def test_det_neck_needs_a_name():
    pytest.importorskip("mmdet", reason="the det task needs the mmdet extra")
    from mmdet.registry import MODELS

    import carafe_lab.experiments.necks  # noqa: F401

    with pytest.raises(ValueError, match="upsample_cfg: expected dict\\(type='zoo', name="):
        MODELS.build(
            dict(
                type="CARAFEZooFPN",
                in_channels=[8, 16],
                out_channels=8,
                num_outs=2,
                upsample_cfg=dict(type="zoo"),
            )
        )
    # the operator library's neck does not know the lab's zoo: a clear error
    with pytest.raises(ValueError, match="upsample_cfg: type must be one of .*got 'zoo'"):
        MODELS.build(
            dict(
                type="CARAFEOpFPN",
                in_channels=[8, 16],
                out_channels=8,
                num_outs=2,
                upsample_cfg=dict(type="zoo", name="nearest"),
            )
        )


@pytest.mark.slow
def test_det_task_trains_through_the_launcher(tmp_path, monkeypatch):
    pytest.importorskip("mmdet", reason="the det task needs the mmdet extra")
    from carafe_lab.ablations import det

    monkeypatch.chdir(REPO)  # the lab root: configs and the offline data
    result = det.run("dysample", {}, seed=0, setting="quick", steps=2, work_dir=tmp_path / "run")
    assert 0 <= result["bbox_mAP"] <= 1 and "bbox_mAP_50" in result
    cfg = (tmp_path / "run" / "faster-rcnn_r18_fpn-carafe_offline.py").read_text()
    assert "'zoo'" in cfg and "'dysample'" in cfg and "'CARAFEZooFPN'" in cfg


def test_report_and_tradeoff_figure(tmp_path):
    from carafe_lab.ablations import report

    out = harness.run_study(
        "normalizer", "sr", quick=True, seeds=1, out_root=tmp_path, steps=1, log=lambda *_: None
    )
    results = report.load_results(tmp_path)
    assert len(results) == 1 and results[0]["_dir"] == out
    assert report.latest(results) == {}  # quick runs are not reported as results
    assert list(report.latest(results, "quick")) == [("normalizer", "sr")]
    assert "No default-setting" in report.summary_markdown(tmp_path)
    fig = report.tradeoff_figure(results[0], tmp_path / "t.png")
    assert (tmp_path / "t.png").stat().st_size > 1000
    fig.clf()


def test_committed_results_cover_every_study():
    """Each study on sr at the default setting, and the upsamplers study on
    seg, are committed with every variant and at least 3 seeds."""
    from carafe_lab.ablations import report

    chosen = report.latest(report.load_results(REPO / "experiments" / "ablations"))
    wanted = [(study, "sr") for study in STUDIES if study not in STUDY_TASKS] + [
        ("upsamplers", "seg")
    ]
    # variants added to a study after its committed results were run: they
    # are missing there until it is rerun (then drop the entry)
    added_since = {}
    for key in wanted:
        assert key in chosen, f"no committed default-setting result for {key}"
        r = chosen[key]
        assert r["seeds"] >= 3
        expected = [
            label
            for label, _, _ in harness.select_variants(key[0], task=key[1])
            if label not in added_since.get(key, ())
        ]
        assert [row["label"] for row in r["rows"]] == expected


def test_committed_mechanism_studies_have_five_seeds_per_arm():
    """The mechanism study on seg and inpaint, the kernel_lr study on seg:
    complete, every arm with at least 5 seeds, CARAFE's runs with their
    kernel reports (seg, det: inpaint has no segments to score them by). The
    det mechanism study (hours of CPU) is committed complete the same way,
    or, while it runs across sessions, as partial results marked incomplete
    that `resume` continues."""
    import json as _json

    from carafe_lab.ablations import report

    root = REPO / "experiments" / "ablations"
    chosen = report.latest(report.load_results(root, warn=lambda message: None))
    keys = [
        ("mechanism", "seg"),
        ("kernel_lr", "seg"),
        ("mechanism", "det"),
        ("mechanism", "inpaint"),
    ]
    for key in keys:
        if key not in chosen:
            assert key == ("mechanism", "det"), f"no complete committed result for {key}"
            partial = [
                _json.loads(p.read_text())
                for p in (root / "mechanism" / "det").glob("*/results.json")
            ]
            assert partial and all(r["complete"] is False for r in partial)
            continue
        r = chosen[key]
        assert [row["label"] for row in r["rows"]] == [label for label, _, _ in STUDIES[key[0]]]
        assert all(len(row["seeds"]) >= 5 for row in r["rows"])
        for row in r["rows"] if key[1] != "inpaint" else ():  # inpaint has no segments to score
            if row["upsampler"] == "carafe" and "evaluates" not in row:
                assert all("kernels" in s for s in row["seeds"]), (key, row["label"])


def test_mechanism_verdict_in_readme_and_docs_is_the_committed_results():
    """Every sentence the README and docs say about the mechanism study is
    computed from the committed results (report.verdict_markdown)."""
    from carafe_lab.ablations import report

    root = REPO / "experiments" / "ablations"
    for page, expected in (
        (REPO / "README.md", report.verdict_markdown(root, kernel_lr=False).strip()),
        (REPO / "docs" / f"{report.DOCS_PAGE}.md", report.verdict_markdown(root).strip()),
    ):
        assert read_section(page, report.VERDICT_MARKERS).strip() == expected, (
            f"{page.name}: run `python -m carafe_lab.ablations report --update-docs`"
        )


def test_task_summary_in_readme_and_docs_is_the_committed_results():
    """The README's CARAFE-against-nearest line of each task is computed from
    the committed upsamplers results (report.tasks_markdown)."""
    from carafe_lab.ablations import report

    expected = report.tasks_markdown(REPO / "experiments" / "ablations").strip()
    for page in (REPO / "README.md", REPO / "docs" / f"{report.DOCS_PAGE}.md"):
        assert read_section(page, report.TASKS_MARKERS).strip() == expected, (
            f"{page.name}: run `python -m carafe_lab.ablations report --update-docs`"
        )


def test_task_summary_corrects_over_tasks_and_says_the_papers_gain(tmp_path):
    """Two tasks' upsamplers results: each line has the Welch interval with
    Holm's correction over both tasks, every seed, and the paper's gain where
    the paper had the task (sr: none)."""
    from carafe_lab.ablations import report
    from carafe_lab.stats import compare_seeds, holm

    seeds = {
        "seg": ([0.30, 0.31, 0.32], [0.20, 0.21, 0.19]),
        "sr": ([31.0, 31.1, 31.2], [31.0, 31.3, 31.1]),
    }
    metric = {"seg": "miou", "sr": "psnr"}
    for task, (a, b) in seeds.items():
        folder = tmp_path / "upsamplers" / task / "20260101_000000"
        folder.mkdir(parents=True)
        rows = [
            {"label": label, "seeds": [{metric[task]: v} for v in vals]}
            for label, vals in (("nearest", b), ("carafe", a))
        ]
        folder.joinpath("results.json").write_text(
            json.dumps(
                {
                    "study": "upsamplers",
                    "task": task,
                    "setting": "default",
                    "seeds": 3,
                    "rows": rows,
                    "psnr_channel": "Y",
                }
            )
        )
    text = report.tasks_markdown(tmp_path)
    lines = text.strip().splitlines()
    assert [line.split("`")[1] for line in lines] == ["seg", "sr"]
    ps = [compare_seeds(*seeds[t])["p"] for t in ("seg", "sr")]
    adjusted = holm(ps)
    assert f"p = {adjusted[0]:.2g}: resolved" in lines[0]
    assert f"p = {adjusted[1]:.2g}: not resolved" in lines[1]
    assert "carafe 0.300, 0.310, 0.320; nearest 0.200, 0.210, 0.190" in lines[0]
    assert "+1.8% mIoU" in lines[0] and "The paper has no such task" in lines[1]
    assert "No complete" in report.tasks_markdown(tmp_path / "none")


def test_docs_ablation_tables_are_the_committed_results():
    from carafe_lab.ablations import report

    section = read_section(REPO / "docs" / f"{report.DOCS_PAGE}.md", report.MARKERS)
    assert section.strip() == report.summary_markdown(REPO / "experiments" / "ablations").strip(), (
        "run `python -m carafe_lab.ablations report --update-docs`"
    )


def test_at_bicubic_counts_collapsed_seeds():
    from carafe_lab.ablations import sr

    row = {
        "seeds": [
            {"psnr": 29.2548, "bicubic_psnr": 29.2547},
            {"psnr": 30.1, "bicubic_psnr": 29.2547},
        ]
    }
    assert sr.at_bicubic(row) == 1
    # the table's column shows the same count
    assert dict(sr.TASK.columns)["seeds stuck at bicubic"](row) == "1"


def test_param_groups_slow_only_the_kernel_encoders():
    from carafe_lab.ablations.schedule import param_groups

    net = seg.SegNet("carafe", 8)
    groups = param_groups(net, 1e-3, 0.1)
    encoders = {id(p) for up in net.ups for p in up.content_encoder.parameters()}
    assert {id(p) for p in groups[1]["params"]} == encoders and groups[1]["lr"] == 1e-4
    assert len(groups[0]["params"]) + len(groups[1]["params"]) == len(list(net.parameters()))
    assert len(param_groups(seg.SegNet("nearest", 8), 1e-3)) == 1


def test_seg_decoder_kernels_and_scores():
    torch.manual_seed(0)
    net = seg.SegNet("carafe", 8).eval()
    x, y = seg.make_split(2, 64, seed=5)
    kernels = seg.decoder_kernels(net, x)
    assert list(kernels) == list(seg.LEVEL_STRIDES)
    assert kernels["1/2->1/1"].shape == (2, 1, 5, 5, 64, 64)
    assert kernels["1/8->1/4"].shape == (2, 1, 5, 5, 16, 16)
    reports = seg.kernel_reports(net, x, y)
    for rep in reports.values():
        kinds = rep["masses"]
        assert set(kinds) == {
            "carafe",
            "phase_mean",
            "permuted",
            "uniform",
            "gaussian",
            "bilinear",
            "nearest",
        }
        # an untrained CARAFE is a near-uniform 5 x 5 average: it mixes more
        # across boundaries than nearest's single tap, and its kernels hardly
        # depend on the content, so its own phase mean scores the same
        assert kinds["carafe"]["boundary"] < kinds["nearest"]["boundary"]
        assert abs(rep["ca"]) < 0.005 and rep["entropy"] > 3.2
    assert seg.kernel_scores(net, x, y) == {lv: r["masses"] for lv, r in reports.items()}


def test_variant_subset_in_parallel_processes(tmp_path):
    out = harness.run_study(
        "normalizer",
        "sr",
        quick=True,
        seeds=2,
        out_root=tmp_path,
        steps=1,
        log=lambda *_: None,
        variants=["softmax", "sigmoid"],
        jobs=2,
    )
    results = json.loads((out / "results.json").read_text())
    # the study's order, not the order asked for; every seed of every variant
    assert [r["label"] for r in results["rows"]] == ["sigmoid", "softmax"]
    assert [[s["seed"] for s in r["seeds"]] for r in results["rows"]] == [[0, 1], [0, 1]]
    assert results["jobs"] == 2 and results["threads_per_run"] >= 1
    assert all(10 < s["psnr"] < 60 for r in results["rows"] for s in r["seeds"])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(variants=["bogus"]), r"variants: \['bogus'\] not in study"),
        (dict(variants=[]), "variants"),
        (dict(jobs=0), "jobs: expected an integer >= 1"),
        (dict(seeds=0), "seeds: expected an integer >= 1"),
    ],
)
def test_bad_study_arguments_are_named(kwargs, match, tmp_path):
    with pytest.raises(ValueError, match=match):
        harness.run_study("normalizer", "sr", quick=True, out_root=tmp_path, steps=1, **kwargs)
    assert not any(tmp_path.iterdir())  # nothing written for a refused call


def test_an_interrupted_study_saves_as_it_goes_and_resumes(tmp_path, monkeypatch):
    calls = []
    real = harness._run_one

    def flaky(task, name, options, kwargs, threads):
        calls.append((name, options, kwargs["seed"]))
        if len(calls) == 3:
            raise KeyboardInterrupt  # the user stops the study during its third training
        return real(task, name, options, kwargs, threads)

    monkeypatch.setattr(harness, "_run_one", flaky)
    with pytest.raises(KeyboardInterrupt):
        harness.run_study(
            "normalizer",
            "sr",
            quick=True,
            seeds=2,
            out_root=tmp_path,
            steps=1,
            log=lambda *_: None,
            variants=["sigmoid", "softmax"],
        )
    (out,) = list((tmp_path / "normalizer" / "sr").iterdir())
    partial = json.loads((out / "results.json").read_text())
    assert partial["complete"] is False
    # seed-major order: seed 0 of both variants, then seed 1 (interrupted)
    assert [len(r["seeds"]) for r in partial["rows"]] == [1, 1]
    warnings = []
    assert report.load_results(tmp_path, warn=warnings.append) == []
    assert "incomplete" in warnings[0] and "resume" in warnings[0]
    # resume runs only what is missing, into the same folder
    assert harness.resume_study(out, log=lambda *_: None) == out
    assert len(calls) == 5  # 3 before (one interrupted) + the two seed-1 trainings
    final = json.loads((out / "results.json").read_text())
    assert final["complete"] is True and [len(r["seeds"]) for r in final["rows"]] == [2, 2]
    assert final["rows"][0]["seeds"][:1] == partial["rows"][0]["seeds"]  # kept, not rerun
    assert (out / "table.md").exists() and len(report.load_results(tmp_path)) == 1
    with pytest.raises(ValueError, match="complete; nothing to resume"):
        harness.resume_study(out)


def test_two_studies_in_the_same_second_keep_both_results(tmp_path):
    outs = [
        harness.run_study(
            "normalizer",
            "sr",
            quick=True,
            seeds=1,
            out_root=tmp_path,
            steps=1,
            log=lambda *_: None,
            variants=["softmax"],
        )
        for _ in range(2)
    ]
    assert outs[0] != outs[1] and all((o / "results.json").exists() for o in outs)


def test_damaged_results_are_skipped_by_the_report(tmp_path):
    for name, text in [("a", "{not json"), ("b", "[1, 2]"), ("c", "")]:
        d = tmp_path / "upsamplers" / "sr" / name
        d.mkdir(parents=True)
        (d / "results.json").write_text(text)
    warnings = []
    assert report.load_results(tmp_path, warn=warnings.append) == []
    assert len(warnings) == 3 and all("skipping" in w and "results.json" in w for w in warnings)
    report.summary_markdown(tmp_path)  # still renders (with nothing to show)


def _fake_results(study, task, per_label):
    rows = []
    for label, name, options in STUDIES[study]:
        values = per_label[label]
        rows.append(
            {
                "label": label,
                "upsampler": name,
                "options": options,
                "params_c256_s2": 1,
                "flops_per_pixel_c256_s2": 1,
                "seeds": [{"seed": i, "miou": v, "boundary_f": v} for i, v in enumerate(values)],
            }
        )
    return {
        "study": study,
        "task": task,
        "setting": "default",
        "scale": 2,
        "seeds": len(next(iter(per_label.values()))),
        "rows": rows,
    }


def test_tables_bold_only_resolved_differences_and_keep_published_on_det():
    from carafe_lab.ablations import tables

    clear = [0.30, 0.31, 0.29, 0.30, 0.31]
    per = {
        label: [v + 0.001 * i for v in clear]
        for i, (label, _, _) in enumerate(STUDIES["upsamplers"])
    }
    per["carafe"] = [0.50, 0.52, 0.49, 0.51, 0.50]  # far above every other
    text = tables.study_markdown(_fake_results("upsamplers", "seg", per))
    assert paper.column("det").header not in text  # measured on detection, not seg
    bold = [line for line in text.splitlines() if "**" in line and line.startswith("| ")]
    assert len(bold) == 1 and bold[0].startswith("| carafe - nearest")
    assert "0.500, 0.520, 0.490, 0.510, 0.500" in text  # every seed shown
    assert "3 x C=24" in text and "Holm" in text
    # the mechanism study's comparisons, the swap paired with its own models
    mech = {
        "nearest": clear,
        "carafe": per["carafe"],
        "static_carafe": clear,
        "carafe_phase_mean": [v - 0.01 for v in per["carafe"]],
        "nearest_conv": clear,
    }
    text = tables.study_markdown(_fake_results("mechanism", "seg", mech))
    assert "| carafe - carafe_phase_mean |" in text and "paired t" in text
    from carafe_lab.ablations import verdict

    sentences = verdict.mechanism_sentences(_fake_results("mechanism", "seg", mech))
    assert any(
        s.startswith("seg miou, carafe - static_carafe")
        and s.endswith("resolved.")
        and "not resolved" not in s
        for s in sentences
    )


def test_seg_training_does_not_depend_on_the_callers_thread_count():
    """seg trains with a fixed intra-op thread count (seg.TRAIN_THREADS), so
    a notebook's model is the study's model, whatever torch's setting."""
    before = torch.get_num_threads()
    results = []
    try:
        for threads in (2, 1):
            torch.set_num_threads(threads)
            model, _, _ = seg.train_model("carafe", {}, seed=3, setting="quick", steps=6)
            results.append(seg.evaluate_model(model, *seg.validation_split("quick")))
            assert torch.get_num_threads() == threads  # restored afterwards
    finally:
        torch.set_num_threads(before)
    assert results[0] == results[1]


def test_a_failed_training_leaves_the_others_and_resume_fills_it(tmp_path, monkeypatch):
    real = harness._run_one

    def flaky(task, name, options, kwargs, threads):
        if options.get("normalizer") == "sigmoid" and kwargs["seed"] == 0:
            raise RuntimeError("a broken training")
        return real(task, name, options, kwargs, threads)

    monkeypatch.setattr(harness, "_run_one", flaky)
    logged = []
    out = harness.run_study(
        "normalizer",
        "sr",
        quick=True,
        seeds=2,
        out_root=tmp_path,
        steps=1,
        log=logged.append,
        variants=["sigmoid", "softmax"],
    )
    partial = json.loads((out / "results.json").read_text())
    assert partial["complete"] is False
    assert [[s["seed"] for s in r["seeds"]] for r in partial["rows"]] == [[1], [0, 1]]
    assert any("sigmoid seed 0 failed (RuntimeError: a broken training)" in m for m in logged)
    monkeypatch.setattr(harness, "_run_one", real)
    harness.resume_study(out, log=lambda *_: None)
    final = json.loads((out / "results.json").read_text())
    assert final["complete"] and [len(r["seeds"]) for r in final["rows"]] == [2, 2]


def test_sr_reports_a_wide_border_shave_beside_the_conventional_one():
    from carafe_lab.ablations import sr

    model = sr.SRNet("nearest", 2, 8)
    scores = sr.evaluate(model.eval(), 2, 64)
    for name in ("psnr", "ssim", "bicubic_psnr", "bicubic_ssim"):
        assert f"{name}_shave{sr.WIDE_SHAVE}" in scores
    # different borders, different numbers (the crops are not constant)
    assert scores["bicubic_psnr_shave8"] != scores["bicubic_psnr"]
    row = {"seeds": [{"psnr_shave8": 30.0}, {"psnr_shave8": 31.0}, {"psnr_shave8": 32.0}]}
    assert sr._wide_shave_cell(row).startswith("31.000 [")
    assert sr._wide_shave_cell({"seeds": [{"psnr": 30.0}]}) is None


def test_kernel_init_study_runs_on_sr_and_inpaint():
    from carafe_lab.ablations.studies import STUDIES, STUDY_TASKS

    labels = [label for label, _, _ in STUDIES["kernel_init"]]
    assert labels == [
        "nearest",
        "bilinear",
        "carafe",
        "carafe_init=nearest",
        "carafe_init=bilinear",
    ]
    assert STUDY_TASKS["kernel_init"] == ("sr", "inpaint")
