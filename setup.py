"""Build of the carafe._C extension (the operator kernels).

The CPU kernels are always built. The CUDA kernels are built when nvcc and a
CUDA build of PyTorch are present and either a GPU is visible or
FORCE_CUDA=1 (to compile them on a machine without a GPU, as CI does).
Everything else about the package lives in pyproject.toml.

Environment:
  FORCE_CUDA=1             build the CUDA kernels even without a visible GPU
  CARAFE_NO_CUDA=1         never build them
  TORCH_CUDA_ARCH_LIST     GPU architectures (default "7.5;8.0;8.6;8.9;9.0+PTX": T4,
                           A100, A10, L4, H100, and PTX that newer GPUs compile at load)
  CUDA_HOME                the CUDA toolkit (default: /usr/local/cuda if it has nvcc)
  MAX_JOBS                 parallel compile jobs (ninja)
"""

import glob
import os
import sys

from setuptools import setup

ROOT = os.path.dirname(os.path.abspath(__file__))
DEFAULT_ARCH_LIST = "7.5;8.0;8.6;8.9;9.0+PTX"


def _env_flag(name):
    return os.environ.get(name, "0").strip().lower() in ("1", "true", "yes", "on")


# torch.utils.cpp_extension settles CUDA_HOME when it is imported, from
# `which nvcc` if CUDA_HOME is unset; when nvcc on PATH is a wrapper script
# (as on our machines) that guess is wrong, so prefer the real toolkit.
if not os.environ.get("CUDA_HOME") and not os.environ.get("CUDA_PATH"):
    if os.path.exists("/usr/local/cuda/bin/nvcc"):
        os.environ["CUDA_HOME"] = "/usr/local/cuda"

import torch  # noqa: E402
from torch.utils.cpp_extension import (  # noqa: E402
    CUDA_HOME,
    BuildExtension,
    CppExtension,
    CUDAExtension,
)


def _write_build_info():
    """carafe/_build_info.py: the torch the extension is compiled against. The
    compiled kernels work only with that torch (C++ ABI); carafe/_loader.py
    compares it with the torch that imports them and says so when they differ."""
    with open(os.path.join(ROOT, "carafe", "_build_info.py"), "w") as fh:
        fh.write(
            '"""Written by setup.py at build time; not tracked by git."""\n'
            f"TORCH_VERSION = {torch.__version__!r}\n"
            f"TORCH_CUDA = {torch.version.cuda!r}\n"
        )


_write_build_info()


def _want_cuda():
    if _env_flag("CARAFE_NO_CUDA"):
        return False, "CARAFE_NO_CUDA=1"
    if torch.version.cuda is None:
        return False, "this PyTorch is a CPU-only build"
    if CUDA_HOME is None:
        return False, "no CUDA toolkit (nvcc) found; set CUDA_HOME"
    if _env_flag("FORCE_CUDA"):
        return True, "FORCE_CUDA=1"
    if torch.cuda.is_available():
        return True, "a CUDA GPU is visible"
    return False, "no GPU visible (set FORCE_CUDA=1 to build the CUDA kernels anyway)"


def _pip_cuda_includes():
    """Header folders of the nvidia-* pip wheels that a CUDA build of torch
    depends on (cusparse.h, cublas_v2.h, ...): torch's CUDA headers include
    them, and a bare toolkit install may lack them."""
    dirs = []
    for entry in sys.path:
        dirs += glob.glob(os.path.join(entry, "nvidia", "cu*", "include"))
        dirs += glob.glob(os.path.join(entry, "nvidia", "*", "include"))
    seen, out = set(), []
    for d in dirs:
        d = os.path.realpath(d)
        if d not in seen and os.path.isdir(d):
            seen.add(d)
            out.append(d)
    return out


def extensions():
    with_cuda, why = _want_cuda()
    print(f"carafe: building CPU kernels; CUDA kernels: {'yes' if with_cuda else 'no'} ({why})")
    # every CPU kernel file; paths relative to the checkout, as setuptools wants them
    cpu_sources = sorted(glob.glob(os.path.join(ROOT, "csrc", "cpu", "*.cpp")))
    sources = ["csrc/carafe.cpp"] + [os.path.relpath(p, ROOT) for p in cpu_sources]
    # -Wno-psabi: GCC notes, in each file that uses the CPU kernels' vector
    # types (csrc/cpu/vec.h), that such vectors are passed differently with
    # and without AVX; those helpers are inline and never called from code
    # compiled with other flags, so the note does not apply.
    cxx_flags = ["-O3", "-Wno-psabi"]
    link_flags = []
    if sys.platform.startswith("linux"):
        # at::parallel_for is an inline OpenMP loop in the headers: without
        # -fopenmp it silently runs on one thread. The OpenMP runtime is the
        # libgomp that torch has already loaded (same soname).
        cxx_flags.append("-fopenmp")
        link_flags.append("-fopenmp")
    common = dict(include_dirs=[os.path.join(ROOT, "csrc")], extra_link_args=link_flags)
    if not with_cuda:
        return [CppExtension("carafe._C", sources, extra_compile_args={"cxx": cxx_flags}, **common)]
    if not os.environ.get("TORCH_CUDA_ARCH_LIST"):
        # Without a GPU torch cannot pick an architecture (and crashes trying):
        # T4 (7.5, common on clusters and Colab), A100, A10/RTX 30, L4/RTX 40,
        # H100, plus PTX so newer GPUs JIT-compile at load. CI compiles a
        # narrower list (.ci/run) to stay inside its time.
        os.environ["TORCH_CUDA_ARCH_LIST"] = DEFAULT_ARCH_LIST
    print(f"carafe: TORCH_CUDA_ARCH_LIST={os.environ['TORCH_CUDA_ARCH_LIST']}")
    sources.append("csrc/cuda/carafe_kernel.cu")
    common["include_dirs"] += _pip_cuda_includes()
    return [
        CUDAExtension(
            "carafe._C",
            sources,
            define_macros=[("CARAFE_WITH_CUDA", None)],
            # no --use_fast_math: it flushes subnormals on the GPU only, so CPU
            # and GPU would disagree on tiny values, and the kernels are
            # memory-bound, so it buys nothing
            extra_compile_args={"cxx": cxx_flags, "nvcc": ["-O3"]},
            **common,
        )
    ]


setup(
    ext_modules=extensions(),
    cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
)
