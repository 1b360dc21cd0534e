"""Detection experiments: the mmdet plugin, configs, offline data, launcher
(train, test, resume, torchrun) and summaries. Needs the mmdet extra
(installed by `make setup`); skipped with the reason where it is missing."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

mmdet = pytest.importorskip("mmdet", reason="needs the mmdet extra (mmdet, mmcv, mmengine)")

from conftest import tree_digest  # noqa: E402

import carafe  # noqa: E402
from carafe_lab.experiments import data as offline_data  # noqa: E402
from carafe_lab.readme import read_section  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
CONFIGS = REPO / "experiments" / "configs"
TOP_CONFIGS = sorted(p for p in CONFIGS.glob("*.py"))
TINY = [
    "offline_data.num_train=8",
    "offline_data.num_val=4",
    "default_hooks.logger.interval=1",
    "train_dataloader.batch_size=2",
]


def build_model(config):
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    from mmengine.config import Config

    register_all_modules()
    cfg = Config.fromfile(str(config))
    # COCO configs start from ImageNet weights, which cannot be downloaded here.
    detector = cfg.model.model if cfg.model.type == "CARAFEConverted" else cfg.model
    detector.backbone.init_cfg = None
    model = MODELS.build(cfg.model)
    model.init_weights()
    return model


def launch(*args, cwd, timeout=900, env=None):
    """Run the launcher as a user would; returns the completed process."""
    cmd = [sys.executable, "-W", "ignore", "-m", "carafe_lab.experiments", *args]
    proc = subprocess.run(
        cmd,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def train_losses(run_dir):
    rows = []
    for path in sorted(Path(run_dir).glob("*/vis_data/scalars.json")):
        rows += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r["loss"] for r in rows if "loss" in r]


@pytest.mark.parametrize("config", TOP_CONFIGS, ids=lambda p: p.stem)
def test_config_builds(config):
    model = build_model(config)
    packs = [m for m in model.modules() if isinstance(m, carafe.CARAFEPack)]
    if "carafe" in config.stem:
        assert packs, "a CARAFE config must use our CARAFEPack"
        for p in packs:  # init_weights kept mmcv's CARAFEPack initialisation
            assert p.content_encoder.weight.std() < 0.01
    else:
        assert not packs


@pytest.mark.parametrize(
    "ours,stock",
    [
        ("faster-rcnn_r50_fpn-carafe_1x_coco.py", "carafe/faster-rcnn_r50_fpn-carafe_1x_coco.py"),
        ("mask-rcnn_r50_fpn-carafe_1x_coco.py", "carafe/mask-rcnn_r50_fpn-carafe_1x_coco.py"),
    ],
)
def test_mmdet_checkpoints_load_unchanged(ours, stock):
    """A checkpoint of mmdet's stock CARAFE config loads into ours with no
    missing or unexpected keys (same keys, same shapes)."""
    from mmcv.ops.carafe import CARAFEPack as MMCVCARAFEPack

    ours_model = build_model(CONFIGS / ours)
    stock_model = build_model(Path(mmdet.__file__).parent / ".mim" / "configs" / stock)
    ours_sd, stock_sd = ours_model.state_dict(), stock_model.state_dict()
    assert {k: tuple(v.shape) for k, v in ours_sd.items()} == {
        k: tuple(v.shape) for k, v in stock_sd.items()
    }
    result = ours_model.load_state_dict(stock_sd, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    assert any(isinstance(m, MMCVCARAFEPack) for m in stock_model.modules())
    assert not any(isinstance(m, MMCVCARAFEPack) for m in ours_model.modules())


def test_neck_runs_our_op_on_cpu():
    from mmdet.registry import MODELS

    import carafe.mmdet  # noqa: F401

    neck = MODELS.build(
        dict(
            type="CARAFEOpFPN",
            in_channels=[8, 16, 32],
            out_channels=16,
            num_outs=4,
            upsample_cfg=dict(type="carafe_op", up_kernel=5, compressed_channels=8),
        )
    )
    neck.init_weights()
    feats = [torch.randn(1, 8, 32, 32), torch.randn(1, 16, 16, 16), torch.randn(1, 32, 8, 8)]
    outs = neck(feats)
    assert [tuple(o.shape) for o in outs] == [
        (1, 16, 32, 32),
        (1, 16, 16, 16),
        (1, 16, 8, 8),
        (1, 16, 4, 4),
    ]
    sum(o.sum() for o in outs).backward()


def test_names_of_carafe_0_2_still_build():
    """Configs and checkpoints written with carafe 0.2's registry names (and
    the lab's upsample type of then) build the same modules."""
    from mmdet.registry import MODELS

    import carafe.mmdet
    import carafe_lab.experiments.necks  # noqa: F401  (registers the lab's old type name)
    from carafe.modules import CARAFEPack

    old = MODELS.build(
        dict(
            type="CARAFELabFPN",
            in_channels=[8, 16],
            out_channels=8,
            num_outs=2,
            upsample_cfg=dict(type="carafe_lab", up_kernel=3),
        )
    )
    assert isinstance(old, carafe.mmdet.CARAFEOpFPN)
    assert any(isinstance(m, CARAFEPack) for m in old.upsample_modules)
    head = MODELS.build(
        dict(
            type="CARAFELabMaskHead",
            num_convs=1,
            in_channels=8,
            conv_out_channels=8,
            num_classes=2,
            upsample_cfg=dict(type="carafe_op", scale_factor=2),
        )
    )
    assert isinstance(head.upsample, CARAFEPack)


