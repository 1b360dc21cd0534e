"""Execute the notebooks headless, as CI and `make demo` do.

    python scripts/run_notebooks.py [--out DIR] [-p NAME=VALUE ...] [NOTEBOOK ...]

Each notebook (default: every notebooks/*.ipynb, in name order) is executed
by papermill in a fresh kernel of this Python with its working directory at
notebooks/. Values given with -p (Python literals, else strings) are passed
as papermill parameters to the notebooks that declare them in their cell
tagged `parameters` (papermill's own `inspect_notebook`), so `papermill
notebooks/01_reassembly_kernels.ipynb out.ipynb -p seeds "[0]"` does the same
for one notebook. The executed copies, outputs included, are written to
--out (default build/notebooks); the committed notebooks stay stripped.
Exits non-zero, naming the notebook and cell, when any cell raises.
"""

import argparse
import ast
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = REPO / "notebooks"


def parse_value(text):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def chosen_parameters(path, params):
    """Those of params that the notebook declares in its parameters cell."""
    import papermill

    declared = papermill.inspect_notebook(str(path))
    return {k: v for k, v in params.items() if k in declared}


def execute(path, out_dir, params=None, timeout=1800):
    """papermill.execute_notebook of path with the parameters it declares;
    returns the executed copy's path (written even when a cell fails)."""
    import papermill

    path = Path(path)
    out = Path(out_dir) / path.name
    out.parent.mkdir(parents=True, exist_ok=True)
    chosen = {
        k: str(v) if isinstance(v, Path) else v
        for k, v in chosen_parameters(path, params or {}).items()
    }
    papermill.execute_notebook(
        str(path),
        str(out),
        parameters=chosen,
        cwd=str(path.parent),
        kernel_name="python3",
        progress_bar=False,
        execution_timeout=timeout,
    )
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="*", type=Path)
    parser.add_argument("--out", type=Path, default=REPO / "build" / "notebooks")
    parser.add_argument("-p", "--param", action="append", default=[], metavar="NAME=VALUE")
    args = parser.parse_args(argv)
    params = {}
    for item in args.param:
        if "=" not in item:
            parser.error(f"--param: expected NAME=VALUE, got {item!r}")
        name, value = item.split("=", 1)
        params[name] = parse_value(value)
    paths = args.notebooks or sorted(NOTEBOOKS.glob("*.ipynb"))
    from papermill.exceptions import PapermillExecutionError

    for path in paths:
        start = time.perf_counter()
        print(f"executing {path.name} ...", flush=True)
        try:
            out = execute(path, args.out, params)
        except PapermillExecutionError as err:
            print(f"FAILED {path.name}: {str(err)[-3000:]}", file=sys.stderr)
            return 1
        print(f"  ok in {time.perf_counter() - start:.0f} s -> {out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
