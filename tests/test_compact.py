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
optim_wrapper = dict(paramwise_cfg=dict(custom_keys={'neck.upsample': dict(lr_mult=0.1)}))
randomness = dict(seed=0)
pipeline = [dict(type='LoadImageFromFile'), dict(type='Resize', scale=(128, 128))]
work_dir = '{work_dir}'
extra = dict(only_here=1)
"""


def _run(group, name, **changes):
    run = group / name
    run.mkdir(parents=True)
    text = BASE.replace("{work_dir}", str(run))
    for old, new in changes.items():
        text = text.replace(old, new)
    (run / "faster-rcnn_r18_fpn-carafe_offline.py").write_text(text)
    return run


def test_overrides_rebuild_each_dump_exactly(tmp_path):
    changes_c = {
        "extra = dict(only_here=1)\n": "",
        "scale=(128, 128)": "scale=(64, 64)",
        "lr_mult=0.1": "lr_mult=0.5",
    }
    runs = [
        _run(tmp_path, "a"),
        _run(tmp_path, "b", **{"seed=0": "seed=3", "name='carafe'": "name='nearest'"}),
        _run(tmp_path, "c", **changes_c),
    ]
    for run in runs:
        compact.record(run)
    assert json.loads((tmp_path / "b" / "overrides.json").read_text())["set"] == [
        [["model", "neck", "upsample_cfg", "name"], "nearest"],
        [["randomness", "seed"], 3],
        [["work_dir"], str(tmp_path / "b")],
    ]
    overrides_c = json.loads((tmp_path / "c" / "overrides.json").read_text())
    assert overrides_c["delete"] == [["extra", "only_here"]]
    set_c = {tuple(path): value for path, value in overrides_c["set"]}
    # a key with a dot in it is one key
    path = ("optim_wrapper", "paramwise_cfg", "custom_keys", "neck.upsample", "lr_mult")
    assert set_c[path] == 0.5
    for run in runs:
        dumped = compact.rebuild(run)  # from the dump while it is there
        assert dumped["pipeline"][1]["scale"] in ((128, 128), (64, 64))  # tuples stay tuples
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
    group = json.loads((run.parent / compact.GROUP_CONFIG).read_text())
    cfg = compact.decode(compact.apply(group, overrides))
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
