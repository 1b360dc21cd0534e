"""Nothing lost, nothing executed: checkpoints load as data, run and study
folders are never shared, test/resume never damage a run, and a user's
mistake ends in one line and exit status 2, with nothing left behind."""

import json
import os
import pickle
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("mmdet", reason="needs the mmdet extra (mmdet, mmcv, mmengine)")

from conftest import tree_digest  # noqa: E402

from carafe_lab.experiments import checkpoints  # noqa: E402
from carafe_lab.experiments.__main__ import main  # noqa: E402
from carafe_lab.experiments.folders import new_folder  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
CONFIG = REPO / "experiments" / "configs" / "faster-rcnn_r18_fpn-carafe_offline.py"


class Payload:
    """Unpickling this runs code: it creates the marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class Getattr:
    """Pickles as getattr(obj, name), the way HistoryBuffer's methods do."""

    def __init__(self, obj, name):
        self.obj, self.name = obj, name

    def __reduce__(self):
        return (getattr, (self.obj, self.name))


def mmengine_like_checkpoint(path):
    """The non-tensor types an mmengine checkpoint holds (numpy scalars,
    arrays and dtypes; HistoryBuffer, whose statistics methods pickle as
    getattr(HistoryBuffer, name))."""
    from mmengine.logging.history_buffer import HistoryBuffer

    buffer = HistoryBuffer()
    buffer.update(0.5)
    torch.save(
        {
            "meta": {
                "seed": np.int64(3),
                "lr": np.float64(0.1),
                "arr": np.zeros(3),
                "dtype": np.dtype("float32"),
            },
            "state_dict": {"w": torch.ones(2)},
            "message_hub": {"log_scalars": {"train/lr": buffer}},
        },
        path,
    )
    return path


def test_mmengine_checkpoint_types_load_as_weights_only(tmp_path):
    loaded = checkpoints.load(mmengine_like_checkpoint(tmp_path / "ok.pth"))
    assert loaded["meta"]["seed"] == 3 and loaded["meta"]["arr"].shape == (3,)
    assert loaded["message_hub"]["log_scalars"]["train/lr"].current() == 0.5


def test_a_checkpoint_cannot_run_code(tmp_path):
    marker = tmp_path / "PWNED"
    torch.save({"state_dict": {}, "meta": Payload(marker)}, tmp_path / "evil.pth")
    with pytest.raises(
        checkpoints.CheckpointError, match=r"refused to unpickle .*--trust-checkpoint .*evil\.pth"
    ):
        checkpoints.load(tmp_path / "evil.pth")
    assert not marker.exists()
    # the allow-list was scoped to the load: plain torch.load still refuses
    with pytest.raises(pickle.UnpicklingError):
        torch.load(tmp_path / "evil.pth", weights_only=True)
    # a getattr that is not a HistoryBuffer statistic is refused too
    torch.save({"x": Getattr(np.ndarray, "tofile")}, tmp_path / "getattr.pth")
    with pytest.raises(checkpoints.CheckpointError):
        checkpoints.load(tmp_path / "getattr.pth")
    assert not marker.exists()
    # the explicit opt-in, for that one file only, and only inside the block
    with checkpoints.trusting(tmp_path / "evil.pth"):
        checkpoints.load(tmp_path / "evil.pth")
    assert marker.exists()
    marker.unlink()
    with pytest.raises(checkpoints.CheckpointError):
        checkpoints.load(tmp_path / "evil.pth")
    assert not marker.exists()


