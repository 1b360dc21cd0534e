#!/usr/bin/env bash
# Install mmcv 2.1.0 (what mmdet 3.3.0 needs: mmcv < 2.2) with its ops into
# the Python given as $1 (default: python3).
#
# mmcv 2.1.0 ships no binary wheel for current PyTorch, so:
# 1. a prebuilt wheel is used when pip can find one (PIP_FIND_LINKS, or
#    ../shared/wheels beside this repository);
# 2. otherwise it is built from source against the installed torch, with the
#    two fixes current PyTorch needs: setuptools < 81 (mmcv's setup.py imports
#    pkg_resources) and C++20 where mmcv's setup.py forces -std=c++17 (torch
#    >= 2.10 headers need C++20), through a compiler wrapper. Over half an
#    hour on 2 cores; MAX_JOBS sets the parallel jobs.
set -euo pipefail
PY="${1:-python3}"
HERE="$(cd "$(dirname "$0")/.." && pwd)"
links=()
if [ -d "$HERE/../shared/wheels" ]; then links=(--find-links "$HERE/../shared/wheels"); fi

if "$PY" -c "import mmcv, mmcv.ops; assert mmcv.__version__ == '2.1.0'" 2>/dev/null; then
  echo "mmcv 2.1.0 with ops already installed"; exit 0
fi
if "$PY" -m pip install --only-binary=mmcv ${links[@]+"${links[@]}"} mmcv==2.1.0; then
  exit 0
fi
echo "no mmcv 2.1.0 wheel for this torch/python: building from source (this takes a while)"
wrap="$(mktemp -d)"
cat > "$wrap/cxx" <<'WRAP'
#!/usr/bin/env bash
args=()
for a in "$@"; do
  case "$a" in -std=c++14|-std=c++17) args+=("-std=c++20") ;; *) args+=("$a") ;; esac
done
exec "${CARAFE_REAL_CXX:-g++}" "${args[@]}"
WRAP
chmod +x "$wrap/cxx"
"$PY" -m pip install "setuptools>=64,<81" wheel ninja
CARAFE_REAL_CXX="${CXX:-g++}" CXX="$wrap/cxx" MMCV_WITH_OPS=1 MAX_JOBS="${MAX_JOBS:-2}" \
  "$PY" -m pip install --no-build-isolation --no-binary=mmcv mmcv==2.1.0
