"""Run folders kept lean: one config per group of runs plus each run's
overrides, rebuilding every run's dumped config exactly."""

import json
from pathlib import Path

import pytest

pytest.importorskip("mmengine", reason="reading configs needs the mmdet extra (mmengine)")

from carafe_lab.experiments import compact  # noqa: E402

REPO = Path(__file__).resolve().parent.parent

BASE = """model = dict(neck=dict(type='CARAFEZooFPN', upsample_cfg=dict(type='zoo', name='carafe')),
             backbone=dict(depth=18))
randomness = dict(seed=0)
pipeline = [dict(type='LoadImageFromFile'), dict(type='Resize', scale=(128, 128))]
work_dir = '{work_dir}'
extra = dict(only_here=1)
"""


def _run(group, name, **changes):
    run = group / name
    run.mkdir(parents=True)
    text = BASE.format(work_dir=run)
    for old, new in changes.items():
        text = text.replace(old, new)
    (run / "faster-rcnn_r18_fpn-carafe_offline.py").write_text(text)
    return run


def test_overrides_rebuild_each_dump_exactly(tmp_path):
    runs = [
        _run(tmp_path, "a"),
        _run(tmp_path, "b", **{"seed=0": "seed=3", "name='carafe'": "name='nearest'"}),
        _run(
            tmp_path,
            "c",
            **{"extra = dict(only_here=1)\n": "", "scale=(128, 128)": "scale=(64, 64)"},
        ),
    ]
    for run in runs:
        compact.record(run)
    assert json.loads((tmp_path / "b" / "overrides.json").read_text())["set"] == {
        "model.neck.upsample_cfg.name": "nearest",
        "randomness.seed": 3,
        "work_dir": str(tmp_path / "b"),
    }
    overrides_c = json.loads((tmp_path / "c" / "overrides.json").read_text())
    assert overrides_c["delete"] == ["extra.only_here"]
    assert overrides_c["set"]["pipeline"][1]["scale"] == [64, 64]
    for run in runs:
        dumped = compact.config_dict(compact.dump_of(run))
        (run / "faster-rcnn_r18_fpn-carafe_offline.py").unlink()  # as a clone has it
        assert compact.rebuild(run) == dumped
    with pytest.raises(FileNotFoundError, match="neither a dumped config"):
        compact.rebuild(tmp_path / "missing")
    with pytest.raises(ValueError, match="one dumped config"):
        compact.record(tmp_path / "a")


def _committed_runs():
    for env in sorted(REPO.glob("experiments/runs/*/*/env.json")):
        yield env.parent
    for env in sorted(REPO.glob("experiments/ablations/*/*/*/runs/*/env.json")):
        results = env.parent.parent.parent / "results.json"
        if json.loads(results.read_text()).get("complete"):  # not a study still running
            yield env.parent


@pytest.mark.parametrize("run", list(_committed_runs()), ids=lambda p: str(p.relative_to(REPO)))
def test_committed_runs_rebuild_their_config(run):
    """Every committed run keeps overrides.json beside its group's
    config.json (the dumps are not committed), and the rebuilt config says
    what the run recorded: its seed, and in a study its upsampler."""
    assert (run / compact.OVERRIDES).exists() and (run.parent / compact.GROUP_CONFIG).exists()
    overrides = json.loads((run / compact.OVERRIDES).read_text())
    cfg = compact.apply(json.loads((run.parent / compact.GROUP_CONFIG).read_text()), overrides)
    command = json.loads((run / "env.json").read_text()).get("command", "")
    if "randomness.seed=" in command:
        assert f"randomness.seed={cfg['randomness']['seed']}" in command
    results = run.parent.parent / "results.json"  # a study's run
    if results.exists():
        rows = json.loads(results.read_text())["rows"]
        ((row, seed),) = [
            (r, s) for r in rows for s in r["seeds"] if Path(s.get("work_dir", "")).name == run.name
        ]
        assert cfg["randomness"]["seed"] == seed["seed"]
        assert cfg["model"]["neck"]["upsample_cfg"]["name"] == row["upsampler"]
