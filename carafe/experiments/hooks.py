"""mmengine hook that records what a run needs to be read later: the
environment (versions, device, git commit, command) and every evaluation's
metrics, in the run folder. Added to every run by the launcher."""

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from mmengine.dist import is_main_process
from mmengine.hooks import Hook
from mmengine.registry import HOOKS

REPO = Path(__file__).resolve().parents[2]


def environment(device: str) -> dict:
    import mmcv
    import mmdet
    import mmengine
    import torch

    import carafe
    info = {
        "python": platform.python_version(), "platform": platform.platform(),
        "torch": torch.__version__, "mmcv": mmcv.__version__, "mmdet": mmdet.__version__,
        "mmengine": mmengine.__version__, "carafe": carafe.__version__, "device": device,
        "cpu_count": os.cpu_count(), "command": " ".join(sys.argv),
    }
    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name(0)
    try:
        info["git_commit"] = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, check=True,
                                            capture_output=True, text=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        info["git_commit"] = None
    return info


def _progress(runner):
    """(epoch, iter) of the training loop, or (None, None) when the runner
    only tests: asking a test-only runner for them would build its training
    loop and data."""
    from mmengine.runner import BaseLoop
    if isinstance(getattr(runner, "_train_loop", None), BaseLoop):
        return runner.epoch, runner.iter
    return None, None


def _plain(value):
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value)


@HOOKS.register_module()
class CarafeRunRecorderHook(Hook):
    """Writes env.json at the start; after each validation or test appends
    the metrics to metrics.jsonl and rewrites metrics.json (the latest); at
    the end writes run.json (iterations, wall time, peak memory)."""

    priority = "VERY_LOW"

    def before_run(self, runner) -> None:
        if not is_main_process():
            return
        work_dir = Path(runner.work_dir)
        device = str(next(runner.model.parameters()).device)
        env = environment(device)
        env["started"] = time.strftime("%Y-%m-%d %H:%M:%S")
        env["world_size"] = runner.world_size
        path = work_dir / "env.json"
        # A resumed run keeps the first environment and lists the later ones.
        if path.exists():
            first = json.loads(path.read_text())
            first.setdefault("resumed", []).append(env)
            env = first
        path.write_text(json.dumps(env, indent=2) + "\n")

    def _record(self, runner, metrics, split):
        if not is_main_process() or not metrics:
            return
        work_dir = Path(runner.work_dir)
        epoch, iteration = _progress(runner)
        row = {"split": split, "epoch": epoch, "iter": iteration,
               **{k: _plain(v) for k, v in metrics.items()}}
        with open(work_dir / "metrics.jsonl", "a") as fh:
            fh.write(json.dumps(row) + "\n")
        (work_dir / ("metrics.json" if split == "val" else "test_metrics.json")).write_text(
            json.dumps(row, indent=2) + "\n")

    def after_run(self, runner) -> None:
        """run.json: how far the run got and what it cost (wall time of this
        session, peak memory)."""
        epoch, iteration = _progress(runner)
        if not is_main_process() or iteration is None:
            return
        import resource

        import torch
        work_dir = Path(runner.work_dir)
        env = json.loads((work_dir / "env.json").read_text())
        started = time.mktime(time.strptime((env.get("resumed") or [env])[-1]["started"],
                                            "%Y-%m-%d %H:%M:%S"))
        summary = {"epoch": epoch, "iter": iteration,
                   "wall_seconds": round(time.time() - started, 1),
                   "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                                         1)}
        if torch.cuda.is_available():
            summary["peak_cuda_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        path = work_dir / "run.json"
        previous = json.loads(path.read_text()) if path.exists() else {}
        # A resumed run adds its time to the earlier sessions'.
        if previous.get("iter", 0) < iteration:
            summary["wall_seconds"] += previous.get("wall_seconds", 0)
        path.write_text(json.dumps(summary, indent=2) + "\n")

    def after_val_epoch(self, runner, metrics=None) -> None:
        self._record(runner, metrics, "val")

    def after_test_epoch(self, runner, metrics=None) -> None:
        self._record(runner, metrics, "test")
