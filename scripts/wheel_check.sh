#!/usr/bin/env bash
# The package as a user installs it from an index, not from this checkout:
#   1. python -m build: the sdist, then the wheel built from that sdist
#      (proves the sdist is complete), against the torch of PYTHON's env;
#   2. a fresh venv (same Python, same torch release) with the wheel and its
#      `lab` extra installed -- not editable;
#   3. from a folder outside the checkout: the op's quick gradient check and a
#      quick lab ablation, which must write under that folder (the lab root is
#      the working directory there) and nowhere in site-packages.
# Usage: scripts/wheel_check.sh [PYTHON] [OUT]   (make wheel-check; CI runs it)
set -euo pipefail
PY="${1:-.venv/bin/python}"
OUT="$(realpath -m "${2:-build/wheel-check}")"
rm -rf "$OUT" && mkdir -p "$OUT"
torch_version="$("$PY" -c 'import torch; print(torch.__version__.split("+")[0])')"

# CPU kernels only: the CUDA build is CI's other step, and this one checks packaging.
CARAFE_NO_CUDA=1 "$PY" -m build --no-isolation --outdir "$OUT/dist" . > "$OUT/build.log" 2>&1 \
  || { tail -30 "$OUT/build.log"; exit 1; }
ls "$OUT/dist"

base="$("$PY" -c 'import sys; print(sys._base_executable)')"
"$base" -m venv "$OUT/venv"
"$OUT/venv/bin/python" -m pip install -q "torch==$torch_version"
wheel=("$OUT"/dist/*.whl)
"$OUT/venv/bin/python" -m pip install -q "${wheel[0]}[lab]"

outside="$(mktemp -d /tmp/carafe-wheel-check.XXXXXX)"
trap 'rm -rf "$outside"' EXIT
cd "$outside"
site="$("$OUT/venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
touch "$OUT/started"
"$OUT/venv/bin/python" - <<'PY'
import carafe, carafe_lab, pathlib
for m in (carafe, carafe_lab):  # the installed copies, not the checkout's
    assert "site-packages" in m.__file__, m.__file__
print("imported", carafe.__file__, "| CPU kernels:", carafe.has_kernel("cpu"))
PY
"$OUT/venv/bin/python" -m carafe.grad_check --quick
"$OUT/venv/bin/python" -m carafe_lab.ablations run normalizer --task sr --quick --seeds 1 \
  --variants softmax
ls "$outside"/experiments/ablations/normalizer/sr/*/results.json
written="$(find "$site" -newer "$OUT/started" -type f ! -name '*.pyc')"
if [ -n "$written" ]; then
  echo "wheel-check: files were written into site-packages:"; echo "$written" | head
  exit 1
fi
echo "wheel-check passed: $(basename "${wheel[0]}") installed in a fresh venv, run from $outside"
