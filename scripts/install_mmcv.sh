#!/usr/bin/env bash
# Install mmcv 2.1.0 (what mmdet 3.3.0 needs: mmcv < 2.2) into the Python
# given as $1 (default: python3). MMCV chooses the route (docs/install.md,
# "The detection stack"):
#
#   MMCV=auto (default)  full mmcv when pip finds a prebuilt wheel for this
#                        torch / Python (PIP_FIND_LINKS, or ../shared/wheels
#                        beside this repository), else mmcv-lite: nothing
#                        compiled, seconds; carafe.mmcv_ext then provides the
#                        compiled ops mmdet's two-stage detectors call
#                        (RoIAlign, nms, CARAFE) and every other op says it
#                        needs full mmcv.
#   MMCV=full            full mmcv: the prebuilt wheel, else a build from
#                        source (all of mmcv's ops: over half an hour on 2
#                        cores; MAX_JOBS sets the parallel jobs).
#   MMCV=lite            mmcv-lite, even where a wheel of full mmcv exists.
#
# mmcv and mmcv-lite install the same `mmcv` package: one replaces the other.
# Whichever is installed already is kept under auto; full and lite switch.
#
# The source build has the two fixes current PyTorch needs: setuptools < 81
# (mmcv's setup.py imports pkg_resources) and C++20 where mmcv's setup.py
# forces -std=c++17 (torch >= 2.10 headers need C++20), through a compiler
# wrapper.
set -euo pipefail
PY="${1:-python3}"
MMCV="${MMCV:-auto}"
HERE="$(cd "$(dirname "$0")/.." && pwd)"
case "$MMCV" in auto | full | lite) ;; *)
  echo "MMCV must be auto, full or lite, got '$MMCV'" >&2; exit 2 ;;
esac
links=()
if [ -d "$HERE/../shared/wheels" ]; then links=(--find-links "$HERE/../shared/wheels"); fi

# which distribution of mmcv 2.1.0 is installed: full (with its compiled
# mmcv._ext), lite, or none; found without importing mmcv._ext
installed="$("$PY" - <<'PY'
import importlib.machinery, importlib.metadata as md, importlib.util
def version(name):
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return None
spec = importlib.util.find_spec("mmcv")
if spec is None:
    print("none")
elif version("mmcv") == "2.1.0" and importlib.machinery.PathFinder.find_spec(
        "mmcv._ext", spec.submodule_search_locations):
    print("full")
elif version("mmcv-lite") == "2.1.0" and version("mmcv") is None:
    print("lite")
else:
    print("other")
PY
)"

install_lite() {
  if [ "$installed" = lite ]; then echo "mmcv-lite 2.1.0 already installed"; return; fi
  "$PY" -m pip uninstall -y mmcv mmcv-full >/dev/null 2>&1 || true
  "$PY" -m pip install mmcv-lite==2.1.0
  echo "mmcv-lite 2.1.0 installed: mmcv's compiled ops come from carafe.mmcv_ext" \
    "(RoIAlign, nms, CARAFE); MMCV=full for all of mmcv's ops"
}

install_full_wheel() {
  "$PY" -m pip install --only-binary=mmcv ${links[@]+"${links[@]}"} mmcv==2.1.0
}

if [ "$installed" = full ] && [ "$MMCV" != lite ]; then
  echo "mmcv 2.1.0 with its compiled ops already installed"; exit 0
fi
if [ "$MMCV" = lite ] || { [ "$MMCV" = auto ] && [ "$installed" = lite ]; }; then
  install_lite; exit 0
fi
# full or auto, neither installed yet (or the other route's): the wheel first
if [ "$installed" = lite ]; then "$PY" -m pip uninstall -y mmcv-lite; fi
if install_full_wheel; then exit 0; fi
if [ "$MMCV" = auto ]; then
  echo "no prebuilt mmcv 2.1.0 wheel for this torch/Python: mmcv-lite instead of a" \
    "37-minute build on 2 cores (MMCV=full builds it)"
  install_lite; exit 0
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