def test_config_naming_a_removed_module_says_where_it_went(tmp_path):
    from carafe_lab.experiments.launcher import LaunchError, load_config

    config = tmp_path / "old.py"
    config.write_text(
        "custom_imports = dict(imports=['carafe.experiments.offline_dataset'], "
        "allow_failed_imports=False)\n"
    )
    with pytest.raises(
        LaunchError,
        match="imports carafe.experiments, removed in carafe 0.3.0: "
        "the module is carafe_lab.experiments ",
    ):
        load_config(config)


def test_offline_dataset(tmp_path):
    a = offline_data.generate(tmp_path / "a", num_train=6, num_val=2, size=128, seed=3)
    b = offline_data.generate(tmp_path / "b", num_train=6, num_val=2, size=128, seed=3)
    for split in ("train", "val"):
        ja = json.loads((a / "annotations" / f"instances_{split}.json").read_text())
        jb = json.loads((b / "annotations" / f"instances_{split}.json").read_text())
        assert ja == jb  # deterministic
        assert [c["name"] for c in ja["categories"]] == list(offline_data.CLASSES)
        for ann in ja["annotations"]:
            x, y, w, h = ann["bbox"]
            assert 0 <= x and 0 <= y and x + w <= 128 and y + h <= 128
            assert 0 < ann["area"] <= w * h and ann["segmentation"]
    assert (a / "train" / "000000.png").read_bytes() == (b / "train" / "000000.png").read_bytes()
    big = offline_data.generate(tmp_path / "big", num_train=40, num_val=1, size=256, seed=0)
    areas = [
        a["area"]
        for a in json.loads((big / "annotations" / "instances_train.json").read_text())[
            "annotations"
        ]
    ]
    assert min(areas) < 32**2 and max(areas) > 96**2  # small and large objects
    root = offline_data.ensure_offline_coco(tmp_path / "c", num_train=2, num_val=1, size=64)
    stamp = (root / "meta.json").stat().st_mtime
    offline_data.ensure_offline_coco(tmp_path / "c", num_train=2, num_val=1, size=64)
    assert (root / "meta.json").stat().st_mtime == stamp  # reused, not regenerated
    smooth = offline_data.generate(
        tmp_path / "s", num_train=2, num_val=1, size=64, background="smooth", min_radius=6
    )
    assert (smooth / "train" / "000000.png").exists()
    with pytest.raises(ValueError, match="background"):
        offline_data.generate(tmp_path / "x", num_train=1, num_val=1, size=64, background="sky")
    with pytest.raises(ValueError, match="unknown parameter"):
        offline_data.ensure_offline_coco(tmp_path / "y", num_images=3)


