# The README's commands. Everything installs into a virtual environment at
# $(VENV) (default .venv at the repository root).
#
#   make demo    set up, then run the main job on a small default (checks, quick
#                benchmark, and the four notebooks executed headless)
#   make test    set up, then run the test suite (executes the notebooks too)
#   make lab     set up, install JupyterLab, open it on notebooks/
#   make bench   set up, then run the full operator benchmark (writes benchmarks/results/
#                and its table in docs/kernels.md)
#   make docs    set up, then build the docs (docs/, mkdocs.yml) strictly into build/site/
#   make lint    set up, then the pre-commit hooks on the whole tree (ruff lint and format,
#                clang-format, nbstripout) and mypy on carafe/
#   make figures set up, then regenerate the README's figures (experiments/figures/) by
#                executing the notebooks at their defaults with figures_dir pointed there
#   make wheel-check  build sdist and wheel, install the wheel in a fresh venv, run the
#                op's check and a lab command from outside the checkout (CI runs it)
#   make lite-check  the mmcv-lite route beside .venv's mmcv: a second venv
#                (build/lite-venv) with mmcv-lite, running the tests that use mmdet (CI runs it)
#   make setup   only the set-up (idempotent; rebuilds the kernels when csrc/ changes)
#   make gpu-check-prepare  (here, with the package index) fetch what gpu-check needs
#                into build/gpu-check/ (mmcv's CARAFE sources, test wheels)
#   make gpu-check  (on a GPU machine, no network; carry build/gpu-check/) build for that
#                GPU, CUDA tests, compute-sanitizer, GPU benchmark with mmcv's op side by
#                side -> benchmarks/results/gpu_check_<gpu>.json
#
# Variables: PYTHON (interpreter that creates the venv), TORCH_SPEC (what pip
# installs for PyTorch), FORCE_CUDA=1 (compile the CUDA kernels without a
# GPU), TORCH_CUDA_ARCH_LIST, MAX_JOBS: see setup.py. MMCV=auto|full|lite: the
# mmcv under mmdet (scripts/install_mmcv.sh; auto: full mmcv when a prebuilt
# wheel is found, else mmcv-lite with our ops; full: that wheel or a build
# from source, about 37 minutes on 2 cores).

PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
MMCV ?= auto
PY := $(VENV)/bin/python
STAMP := $(VENV)/.carafe-installed
SOURCES := setup.py pyproject.toml $(wildcard csrc/*.h csrc/*.cpp csrc/cpu/*.h csrc/cpu/*.cpp csrc/cuda/*.cu csrc/cuda/*.cuh)
export MAX_JOBS ?= 2

.PHONY: setup test demo bench lab figures docs lint clean gpu-check gpu-check-prepare wheel-check lite-check

setup: $(STAMP)

$(VENV)/.deps-installed:
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip "setuptools>=64,<81" wheel ninja
	$(PY) -m pip install $(TORCH_SPEC)
	$(PY) -m pip install pytest numpy expecttest build
	$(PY) -m pip install "mmengine==0.10.7" "mmdet==3.3.0" scikit-image matplotlib
	# Executing the notebooks headless (tests, demo); `make lab` adds JupyterLab.
	$(PY) -m pip install papermill nbclient nbformat ipykernel
	touch $@

# The mmcv under mmdet 3.3.0 (docs/install.md, "The detection stack"): full
# mmcv 2.1.0 from a prebuilt wheel when pip finds one, else mmcv-lite, whose
# missing compiled ops carafe.mmcv_ext provides (RoIAlign, nms, CARAFE);
# MMCV=full builds full mmcv from source where no wheel exists. Redone when
# MMCV changes.
$(VENV)/.mmcv-$(MMCV): $(VENV)/.deps-installed scripts/install_mmcv.sh
	MMCV=$(MMCV) bash scripts/install_mmcv.sh $(PY)
	rm -f $(VENV)/.mmcv-*
	touch $@

# The extension is compiled against the torch installed above, hence
# --no-build-isolation. Rebuilt whenever a source changes (or FORCE_CUDA flips).
$(STAMP): $(VENV)/.mmcv-$(MMCV) $(SOURCES) $(VENV)/.force-cuda-$(FORCE_CUDA)
	$(PY) -m pip install --no-build-isolation -e ".[dev,lab,mmdet,export,docs,lint,yolo]"
	touch $@

$(VENV)/.force-cuda-$(FORCE_CUDA): $(VENV)/.deps-installed
	rm -f $(VENV)/.force-cuda-*
	touch $@

test: setup
	$(PY) -m pytest -q -rs tests

# The main job on a small default: the op's checks and a quick benchmark, then
# the four notebooks executed headless at their defaults (the quickstart, the
# reassembly kernels of a CARAFE trained for a minute, a quick ablation study,
# one short epoch of the offline Faster R-CNN + CARAFE with its summary).
demo: setup
	$(PY) -m carafe.grad_check --quick
	$(PY) benchmarks/bench_op.py --quick --repeat 5 --out build/demo/bench_op_quick.json
	$(PY) scripts/run_notebooks.py --out build/demo/notebooks
	@echo "demo done: benchmark in build/demo/bench_op_quick.json; executed notebooks in build/demo/notebooks/;"
	@echo "figures in build/figures/; the notebooks' runs in build/notebooks/ (ablation study, detection run)"

bench: setup
	$(PY) benchmarks/bench_op.py
	$(PY) benchmarks/report.py --update-docs

# --strict: a broken link between pages, or to a missing heading, fails the build.
docs: setup
	$(PY) -m mkdocs build --strict --site-dir build/site

lint: setup
	$(VENV)/bin/pre-commit run --all-files --show-diff-on-failure
	$(PY) -m mypy

figures: setup
	$(PY) scripts/run_notebooks.py --out build/figures/notebooks -p figures_dir=experiments/figures

# The package as users install it: sdist -> wheel, installed into a fresh venv
# (not editable), exercised from a folder outside the checkout (CI runs it).
wheel-check: setup
	bash scripts/wheel_check.sh $(PY) build/wheel-check

# The mmcv-lite route, whatever mmcv .venv has (CI: full mmcv from the shared
# wheel): a second venv with the same torch, mmcv-lite (nothing of mmcv
# compiled) and the rest of the mmdet stack, running the checkout as built by
# `make setup` (its kernels were compiled against that torch; PYTHONPATH, so
# nothing is rebuilt) through the tests that use mmdet, less the slow ones
# (longer trainings on the same code paths, which `make test` runs). Their
# golden tests skip there, with the reason: they run in `make test`.
LITE_VENV ?= build/lite-venv
LITE_TESTS ?= tests/test_mmcv_lite.py tests/test_mmdet.py
lite-check: setup
	test -x $(LITE_VENV)/bin/python || $(PYTHON) -m venv $(LITE_VENV)
	$(LITE_VENV)/bin/python -m pip install -q "setuptools>=64,<81" $(TORCH_SPEC) \
	  pytest numpy expecttest hypothesis "mmengine==0.10.7" "mmdet==3.3.0" scikit-image matplotlib
	MMCV=lite bash scripts/install_mmcv.sh $(LITE_VENV)/bin/python
	PYTHONPATH=$(CURDIR) $(LITE_VENV)/bin/python -m pytest -q -rs -m "not slow" $(LITE_TESTS)

lab: setup
	$(PY) -m pip install --no-build-isolation -e ".[notebooks]"
	$(VENV)/bin/jupyter lab notebooks/

clean:
	rm -rf build *.egg-info carafe/_C*.so

# The GPU machine has its own Python with a CUDA PyTorch, nvcc and pytest;
# nothing is installed there beyond the prepared wheels.
GPU_PYTHON ?= python3
gpu-check-prepare: setup
	$(PY) scripts/gpu_check_prepare.py

gpu-check:
	PYTHONUNBUFFERED=1 $(GPU_PYTHON) scripts/gpu_check.py
