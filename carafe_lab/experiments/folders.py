"""Run and study folders: created atomically, never shared by two runs."""

import time
from pathlib import Path


def new_folder(parent, now=None) -> Path:
    """Create and return parent/<YYYYmmdd_HHMMSS>, or <...>_2, _3, ... when
    another run took that name in the same second. mkdir without exist_ok is
    the atomic claim: two processes can never get the same folder."""
    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d_%H%M%S", time.localtime(now))
    for i in range(1, 10000):
        folder = parent / (stamp if i == 1 else f"{stamp}_{i}")
        try:
            folder.mkdir()
        except FileExistsError:
            continue
        return folder
    raise RuntimeError(f"new_folder: no free name for {stamp} under {parent}")


def is_empty(folder) -> bool:
    """True when folder holds no files (empty subfolders do not count)."""
    return not any(p.is_file() for p in Path(folder).rglob("*"))


def remove_if_empty(folder) -> None:
    """Remove folder if a failed run left no file in it."""
    folder = Path(folder)
    if folder.is_dir() and is_empty(folder):
        for p in sorted(folder.rglob("*"), reverse=True):
            p.rmdir()
        folder.rmdir()
