"""Where the lab reads and writes: one place, resolved when asked, never from
``__file__`` (an installed package lives in site-packages, where nothing of a
user's should land).

The lab root is, in order:

1. ``$CARAFE_LAB_ROOT`` when set (it must be an existing folder);
2. the nearest folder at or above the working directory that holds
   ``experiments/configs/`` (a checkout of this repository, or a project laid
   out like one), found the way git finds its repository;
3. the working directory itself.

Under it, as in the repository::

    experiments/configs/        the mmdetection configs
    experiments/runs/           training runs (launcher)
    experiments/evaluations/    test runs of a checkpoint (launcher)
    experiments/results/        the summary of the runs (summarize)
    experiments/ablations/      ablation studies (harness)
    data/offline_coco/          the offline shapes dataset (generated on first use)
    docs/<page>.md              the generated tables (only with --update-docs)

mmdetection resolves a config's relative ``data_root`` against the working
directory too, so running from the root keeps the two in agreement.
"""

import os
from pathlib import Path

ENV = "CARAFE_LAB_ROOT"


def root() -> Path:
    """The lab root (see the module docstring), absolute."""
    env = os.environ.get(ENV)
    if env:
        path = Path(env).expanduser().resolve()
        if not path.is_dir():
            raise NotADirectoryError(f"${ENV}={env!r}: expected an existing folder")
        return path
    cwd = Path.cwd().resolve()
    for folder in (cwd, *cwd.parents):
        if (folder / "experiments" / "configs").is_dir():
            return folder
    return cwd


def configs() -> Path:
    return root() / "experiments" / "configs"


def runs() -> Path:
    return root() / "experiments" / "runs"


def evaluations() -> Path:
    return root() / "experiments" / "evaluations"


def results() -> Path:
    return root() / "experiments" / "results"


def ablations() -> Path:
    return root() / "experiments" / "ablations"


def offline_data() -> Path:
    return root() / "data" / "offline_coco"


def readme() -> Path:
    return root() / "README.md"


def docs() -> Path:
    return root() / "docs"


def docs_page(name: str) -> Path:
    """docs/<name>.md under the lab root: the page a report writes its table
    into (``--update-docs``)."""
    return docs() / f"{name}.md"


def relative(path) -> str:
    """path relative to the lab root when it lies under it (for tables and
    messages), else absolute."""
    path = Path(path).resolve()
    try:
        return str(path.relative_to(root()))
    except ValueError:
        return str(path)