def test_data_is_never_written_into_a_foreign_folder(tmp_path):
    mine = tmp_path / "my_coco"
    (mine / "annotations").mkdir(parents=True)
    (mine / "annotations" / "instances_train.json").write_text("{}")
    with pytest.raises(ValueError, match="did not write"):
        offline_data.ensure_offline_coco(mine, num_train=2, num_val=1, size=64)
    assert (mine / "annotations" / "instances_train.json").read_text() == "{}"


def test_config_states_the_generator_defaults():
    from mmengine.config import Config

    cfg = Config.fromfile(str(CONFIGS / "_base_" / "offline_shapes.py"))
    params = dict(cfg.offline_data)
    params.pop("root")
    assert params == offline_data.DEFAULT_PARAMS


def test_prepare_data_follows_the_datasets_data_root(tmp_path, monkeypatch):
    """A config that reads its own data_root gets the dataset generated
    there, not at the base config's default offline_data.root."""
    from carafe_lab.experiments import launcher

    calls = []
    monkeypatch.setattr(
        offline_data,
        "ensure_offline_coco",
        lambda root, **params: calls.append((str(root), params)),
    )
    cfg = launcher.load_config(
        CONFIGS / "faster-rcnn_r18_fpn-nearest_offline.py",
        {"train_dataloader.dataset.data_root": "data/other/"},
    )
    launcher.prepare_data(cfg)
    assert calls and calls[0][0] == "data/other/"


@pytest.fixture(scope="module")
def trained_runs(tmp_path_factory):
    """Short CPU training runs of the offline Faster and Mask R-CNN with our
    CARAFE (3 epochs of 4 iterations), then evaluation."""
    cwd = tmp_path_factory.mktemp("det")
    runs = {}
    for name in ("faster-rcnn_r18_fpn-carafe_offline", "mask-rcnn_r18_fpn-carafe_offline"):
        work_dir = cwd / "runs" / name / "run0"
        launch(
            "train",
            str(CONFIGS / f"{name}.py"),
            "--work-dir",
            str(work_dir),
            "--cfg-options",
            *TINY,
            "train_cfg.max_epochs=3",
            "train_cfg.val_interval=3",
            cwd=cwd,
        )
        runs[name] = work_dir
    return cwd, runs


@pytest.mark.slow
def test_training_loss_falls_and_metrics_are_written(trained_runs):
    _, runs = trained_runs
    for name, run in runs.items():
        losses = train_losses(run)
        assert len(losses) >= 10, name
        assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3, (name, losses)
        metrics = json.loads((run / "metrics.json").read_text())
        assert 0 <= metrics["coco/bbox_mAP"] <= 1
        if name.startswith("mask"):
            assert 0 <= metrics["coco/segm_mAP"] <= 1
        env = json.loads((run / "env.json").read_text())
        assert env["mmdet"] == mmdet.__version__ and env["carafe"] == carafe.__version__
        assert json.loads((run / "run.json").read_text())["iter"] == 12
        assert list(run.glob("*/*.log")) and (run / f"{name}.py").exists()