@pytest.mark.parametrize(
    "content,match",
    [
        (b"", "an empty file"),
        (b"not a checkpoint" * 8, "cannot be read"),
        ("truncated", "cannot be read"),
    ],
)
def test_damaged_checkpoints_are_named(tmp_path, content, match):
    path = tmp_path / "bad.pth"
    if content == "truncated":
        data = mmengine_like_checkpoint(tmp_path / "ok.pth").read_bytes()
        content = data[: len(data) // 2]
    path.write_bytes(content)
    with pytest.raises(checkpoints.CheckpointError, match=match):
        checkpoints.load(path)


def test_urls_are_refused_through_mmengine_too(tmp_path):
    from mmengine.runner.checkpoint import CheckpointLoader

    checkpoints.install()
    with pytest.raises(checkpoints.CheckpointError, match="URLs are not loaded"):
        CheckpointLoader.load_checkpoint("https://example.org/model.pth")
    marker = tmp_path / "PWNED"
    torch.save({"state_dict": {}, "meta": Payload(marker)}, tmp_path / "evil.pth")
    with pytest.raises(checkpoints.CheckpointError):
        CheckpointLoader.load_checkpoint(str(tmp_path / "evil.pth"))
    assert not marker.exists()


def test_new_folders_are_never_shared(tmp_path):
    now = 1_800_000_000.0  # every call in the same second
    got = []
    threads = [
        threading.Thread(target=lambda: got.append(new_folder(tmp_path, now))) for _ in range(16)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(got)) == 16 and all(p.is_dir() for p in got)
    assert sorted(p.name for p in got)[0].endswith(time_stamp(now))


def time_stamp(now):
    import time

    return time.strftime("%Y%m%d_%H%M%S", time.localtime(now))


def cli(capsys, *args):
    """(exit status, stderr) of the launcher's command line, in-process."""
    try:
        rc = main([str(a) for a in args])
    except SystemExit as e:  # argparse's own errors
        rc = e.code
    return rc, capsys.readouterr().err


def one_line_error(err):
    lines = [line for line in err.splitlines() if line.strip()]
    return (
        "Traceback" not in err
        and lines
        and lines[-1].startswith(("error:", "python -m carafe_lab.experiments"))
    )


def test_cli_mistakes_end_in_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    marker = tmp_path / "PWNED"
    torch.save({"state_dict": {}, "meta": Payload(marker)}, tmp_path / "evil.pth")
    (tmp_path / "broken.py").write_text("model = dict(\n")
    full = tmp_path / "full"
    full.mkdir()
    (full / "notes.txt").write_text("mine")
    cases = [
        (["train", tmp_path / "missing.py"], "config: "),
        (["train", tmp_path / "broken.py"], "cannot be read"),
        (["train", CONFIG, "--cfg-options", "max_epochs"], "expected KEY=VALUE"),
        (
            ["train", CONFIG, "--resume", "--work-dir", tmp_path / "nothing"],
            "no checkpoint to resume from",
        ),
        (["train", CONFIG, "--work-dir", full], "already holds files"),
        (
            [
                "train",
                CONFIG,
                "--work-dir",
                tmp_path / "new",
                "--cfg-options",
                f"load_from={tmp_path / 'evil.pth'}",
            ],
            "refused to unpickle",
        ),
        (
            [
                "train",
                CONFIG,
                "--work-dir",
                tmp_path / "new",
                "--cfg-options",
                "load_from=https://example.org/x.pth",
            ],
            "URLs are not loaded",
        ),
        (
            ["test", CONFIG, tmp_path / "evil.pth", "--work-dir", tmp_path / "new"],
            "refused to unpickle",
        ),
        (
            ["test", CONFIG, tmp_path / "missing.pth", "--work-dir", tmp_path / "new"],
            "no such file",
        ),
    ]
    for args, message in cases:
        rc, err = cli(capsys, *args)
        assert rc == 2, (args, err)
        assert one_line_error(err) and message in err, (args, err)
    assert not marker.exists()
    assert not (tmp_path / "new").exists() and not (tmp_path / "nothing").exists()
    assert (full / "notes.txt").read_text() == "mine" and len(list(full.iterdir())) == 1
    # --debug gives the traceback instead
    with pytest.raises(Exception, match="config: "):
        main(["train", str(tmp_path / "missing.py"), "--debug"])


def test_a_failed_resume_leaves_the_run_as_it_was(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "env.json").write_text(json.dumps({"started": "2026-01-01 00:00:00"}))
    (run / "epoch_1.pth").write_bytes(b"garbage" * 10)
    (run / "last_checkpoint").write_text(str(run / "epoch_1.pth"))
    (run / "faster-rcnn_r18_fpn-carafe_offline.py").write_text("# the run's config\n")
    before = tree_digest(run)
    rc, err = cli(capsys, "train", CONFIG, "--work-dir", run, "--resume")
    assert rc == 2 and "cannot be read" in err and one_line_error(err)
    assert tree_digest(run) == before


def test_a_run_that_fails_to_start_leaves_no_folder(tmp_path, capsys, monkeypatch):
    """The folder is claimed before the data are prepared; a failure there
    (here: a parameter the generator does not know) removes it again."""
    monkeypatch.chdir(tmp_path)
    work_dir = tmp_path / "run"
    rc, err = cli(
        capsys,
        "train",
        CONFIG,
        "--work-dir",
        work_dir,
        "--cfg-options",
        "offline_data.no_such_parameter=1",
    )
    assert rc == 2 and one_line_error(err) and "no_such_parameter" in err, err
    assert not work_dir.exists()


def test_the_command_line_without_mmengine(monkeypatch, capsys):
    """--help works and train says what to install, when the mmdet stack is
    missing (simulated: the modules cannot be imported)."""
    for name in ("mmengine", "mmengine.config", "mmdet"):
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0 and "train" in capsys.readouterr().out
    rc, err = cli(capsys, "train", CONFIG)
    assert rc == 2 and "needs the mmdet extra" in err and one_line_error(err)
