"""The notebooks: committed stripped, each starting with a parameters cell
(tagged, with a `device` parameter), and each executing headless at its
defaults without error (outputs redirected to a temporary folder)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
EXPECTED = ["00_quickstart", "01_reassembly_kernels", "02_upsampling_ablations",
            "03_detection_experiments"]


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
    assert "\ndevice = " in "\n" + source and "figures_dir = \"build/figures\"" in source
    for cell in nb:
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None, \
                f"{path.name}: outputs must be stripped before committing"


def test_runner_injects_parameters():
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        import nbformat
        import run_notebooks
    finally:
        sys.path.pop(0)
    nb = nbformat.read(NOTEBOOKS[0], as_version=4)
    names = run_notebooks.inject(nb, {"repeat": 1, "not_a_parameter": 3})
    assert names == {"repeat"}
    assert nb.cells[1].source.endswith("repeat = 1\n")
    assert "injected-parameters" in nb.cells[1].metadata["tags"]
    assert run_notebooks.parse_value("[(1, 2)]") == [(1, 2)]
    assert run_notebooks.parse_value("cpu") == "cpu"


@pytest.mark.slow
def test_notebooks_execute_at_their_defaults(tmp_path):
    pytest.importorskip("nbclient", reason="executing notebooks needs nbclient + ipykernel")
    pytest.importorskip("mmdet", reason="notebook 03 needs the mmdet extra")
    # The defaults, except that everything the notebooks write goes to tmp_path.
    # (and notebook 01 trains at the seg task's quick setting, to keep CI short)
    params = {"figures_dir": tmp_path / "figures", "quick_out": tmp_path / "ablations",
              "work_dir": tmp_path / "run", "setting": "quick"}
    cmd = [sys.executable, str(REPO / "scripts" / "run_notebooks.py"), "--out",
           str(tmp_path / "executed")]
    for k, v in params.items():
        cmd += ["-p", f"{k}={v}"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    for name in EXPECTED:
        executed = cells(tmp_path / "executed" / f"{name}.ipynb")
        errors = [o for c in executed if c["cell_type"] == "code" for o in c["outputs"]
                  if o["output_type"] == "error"]
        assert not errors
    figures = {p.name for p in (tmp_path / "figures").glob("*.png")}
    assert {"quickstart_speed.png", "reassembly_kernels.png", "kernel_maps.png",
            "detections.png", "loss_curves.png", "ap_seeds.png"} <= figures
