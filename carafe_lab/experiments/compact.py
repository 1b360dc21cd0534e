"""Run folders that stay reproducible but lean: one config per group of runs
and each run's overrides, instead of a full config dump per run.

mmengine dumps the whole config (about 450 lines) into every run folder, and
its log repeats it. Runs of one study, or of one config, differ only in a
few entries (seed, upsampler). :func:`record` keeps the first run's config as
the group's ``config.json`` (the dump as data, which mmengine's Config reads
as well as a .py file) and writes, for every run, ``overrides.json``: the
entries where its dump differs from the group's config. The per-run dumps
and logs stay on disk and are not committed (.gitignore);
:func:`rebuild` gives a run's full config back, and :func:`record` refuses
to write overrides that do not rebuild its dump exactly.

    group/config.json          the first run's config, as data
    group/<run>/overrides.json {"set": [[["a", "b", "c"], value], ...],
                                "delete": [["x", "y"], ...]}
"""

import json
import os
import tempfile
from pathlib import Path

#: The group's config and each run's overrides.
GROUP_CONFIG = "config.json"
OVERRIDES = "overrides.json"
#: How a tuple is written in JSON (mmdet tells tuples from lists, e.g. a
#: Resize scale must be a tuple).
TUPLE = "__tuple__"


def _encode(value):
    """value with tuples written as {TUPLE: [...]}, recursively (JSON-safe)."""
    if isinstance(value, dict):
        return {str(k): _encode(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return {TUPLE: [_encode(v) for v in value]}
    if isinstance(value, list):
        return [_encode(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def decode(value):
    """The inverse of _encode: tuples back as tuples."""
    if isinstance(value, dict):
        if set(value) == {TUPLE}:
            return tuple(decode(v) for v in value[TUPLE])
        return {k: decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [decode(v) for v in value]
    return value


def _flatten(d, prefix=()):
    """{key path (tuple of keys): value} of nested dicts (an encoded tuple is
    a leaf, like a list; keys may contain dots)."""
    out = {}
    for k, v in d.items():
        path = (*prefix, k)
        if isinstance(v, dict) and v and set(v) != {TUPLE}:
            out.update(_flatten(v, path))
        else:
            out[path] = v
    return out


def _unflatten(flat):
    out = {}
    for path, value in flat.items():
        node = out
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = value
    return out


def config_dict(path):
    """A dumped config file as an encoded dict (tuples as {TUPLE: [...]}),
    read with mmengine's Config without importing its custom_imports (a dump
    names modules that may have moved)."""
    from mmengine.config import Config

    from .quiet import filter_known_warnings

    filter_known_warnings()  # before Config looks for mmdet (`mmdet::` bases)
    cfg = Config.fromfile(str(path), import_custom_modules=False)
    return _encode(cfg.to_dict())


def diff(base, run):
    """The overrides that turn encoded config dict base into run:
    {"set": [[key path, value], ...], "delete": [key path, ...]}."""
    fb, fr = _flatten(base), _flatten(run)
    return {
        "set": [[list(k), v] for k, v in fr.items() if k not in fb or fb[k] != v],
        "delete": sorted(list(k) for k in fb if k not in fr),
    }


def apply(base, overrides):
    """base (an encoded config dict) with overrides applied: a new dict."""
    flat = _flatten(base)
    for path in overrides.get("delete", []):
        flat.pop(tuple(path), None)
    flat.update({tuple(path): value for path, value in overrides.get("set", [])})
    return _unflatten(flat)


def dump_of(run_dir):
    """The config mmengine dumped into run_dir (the one *.py file), or None."""
    dumps = sorted(Path(run_dir).glob("*.py"))
    return dumps[0] if len(dumps) == 1 else None


def _claim(path, text):
    """Write text to path unless path exists; the first writer wins and a
    reader never sees a half-written file (written aside, then linked)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".config-", suffix=".json")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.link(tmp, path)
    except FileExistsError:
        pass
    finally:
        os.unlink(tmp)


def record(run_dir, group_dir=None):
    """Write run_dir/overrides.json against group_dir/config.json (default:
    run_dir's parent), making run_dir's config the group's if it has none
    yet. Raises ValueError when the overrides would not rebuild the dump
    exactly, or the run has no single dump. Returns the overrides."""
    run_dir = Path(run_dir)
    group_dir = Path(group_dir) if group_dir is not None else run_dir.parent
    dump = dump_of(run_dir)
    if dump is None:
        raise ValueError(f"run_dir: expected one dumped config (*.py) in {run_dir}")
    group_config = group_dir / GROUP_CONFIG
    run = config_dict(dump)
    _claim(group_config, json.dumps(run, indent=1, sort_keys=True) + "\n")
    base = json.loads(group_config.read_text())
    overrides = diff(base, run)
    if apply(base, overrides) != run:
        raise ValueError(f"run_dir: the overrides of {run_dir} do not rebuild its config")
    (run_dir / OVERRIDES).write_text(json.dumps(overrides, indent=2) + "\n")
    return overrides


def record_or_warn(run_dir, group_dir=None):
    """:func:`record`, with a failure reported on stderr instead of raised:
    a finished training keeps its results (and its dump, on disk) either way."""
    import sys

    try:
        return record(run_dir, group_dir)
    except (ValueError, OSError) as e:
        print(f"compact: {run_dir} keeps its config dump only ({e})", file=sys.stderr)
        return None


def rebuild(run_dir, group_dir=None):
    """A run's full config as a dict (tuples as tuples): its dump when it is
    on disk, else the group's config.json with the run's overrides.json
    applied."""
    run_dir = Path(run_dir)
    dump = dump_of(run_dir)
    if dump is not None:
        return decode(config_dict(dump))
    group_dir = Path(group_dir) if group_dir is not None else run_dir.parent
    overrides = run_dir / OVERRIDES
    if not overrides.exists() or not (group_dir / GROUP_CONFIG).exists():
        raise FileNotFoundError(
            f"run_dir: {run_dir} has neither a dumped config nor "
            f"{OVERRIDES} beside a {GROUP_CONFIG} in {group_dir}"
        )
    return decode(
        apply(json.loads((group_dir / GROUP_CONFIG).read_text()), json.loads(overrides.read_text()))
    )


def compact(group_dir, runs=None):
    """:func:`record` for every run folder in group_dir that has a dump
    (runs: those folders, default every subfolder with an env.json)."""
    group_dir = Path(group_dir)
    runs = runs if runs is not None else sorted(p.parent for p in group_dir.glob("*/env.json"))
    return {Path(r).name: record(r, group_dir) for r in runs if dump_of(r) is not None}


__all__ = [
    "GROUP_CONFIG",
    "OVERRIDES",
    "TUPLE",
    "config_dict",
    "decode",
    "diff",
    "apply",
    "dump_of",
    "record",
    "record_or_warn",
    "rebuild",
    "compact",
]
