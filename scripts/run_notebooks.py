"""Execute the notebooks headless, as CI and `make demo` do.

    python scripts/run_notebooks.py [--out DIR] [-p NAME=VALUE ...] [NOTEBOOK ...]

Each notebook (default: every notebooks/*.ipynb, in name order) runs in a
fresh kernel of this Python with its working directory at notebooks/. Values
given with -p (Python literals, else strings) are injected as a cell after the
cell tagged `parameters`, papermill-style, for the notebooks that have such a
parameter. The executed copies, outputs included, are written to --out
(default build/notebooks); the committed notebooks stay stripped. Exits
non-zero, naming the notebook and cell, when any cell raises.
"""

import argparse
import ast
import re
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


def parameters_cell(nb):
    for i, cell in enumerate(nb.cells):
        if "parameters" in cell.get("metadata", {}).get("tags", []):
            return i
    raise ValueError("notebook has no cell tagged 'parameters'")


def declared(cell_source):
    """Names assigned at the top level of the parameters cell."""
    return {m.group(1) for m in re.finditer(r"^([A-Za-z_]\w*)\s*=", cell_source, re.M)}


def inject(nb, params):
    """Insert a cell after the parameters cell that sets those of params the
    notebook declares; returns the names set."""
    import nbformat
    index = parameters_cell(nb)
    names = declared(nb.cells[index].source)
    chosen = {k: v for k, v in params.items() if k in names}
    if chosen:
        source = "# Parameters injected by scripts/run_notebooks.py\n" + "".join(
            f"{k} = {v!r}\n" for k, v in chosen.items())
        cell = nbformat.v4.new_code_cell(source, metadata={"tags": ["injected-parameters"]})
        nb.cells.insert(index + 1, cell)
    return set(chosen)


def execute(path, out_dir, params=None, timeout=1800):
    import nbformat
    from nbclient import NotebookClient
    path = Path(path)
    nb = nbformat.read(path, as_version=4)
    inject(nb, params or {})
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}})
    out = Path(out_dir) / path.name
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        client.execute()
    finally:  # the partly executed notebook shows where it failed
        nbformat.write(nb, out)
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
    from nbclient.exceptions import CellExecutionError
    for path in paths:
        start = time.perf_counter()
        print(f"executing {path.name} ...", flush=True)
        try:
            out = execute(path, args.out, params)
        except CellExecutionError as err:
            print(f"FAILED {path.name}: {str(err)[-3000:]}", file=sys.stderr)
            return 1
        print(f"  ok in {time.perf_counter() - start:.0f} s -> {out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
