"""The source distribution holds everything the extension is built from."""

import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_sdist_has_every_kernel_source(tmp_path):
    subprocess.run(
        [sys.executable, "setup.py", "-q", "sdist", "-d", str(tmp_path)],
        cwd=ROOT,
        check=True,
        capture_output=True,
        env={**os.environ, "CARAFE_NO_CUDA": "1"},
    )
    (sdist,) = tmp_path.glob("*.tar.gz")
    with tarfile.open(sdist) as tar:
        names = {"/".join(n.split("/")[1:]) for n in tar.getnames()}
    wanted = {str(p.relative_to(ROOT)) for p in (ROOT / "csrc").rglob("*") if p.is_file()}
    assert wanted and wanted <= names, sorted(wanted - names)


def test_conda_env_installs_every_extra_it_promises():
    """environment.yml's second step installs .[dev,lab,notebooks,export] with
    --no-build-isolation, so every requirement of those extras must already be
    in the env (conda or its pip section): otherwise pip fetches it then, or
    the build is isolated after all. tomllib: Python >= 3.11."""
    tomllib = pytest.importorskip("tomllib")
    yaml = pytest.importorskip("yaml")
    import re

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    conda = {re.split(r"[=<>]", d)[0] for d in env["dependencies"] if isinstance(d, str)}
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    pip_names = {re.split(r"[=<>\[ ]", r)[0].lower() for r in pip}
    text = (ROOT / "environment.yml").read_text()
    extras = re.search(r"pip install --no-build-isolation -e \"\.\[([a-z,]+)\]\"", text).group(1)
    wanted = set(project["dependencies"])
    for extra in extras.split(","):
        wanted |= set(project["optional-dependencies"][extra])
    names = {re.split(r"[=<>\[ ]", r)[0].lower() for r in wanted}
    missing = sorted(n for n in names if n not in pip_names and n not in conda)
    assert not missing, f"environment.yml lacks {missing}"
    # the torch the env installs is the one isolated builds pin (pyproject)
    build_torch = [
        r
        for r in tomllib.loads((ROOT / "pyproject.toml").read_text())["build-system"]["requires"]
        if r.startswith("torch")
    ]
    assert build_torch and build_torch[0] in pip
