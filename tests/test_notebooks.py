"""The notebooks: committed stripped, each starting with a parameters cell
(tagged, with a `device` parameter), and each executing headless at its
defaults without error (outputs redirected to a temporary folder)."""

import ast
import json
import logging
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
EXPECTED = [
    "00_quickstart",
    "01_reassembly_kernels",
    "02_upsampling_ablations",
    "03_detection_experiments",
]


def cells(path):
    return json.loads(path.read_text())["cells"]


def test_the_four_notebooks_are_there():
    assert [p.stem for p in NOTEBOOKS] == EXPECTED


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_stripped_with_a_parameters_cell_first(path):
    nb = cells(path)
    first = nb[0]
    assert first["cell_type"] == "code" and "parameters" in first["metadata"].get("tags", [])
    source = "".join(first["source"])
    # figures go under build/ by default: running a notebook (or `make demo`)
    # never overwrites the README's committed figures (`make figures` does)
    assert "\ndevice = " in "\n" + source and 'figures_dir = "build/figures"' in source
    for cell in nb:
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None, (
                f"{path.name}: outputs must be stripped before committing"
            )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_papermill_parses_every_parameter_line(path, caplog):
    """papermill's own inference (`papermill --help-notebook`, inspect_notebook)
    finds every name the parameters cell assigns, and warns about no line
    (it gives up on a line holding two '=', e.g. one in a comment)."""
    papermill = pytest.importorskip("papermill", reason="parameter inference is papermill's")
    source = "".join(cells(path)[0]["source"])
    assigned = [
        node.targets[0].id
        for node in ast.parse(source).body
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name)
    ]
    with caplog.at_level(logging.WARNING, logger="papermill"):
        inferred = papermill.inspect_notebook(str(path))
    assert list(inferred) == assigned
    assert not [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def test_runner_passes_the_declared_parameters():
    pytest.importorskip("papermill", reason="the notebook runner uses papermill")
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        import run_notebooks
    finally:
        sys.path.pop(0)
    chosen = run_notebooks.chosen_parameters(NOTEBOOKS[0], {"repeat": 1, "not_a_parameter": 3})
    assert chosen == {"repeat": 1}
    assert run_notebooks.parse_value("[(1, 2)]") == [(1, 2)]
    assert run_notebooks.parse_value("cpu") == "cpu"


# What each notebook writes goes to tmp_path; notebook 01 trains at the seg
# task's quick setting, to keep CI short. Figures each notebook must write.
FIGURES = {
    "00_quickstart": {"quickstart_speed.png"},
    "01_reassembly_kernels": {"reassembly_kernels.png", "kernel_maps.png"},
    "02_upsampling_ablations": set(),
    "03_detection_experiments": {"detections.png", "loss_curves.png", "ap_seeds.png"},
}


@pytest.mark.slow
@pytest.mark.parametrize("name", EXPECTED)
def test_notebook_executes_at_its_defaults(name, tmp_path):
    """One notebook at a time, so that those needing no mmdet still run
    where mmdet is absent."""
    pytest.importorskip("papermill", reason="executing notebooks needs papermill + ipykernel")
    if name == "03_detection_experiments":
        pytest.importorskip("mmdet", reason="notebook 03 needs the mmdet extra")
    params = {
        "figures_dir": tmp_path / "figures",
        "quick_out": tmp_path / "ablations",
        "work_dir": tmp_path / "run",
        "setting": "quick",
    }
    cmd = [
        sys.executable,
        str(REPO / "scripts" / "run_notebooks.py"),
        "--out",
        str(tmp_path / "executed"),
        str(REPO / "notebooks" / f"{name}.ipynb"),
    ]
    for k, v in params.items():
        cmd += ["-p", f"{k}={v}"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    executed = cells(tmp_path / "executed" / f"{name}.ipynb")
    errors = [
        o
        for c in executed
        if c["cell_type"] == "code"
        for o in c["outputs"]
        if o["output_type"] == "error"
    ]
    assert not errors
    figures = {p.name for p in (tmp_path / "figures").glob("*.png")}
    assert FIGURES[name] <= figures, figures
    # readable output: no warning of any library in a cell (deprecations,
    # mmengine's logger, tqdm without ipywidgets), ...
    streams = [
        "".join(o["text"])
        for c in executed
        if c["cell_type"] == "code"
        for o in c["outputs"]
        if o["output_type"] == "stream"
    ]
    warned = [text for text in streams if re.search("warn", text, re.IGNORECASE)]
    assert not warned, warned
    if name == "03_detection_experiments":
        # ... nor mmengine's and pycocotools' chatter, which the run's log has,
        text = "".join(streams)
        for chatter in ("loading annotations", "Average Precision", "Loads checkpoint"):
            assert chatter not in text
        (log,) = (tmp_path / "run").glob("*/*.log")
        assert "Average Precision" in log.read_text()
        # and the detections drawn, counted from the run
        drawn = re.search(r"^(\d+) detections drawn", text, re.MULTILINE)
        assert drawn and int(drawn.group(1)) >= 1, text[-2000:]
