"""What a result was measured on, recorded beside it (benchmarks, detection
runs, the GPU check): one description of the machine and the software."""

import os
import platform
import re
import subprocess
import sys
from contextlib import contextmanager


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            return re.search(r"model name\s*:\s*(.*)", fh.read()).group(1).strip()
    except (OSError, AttributeError):
        return platform.processor() or "unknown"


def git_commit(folder, short=False):
    """HEAD of the git checkout around folder, with "-dirty" appended when
    tracked files differ from it (as `git describe --dirty` marks it: the
    result then came from code no commit holds), or None outside a checkout."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", *(["--short"] if short else []), "HEAD"],
            cwd=folder,
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        changed = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=folder,
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        return head + ("-dirty" if changed else "")
    except (OSError, subprocess.CalledProcessError):
        return None


def describe(device="cpu", commit_of=None, short_commit=False) -> dict:
    """{platform, python, torch, carafe, cpu, cpu_count, torch_threads, command}
    and, for a CUDA device, {gpu, gpu_memory_gib, cuda, capability}; with
    commit_of (a folder) also git_commit, the checkout's HEAD."""
    import torch

    import carafe

    info = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "carafe": carafe.__version__,
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "command": " ".join(sys.argv),
    }
    if str(device).startswith("cuda"):
        props = torch.cuda.get_device_properties(0)
        info.update(
            gpu=props.name,
            gpu_memory_gib=round(props.total_memory / 2**30, 1),
            cuda=torch.version.cuda,
            capability=f"{props.major}.{props.minor}",
        )
    if commit_of is not None:
        info["git_commit"] = git_commit(commit_of, short_commit)
    return info


@contextmanager
def intra_op_threads(n):
    """torch's intra-op thread count set to n inside the block, restored
    after: a training whose float sums must not depend on the machine's
    thread count (torch's own CPU kernels split their sums by thread) runs
    with a fixed count."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
