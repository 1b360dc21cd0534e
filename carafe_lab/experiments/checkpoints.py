"""Checkpoints are data, not code: every checkpoint the launcher, the
ablation task or ``predict`` loads is unpickled with ``weights_only=True``
and an allow-list of the few non-tensor types mmengine's own checkpoints
hold (numpy arrays, scalars and dtypes in the meta and message hub,
mmengine's ``HistoryBuffer`` and its statistics methods). The allow-list is
scoped to each load (``torch.serialization.safe_globals``); nothing is set
process-wide and no environment variable is used.

A file with anything else in it is refused with :class:`CheckpointError`,
which names the file and the way to opt in for a file you trust:
``--trust-checkpoint FILE`` on the command line, ``trusted_checkpoint=FILE``
in Python. Only that file is then fully unpickled (which can run code it
contains). URLs are refused: download the file and pass its path.
"""

import contextlib
import pickle
from pathlib import Path

_TRUSTED = set()  # resolved paths the user has named as trusted, during trusting()
_INSTALLED = False


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded safely (or at all)."""


# The statistics methods HistoryBuffer pickles by reference, as
# getattr(HistoryBuffer, name): allowed for these names on that class only,
# instead of allowing builtins.getattr on anything.
_HISTORY_STATISTICS = ("min", "max", "mean", "current")


def _history_buffer_statistic(obj, name):
    from mmengine.logging.history_buffer import HistoryBuffer

    allowed = set(_HISTORY_STATISTICS) | set(HistoryBuffer._statistics_methods)
    if obj is not HistoryBuffer or name not in allowed:
        raise pickle.UnpicklingError(
            f"getattr({getattr(obj, '__name__', type(obj).__name__)}, {name!r}) is not an "
            "mmengine HistoryBuffer statistics method"
        )
    return getattr(obj, name)


def allowed_globals():
    """The types an mmengine checkpoint holds besides tensors and plain
    Python containers, for torch.serialization.safe_globals."""
    import numpy as np
    from mmengine.logging.history_buffer import HistoryBuffer

    try:  # numpy >= 2 moved multiarray to numpy._core
        from numpy._core.multiarray import _reconstruct, scalar
    except ImportError:  # pragma: no cover (numpy 1.x)
        from numpy.core.multiarray import _reconstruct, scalar
    dtypes = [
        type(np.dtype(t))
        for t in (
            np.float16,
            np.float32,
            np.float64,
            np.int8,
            np.int16,
            np.int32,
            np.int64,
            np.uint8,
            np.bool_,
        )
    ]
    return [
        np.ndarray,
        np.dtype,
        _reconstruct,
        scalar,
        HistoryBuffer,
        *dtypes,
        (_history_buffer_statistic, "builtins.getattr"),
    ]


@contextlib.contextmanager
def _allowing(globals_):
    """torch.serialization.safe_globals (torch >= 2.5); on torch 2.4 the
    allow-list is added process-wide (it only ever allows these types) and
    the (function, name) remapping is not available, so checkpoints holding
    HistoryBuffer statistics need --trust-checkpoint there."""
    import torch

    if hasattr(torch.serialization, "safe_globals"):
        with torch.serialization.safe_globals(globals_):
            yield
        return
    torch.serialization.add_safe_globals([g for g in globals_ if not isinstance(g, tuple)])
    yield


def _is_url(name) -> bool:
    return "://" in str(name)


def load(filename, map_location="cpu"):
    """torch.load of a checkpoint file: weights only plus the allow-list,
    unless the file was named trusted (see :func:`trusting`)."""
    import torch

    if _is_url(filename):
        raise CheckpointError(
            f"checkpoint {filename}: URLs are not loaded (a downloaded checkpoint would be "
            "unpickled unchecked, and this machine may have no network); download the file "
            "and pass its local path"
        )
    path = Path(filename)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {filename}: no such file")
    if path.resolve() in _TRUSTED:
        return torch.load(path, map_location=map_location, weights_only=False)
    try:
        with _allowing(allowed_globals()):
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        text = str(e)
        # an object the allow-list refused, or bytes that are no pickle at all
        refused = any(w in text for w in ("GLOBAL", "global", "call reduce", "is not an mmengine"))
        if not refused:
            raise CheckpointError(
                f"checkpoint {filename}: cannot be read (UnpicklingError: "
                f"{text.strip().splitlines()[0] if text.strip() else ''}); it is "
                "truncated, empty or not a PyTorch checkpoint"
            ) from None
        detail = next(
            (
                line.strip()
                for line in text.splitlines()
                if "GLOBAL" in line or "global" in line or "mmengine" in line or "reduce" in line
            ),
            type(e).__name__,
        )
        raise CheckpointError(
            f"checkpoint {filename}: refused to unpickle it with weights_only=True ({detail}). "
            "It holds objects beyond tensors and the types mmengine checkpoints contain. If you "
            f"trust this file, pass --trust-checkpoint {filename} (Python: "
            "trusted_checkpoint=...); that unpickles it fully, which can run code it "
            "contains"
        ) from None
    except Exception as e:  # noqa: BLE001 (garbage bytes fail in many ways inside torch.load)
        what = (
            "an empty file"
            if path.stat().st_size == 0
            else (
                f"{type(e).__name__}: {str(e).strip().splitlines()[0]}"
                if str(e).strip()
                else type(e).__name__
            )
        )
        raise CheckpointError(
            f"checkpoint {filename}: cannot be read ({what}); it is "
            "truncated, empty or not a PyTorch checkpoint"
        ) from None


def check_readable(filename):
    """Load filename once (as the run will) and check it is an mmengine
    checkpoint; raises CheckpointError otherwise. Used before anything is
    written, so that a bad checkpoint leaves the run folder as it was."""
    checkpoint = load(filename)
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise CheckpointError(
            f"checkpoint {filename}: not an mmengine checkpoint (no 'state_dict' entry)"
        )
    return checkpoint


def install():
    """Route mmengine's local-file and URL checkpoint loaders through
    :func:`load` (mmengine's own extension point, CheckpointLoader's scheme
    registry). Idempotent; the loaders stay safe for the whole process."""
    global _INSTALLED
    if _INSTALLED:
        return
    from mmengine.runner.checkpoint import CheckpointLoader

    def load_from_local(filename, map_location):
        return load(filename, map_location)

    def refuse_url(filename, map_location=None, *args, **kwargs):
        return load(filename, map_location)  # raises: URLs are refused

    CheckpointLoader.register_scheme(prefixes="", loader=load_from_local, force=True)
    remote = [p for p in CheckpointLoader._schemes if p != ""]
    CheckpointLoader.register_scheme(prefixes=remote, loader=refuse_url, force=True)
    _INSTALLED = True


@contextlib.contextmanager
def trusting(filename=None):
    """Within the block, filename (if given) is fully unpickled: the user's
    explicit opt-in for a checkpoint they trust. Nothing else changes."""
    install()
    if filename is None:
        yield
        return
    path = Path(filename)
    if not path.is_file():
        raise CheckpointError(f"trusted_checkpoint: {filename} is not a file")
    resolved = path.resolve()
    added = resolved not in _TRUSTED
    _TRUSTED.add(resolved)
    try:
        yield
    finally:
        if added:
            _TRUSTED.discard(resolved)
