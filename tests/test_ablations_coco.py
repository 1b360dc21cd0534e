"""The det task's paper setting ("coco": R-50 FPN, COCO 2017, mmdet's 1x) as
the ablation harness runs it: the dry run, the data-root checks and, on two
gloo processes under torchrun, one tiny study on the offline shapes laid out
as COCO 2017 (the plumbing, not the paper's numbers)."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from carafe_lab.ablations import det, harness
from carafe_lab.ablations.__main__ import main
from carafe_lab.ablations.studies import STUDIES

REPO = Path(__file__).resolve().parent.parent


def test_dry_run_lists_the_study_and_its_cost_without_data(tmp_path, capsys):
    assert main(["run", "upsamplers", "--task", "det", "--setting", "coco", "--dry-run",
                 "--out", str(tmp_path)]) == 0  # fmt: skip
    text = capsys.readouterr().out
    labels = [label for label, _, _ in STUDIES["upsamplers"]]
    for i, label in enumerate(labels):
        assert f"runs/{i:02d}_{label}_seed0" in text
    assert det.COCO_CONFIG_NAME in text and "--data-root" in text
    per_run = det.cost("coco")
    hours = per_run["train_gpu_hours"] + 12 * per_run["eval_gpu_hours"]
    # 0.216 s/iter x 90,000 iterations x 8 GPUs, plus 12 evaluations of 5,000 images at 22.2/s
    assert round(per_run["train_gpu_hours"], 1) == 43.2 and round(hours, 1) == 44.0
    assert f"{len(labels) * hours:.0f} V100 GPU-hours" in text
    assert "MODEL_ZOO.md" in text and "not measured" in text
    assert not any(tmp_path.iterdir()), "a dry run writes nothing"


def test_the_coco_schedule_is_the_configs_own():
    """The coco setting overrides no schedule: mmdet's 1x (12 epochs) as the
    config reads it, the number the cost assumes."""
    pytest.importorskip("mmdet", reason="the det task needs the mmdet extra")
    from carafe_lab.experiments.launcher import load_config

    assert det.SETTINGS["coco"]["max_epochs"] is None
    options = det.coco_cfg_options("carafe", {}, 0, "/data/coco")
    assert not any(k.startswith(("train_cfg", "param_scheduler", "optim")) for k in options)
    cfg = load_config(REPO / "experiments" / "configs" / det.COCO_CONFIG_NAME, options)
    assert cfg.train_cfg.max_epochs == det.cost("coco")["evaluations_per_run"] == 12
    assert cfg.train_cfg.val_interval == 1
    assert cfg.val_evaluator.ann_file == "/data/coco/annotations/instances_val2017.json"
    assert cfg.train_dataloader.dataset.data_root == "/data/coco/"
    assert cfg.model.neck.out_channels == det.COCO_FPN_CHANNELS


def test_data_root_errors_name_the_argument(tmp_path):
    with pytest.raises(ValueError, match="data_root: .*needs --data-root"):
        harness.run_study("upsamplers", "det", setting="coco", out_root=tmp_path)
    with pytest.raises(ValueError, match="lacks annotations/instances_train2017.json"):
        harness.run_study("upsamplers", "det", setting="coco", data_root=tmp_path)
    with pytest.raises(ValueError, match="data_root: only the det task's 'coco'"):
        harness.run_study("upsamplers", "det", data_root=tmp_path, out_root=tmp_path)
    with pytest.raises(ValueError, match="setting: task 'det' has settings"):
        harness.run_study("upsamplers", "det", setting="cocoa", out_root=tmp_path)
    with pytest.raises(ValueError, match="data_root: task 'sr' does not take it"):
        harness.run_study("upsamplers", "sr", data_root=tmp_path, out_root=tmp_path)
    with pytest.raises(ValueError, match="jobs: torchrun"):
        harness.run_study("upsamplers", "det", jobs=2, launcher="pytorch", out_root=tmp_path)
    assert not any(tmp_path.iterdir())


def coco_layout(root):
    """The offline shapes (8 training, 4 held-out images) laid out as COCO
    2017 at root: annotations/instances_{train,val}2017.json with COCO's 80
    category names (the shapes take the first four), train2017/, val2017/."""
    from mmdet.datasets import CocoDataset

    from carafe_lab.experiments.data import ensure_offline_coco

    shapes = ensure_offline_coco(root.parent / "shapes", num_train=8, num_val=4, size=64)
    (root / "annotations").mkdir(parents=True)
    categories = [
        {"id": i + 1, "name": name} for i, name in enumerate(CocoDataset.METAINFO["classes"])
    ]
    for split in ("train", "val"):
        ann = json.loads((shapes / "annotations" / f"instances_{split}.json").read_text())
        ann["categories"] = categories  # the shapes' ids are 1..4 already
        (root / "annotations" / f"instances_{split}2017.json").write_text(json.dumps(ann))
        (root / f"{split}2017").symlink_to(shapes / split)
    return root


#: The coco setting shrunk to seconds on a CPU: a ResNet-18 from random init
#: (no download), 64-pixel images, one epoch, no loader workers; every box
#: kept, as the barely trained model scores none above mmdet's 0.05.
TINY = [
    "model.test_cfg.rcnn.score_thr=0.0",
    "model.backbone.depth=18",
    "model.backbone.init_cfg=None",
    "model.neck.in_channels=[64,128,256,512]",
    "train_dataloader.dataset.pipeline.2.scale=(64,64)",
    "val_dataloader.dataset.pipeline.1.scale=(64,64)",
    "train_dataloader.num_workers=0",
    "train_dataloader.persistent_workers=False",
    "val_dataloader.num_workers=0",
    "val_dataloader.persistent_workers=False",
    "train_cfg.max_epochs=1",
]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_coco_setting_trains_one_run_on_two_gloo_ranks(tmp_path):
    pytest.importorskip("mmdet", reason="the det task needs the mmdet extra")
    data = coco_layout(tmp_path / "coco")
    out = tmp_path / "ablations"
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
        f"--master_port={free_port()}", "-m", "carafe_lab.ablations", "run", "upsamplers",
        "--task", "det", "--setting", "coco", "--data-root", str(data), "--variants", "nearest",
        "--out", str(out), "--cfg-options", *TINY,
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.count("wrote ") == 1  # rank 0 only
    (study,) = (out / "upsamplers" / "det").iterdir()  # one folder: the ranks agreed on it
    results = json.loads((study / "results.json").read_text())
    assert results["complete"] and results["setting"] == "coco"
    assert results["data_root"] == str(data.resolve())
    assert results["cfg_options"]["train_cfg.max_epochs"] == 1
    (row,) = results["rows"]
    assert row["label"] == "nearest" and row["upsampler_channels"] == [256] * 4
    (seed,) = row["seeds"]
    assert 0 <= seed["bbox_mAP"] <= 1
    (run,) = [p for p in (study / "runs").iterdir() if p.is_dir()]
    assert seed["work_dir"] == str(run) and run.name == "00_nearest_seed0"
    assert json.loads((run / "env.json").read_text())["world_size"] == 2  # both ranks trained it
    assert not list(study.glob("results.json.tmp"))
    dumped = (run / det.COCO_CONFIG_NAME).read_text()
    assert "'CARAFEZooFPN'" in dumped and f"{data.resolve()}/annotations" in dumped