@pytest.mark.slow
def test_test_command_and_summarize(trained_runs, tmp_path):
    cwd, runs = trained_runs
    run = runs["faster-rcnn_r18_fpn-carafe_offline"]
    before = tree_digest(run)
    evaluation = tmp_path / "evaluation"
    launch(
        "test",
        str(CONFIGS / "faster-rcnn_r18_fpn-carafe_offline.py"),
        str(run / "epoch_3.pth"),
        "--work-dir",
        str(evaluation),
        "--cfg-options",
        *TINY,
        cwd=cwd,
    )
    assert "coco/bbox_mAP" in json.loads((evaluation / "test_metrics.json").read_text())
    # test only reads the run: same files, same bytes, no "resumed" entry
    assert tree_digest(run) == before and not (run / "test_metrics.json").exists()
    assert "resumed" not in json.loads((run / "env.json").read_text())
    launch("summarize", "--runs", str(cwd / "runs"), "--out", str(tmp_path), cwd=cwd)
    table = (tmp_path / "results.md").read_text()
    assert "| Faster R-CNN | CARAFE (ours) | offline shapes | 1 (0) | 12 |" in table
    assert "| Mask R-CNN | CARAFE (ours) | offline shapes | 1 (0) | 12 |" in table
    assert "Published COCO numbers (not ours" in table
    assert (tmp_path / "results.csv").read_text().startswith("config,run,seed,model,upsampler")
    assert (tmp_path / "loss_curves.png").stat().st_size > 1000
    assert (tmp_path / "ap_seeds.png").stat().st_size > 1000
    # the CARAFE FPN's kernels were scored against the ground truth at the end
    scores = json.loads((run / "kernel_scores.json").read_text())
    level = scores["levels"]["P3->P2"]
    assert set(level) == {
        "carafe",
        "phase_mean",
        "permuted",
        "uniform",
        "gaussian",
        "bilinear",
        "nearest",
    }
    assert all(0 <= v["boundary"] <= 1 and v["n_boundary"] > 0 for v in level.values())
    # ... and against their content-agnostic controls (kernel_report.json)
    report = json.loads((run / "kernel_report.json").read_text())["levels"]["P3->P2"]
    assert (
        report["ca"]
        == report["masses"]["carafe"]["boundary"] - report["masses"]["phase_mean"]["boundary"]
    )


def test_summarize_groups_seeds_and_skips_damaged_runs(tmp_path):
    from carafe_lab.experiments import summarize

    def run(config, name, seed, ap):
        d = tmp_path / config / name
        d.mkdir(parents=True)
        (d / "env.json").write_text(json.dumps({"device": "cpu"}))
        (d / "metrics.json").write_text(json.dumps({"coco/bbox_mAP": ap, "coco/bbox_mAP_l": -1}))
        (d / "run.json").write_text(json.dumps({"iter": 750, "wall_seconds": 600}))
        (d / f"{config}.py").write_text(f"randomness = dict(seed={seed})\n")
        return d

    for seed, (a, b) in enumerate([(0.30, 0.35), (0.31, 0.36), (0.29, 0.37)]):
        run("faster-rcnn_r18_fpn-nearest_offline", f"n{seed}", seed, a)
        run("faster-rcnn_r18_fpn-carafe_offline", f"c{seed}", seed, b)
    broken = run("faster-rcnn_r18_fpn-carafe_offline", "broken", 9, 0.9)
    (broken / "metrics.json").write_text("{not json")
    empty = run("faster-rcnn_r18_fpn-carafe_offline", "empty", 8, 0.9)
    (empty / "env.json").write_text("")
    listed = run("faster-rcnn_r18_fpn-carafe_offline", "listed", 7, 0.9)
    (listed / "run.json").write_text("[1, 2]")
    # a killed run leaves a truncated last line: the rows before it still count
    ok = tmp_path / "faster-rcnn_r18_fpn-nearest_offline" / "n0"
    (ok / "metrics.jsonl").write_text(json.dumps({"coco/bbox_mAP": 0.3}) + '\n{"coco/bb')
    (ok / "s" / "vis_data").mkdir(parents=True)
    (ok / "s" / "vis_data" / "scalars.json").write_text(
        json.dumps({"loss": 1.0, "iter": 1, "step": 1}) + '\n{"loss": 0.'
    )
    warnings = []
    rows = summarize.collect(tmp_path, warn=warnings.append)
    assert len(rows) == 6 and len(warnings) == 3
    assert all("skipping" in w for w in warnings) and any("metrics.json" in w for w in warnings)
    g = summarize.group(rows)
    nearest = g["faster-rcnn_r18_fpn-nearest_offline"]["box_ap"]
    assert nearest == pytest.approx((30.0, 1.0, 3))
    table = summarize.markdown(rows)
    assert "| 3 (0, 1, 2) | 750 | 36.0 ± 1.0 |" in table
    assert "box AP +6.0" in table and "resolved by these seeds (p < 0.05)" in table
    assert "| - |" in table  # APl of a split without large objects
    # the whole summary (tables, CSV, plots) is still written
    written = summarize.summarize(tmp_path, tmp_path / "out")
    assert all(Path(p).exists() for p in written)


@pytest.mark.slow
def test_resume_after_interruption(tmp_path):
    """Kill a run after its first checkpoint; --resume continues from it and
    both sessions' logs are kept."""
    config = str(CONFIGS / "faster-rcnn_r18_fpn-nearest_offline.py")
    work_dir = tmp_path / "run"
    # a checkpoint every epoch (the offline schedule keeps only the last)
    cmd = [
        sys.executable,
        "-W",
        "ignore",
        "-m",
        "carafe_lab.experiments",
        "train",
        config,
        "--work-dir",
        str(work_dir),
        "--cfg-options",
        *TINY,
        "train_cfg.max_epochs=3",
        "train_cfg.val_interval=3",
        "default_hooks.checkpoint.interval=1",
    ]
    proc = subprocess.Popen(
        cmd,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.time() + 600
    # mmengine writes last_checkpoint once epoch_1.pth is complete
    while not (work_dir / "last_checkpoint").exists() and proc.poll() is None:
        assert time.time() < deadline
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (work_dir / "epoch_3.pth").exists()
    first_logs = sorted(work_dir.glob("*/*.log"))
    first_text = first_logs[0].read_text()
    launch(
        "train",
        config,
        "--work-dir",
        str(work_dir),
        "--resume",
        "--cfg-options",
        *TINY,
        "train_cfg.max_epochs=3",
        "train_cfg.val_interval=3",
        "default_hooks.checkpoint.interval=1",
        cwd=tmp_path,
    )
    logs = sorted(work_dir.glob("*/*.log"))
    assert len(logs) == 2 and logs[0].read_text().startswith(first_text)
    resumed = logs[1].read_text()
    assert "resumed" in resumed.lower()
    assert "Epoch(train) [1]" not in resumed and "Epoch(train) [3]" in resumed
    assert (work_dir / "epoch_3.pth").exists()
    summary = json.loads((work_dir / "run.json").read_text())
    assert summary["iter"] == 12
    # the killed session's time is kept (run.json is written as training goes)
    assert len(summary["sessions"]) == 2 and summary["sessions"][0]["seconds"] > 0
    assert summary["wall_seconds"] == pytest.approx(
        sum(s["seconds"] for s in summary["sessions"]), abs=0.2
    )


def test_resume_finds_the_newest_checkpoint_when_last_checkpoint_names_a_removed_one(
    tmp_path, capsys
):
    """A run killed after mmengine removed its oldest checkpoint but before it
    rewrote last_checkpoint (this happened to test_resume_after_interruption
    once the kernels got faster) resumes from the newest checkpoint left."""
    from carafe_lab.experiments.launcher import resume_checkpoint

    for name in ("epoch_2.pth", "epoch_10.pth", "iter_99.pth", "epoch_x.pth", "best_epoch_20.pth"):
        (tmp_path / name).write_bytes(b"")
    named = str(tmp_path / "epoch_1.pth")
    assert resume_checkpoint(tmp_path, named) == str(tmp_path / "epoch_10.pth")
    assert "no longer exists" in capsys.readouterr().err
    assert resume_checkpoint(tmp_path, str(tmp_path / "iter_5.pth")) == str(
        tmp_path / "iter_99.pth"
    )
    # the file it names is used when it is there; nothing to fall back on: unchanged
    assert resume_checkpoint(tmp_path, str(tmp_path / "epoch_2.pth")) == str(
        tmp_path / "epoch_2.pth"
    )
    empty = tmp_path / "empty"
    empty.mkdir()
    assert resume_checkpoint(empty, str(empty / "epoch_1.pth")) == str(empty / "epoch_1.pth")


def test_resume_without_last_checkpoint_takes_the_newest_complete_checkpoint(tmp_path, capsys):
    """A run killed during its first save has epoch_N.pth files but no
    last_checkpoint yet, and its newest file may be cut short: resume takes
    the newest one that torch.save finished (a whole zip), and a folder with
    no checkpoint still says so."""
    from carafe_lab.experiments.launcher import LaunchError, train

    torch.save({"state_dict": {}}, tmp_path / "epoch_1.pth")
    whole = (tmp_path / "epoch_1.pth").read_bytes()
    (tmp_path / "epoch_2.pth").write_bytes(whole[: len(whole) // 2])  # killed mid-write
    assert resume_checkpoint_of(tmp_path) == str(tmp_path / "epoch_1.pth")
    assert "last_checkpoint is missing" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert resume_checkpoint_of(empty) is None
    with pytest.raises(LaunchError, match="no checkpoint to resume from"):
        train(CONFIGS / "faster-rcnn_r18_fpn-nearest_offline.py", work_dir=empty, resume=True)


def resume_checkpoint_of(folder):
    from carafe_lab.experiments.launcher import resume_checkpoint

    return resume_checkpoint(folder)


@pytest.mark.slow
def test_torchrun_two_processes_gloo(tmp_path):
    config = str(CONFIGS / "faster-rcnn_r18_fpn-carafe_offline.py")
    work_dir = tmp_path / "run"
    # No data yet: the two processes must not both write it (a file lock).
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        "--master_port=29531",
        "-m",
        "carafe_lab.experiments",
        "train",
        config,
        "--launcher",
        "pytorch",
        "--work-dir",
        str(work_dir),
        "--cfg-options",
        *TINY,
        "train_cfg.max_epochs=1",
        "train_cfg.val_interval=1",
    ]
    proc = subprocess.run(
        cmd,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"},
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    env = json.loads((work_dir / "env.json").read_text())
    assert env["world_size"] == 2
    assert "coco/bbox_mAP" in json.loads((work_dir / "metrics.json").read_text())
    # 8 images, 2 processes x batch 2: 2 iterations per epoch
    assert json.loads((work_dir / "run.json").read_text())["iter"] == 2


def test_docs_results_are_the_committed_summary():
    """The docs' detection tables are what summarize makes of the committed runs."""
    from carafe_lab.experiments import summarize

    rows = summarize.collect()
    assert rows, "no committed example runs under experiments/runs/"
    section = read_section(REPO / "docs" / f"{summarize.DOCS_PAGE}.md", summarize.MARKERS)
    assert section.strip() == summarize.docs_section(rows).strip(), (
        "run `python -m carafe_lab.experiments summarize --update-docs`"
    )
    committed = (REPO / "experiments" / "results" / "results.md").read_text()
    assert summarize.markdown(rows).strip() in committed


def test_data_command(tmp_path):
    launch("data", "--root", str(tmp_path / "shapes"), cwd=tmp_path)
    meta = json.loads((tmp_path / "shapes" / "meta.json").read_text())
    n = offline_data.DEFAULT_PARAMS["num_train"]
    assert meta["num_train"] == n and len(list((tmp_path / "shapes" / "train").glob("*.png"))) == n


def test_the_offline_dataset_generates_itself_from_any_entry_point(tmp_path):
    """mmdet's own tools (tools/train.py, mim train) build the dataset from
    the config alone: it writes the offline shapes at its data_root first."""
    from mmdet.registry import DATASETS
    from mmdet.utils import register_all_modules
    from mmengine.config import Config

    register_all_modules()
    cfg = Config.fromfile(str(CONFIGS / "faster-rcnn_r18_fpn-nearest_offline.py"))
    spec = cfg.train_dataloader.dataset
    spec.data_root = str(tmp_path / "offline") + "/"
    spec.offline_data = dict(spec.offline_data, num_train=8, num_val=4)
    dataset = DATASETS.build(spec)
    assert type(dataset).__name__ == "CarafeOfflineCocoDataset" and len(dataset) > 0
    assert (tmp_path / "offline" / "annotations" / "instances_train.json").exists()


def test_offline_data_options_reach_the_datasets(tmp_path):
    """--cfg-options offline_data.* (the top level) is what every offline
    dataset generates and reads, not the base config's defaults."""
    from carafe_lab.experiments import launcher

    cfg = launcher.load_config(
        CONFIGS / "faster-rcnn_r18_fpn-carafe_offline.py",
        {"offline_data.num_train": 8, "offline_data.num_val": 4},
    )
    for name in ("train_dataloader", "val_dataloader", "test_dataloader"):
        spec = cfg[name]["dataset"]
        assert spec["offline_data"]["num_train"] == 8 and spec["offline_data"]["num_val"] == 4


def test_yolox_converts_through_the_config_key_and_trains():
    """mmdet's YOLOX-s, its PAFPN's upsampling converted by the CARAFEConverted
    key: its one neck.upsample, called at two levels, becomes one CARAFEPack
    per channel count; a forward and a loss on generated images reach both."""
    from mmdet.structures import DetDataSample
    from mmengine.structures import InstanceData

    from carafe.convert import ChannelDispatchCARAFE

    torch.manual_seed(0)
    model = build_model(CONFIGS / "yolox_s-carafe_8xb8-300e_coco.py")
    stock = build_model(
        Path(mmdet.__file__).parent / ".mim" / "configs" / "yolox" / "yolox_s_8xb8-300e_coco.py"
    )
    up = model.neck.upsample
    assert isinstance(up, ChannelDispatchCARAFE) and up.channels == (128, 256)
    assert [(r.name, r.channels) for r in model.carafe_conversion.replaced] == [
        ("neck.upsample", (128, 256))
    ]
    # everything but the upsampler is the stock detector's
    ours = {k: v.shape for k, v in model.state_dict().items() if not k.startswith("neck.upsample.")}
    assert ours == {k: v.shape for k, v in stock.state_dict().items()}

    x = torch.rand(2, 3, 128, 128) * 255
    cls_scores, _, _ = model(x, mode="tensor")
    assert [tuple(c.shape) for c in cls_scores] == [(2, 80, 16, 16), (2, 80, 8, 8), (2, 80, 4, 4)]
    samples = []
    for _ in range(2):
        sample = DetDataSample(metainfo=dict(img_shape=(128, 128), batch_input_shape=(128, 128)))
        sample.gt_instances = InstanceData(
            bboxes=torch.tensor([[10.0, 20.0, 60.0, 90.0], [70.0, 30.0, 120.0, 100.0]]),
            labels=torch.tensor([1, 5]),
        )
        samples.append(sample)
    model.train()
    losses = model.loss(x, samples)
    assert set(losses) == {"loss_cls", "loss_bbox", "loss_obj"}
    sum(losses.values()).backward()
    for channels in ("128", "256"):
        grad = up.packs[channels].channel_compressor.weight.grad
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_predict_draws_the_top_k_scoring_boxes_over_the_threshold(monkeypatch):
    """What notebook 03 draws after a short run: each image's top_k boxes,
    highest score first, whatever their score (score_thr=0)."""
    from types import SimpleNamespace

    from carafe.mmcv_ext import install

    install()  # before mmdet.apis imports mmcv.ops (mmcv-lite)
    import mmdet.apis
    from mmengine.structures import InstanceData

    from carafe_lab.experiments import predict

    inst = InstanceData(
        bboxes=torch.arange(20.0).reshape(5, 4),
        scores=torch.tensor([0.2, 0.9, 0.1, 0.5, 0.3]),
        labels=torch.tensor([0, 1, 2, 3, 0]),
    )
    monkeypatch.setattr(
        mmdet.apis, "inference_detector", lambda model, path: SimpleNamespace(pred_instances=inst)
    )
    (top,) = predict.predict(None, ["a.png"], score_thr=0.0, top_k=2)
    assert top["scores"].tolist() == pytest.approx([0.9, 0.5])
    assert top["labels"].tolist() == [1, 3] and top["boxes"][:, 0].tolist() == [4.0, 12.0]
    (confident,) = predict.predict(None, ["a.png"], score_thr=0.25)
    assert confident["scores"].tolist() == pytest.approx([0.9, 0.5, 0.3])
    (none,) = predict.predict(None, ["a.png"], score_thr=0.95, top_k=3)
    assert none["boxes"].shape == (0, 4)
    with pytest.raises(ValueError, match="top_k: expected None or a positive int, got 0"):
        predict.predict(None, ["a.png"], top_k=0)
