"""Loads the compiled kernels (carafe._C), whose import registers the
``torch.ops.carafe`` operators. There is deliberately no fallback to the
pure-PyTorch reference: a missing build is an error that says how to fix it."""

import torch

_BUILD_HINT = (
    "build it from the repository root with `make setup` (or "
    "`pip install --no-build-isolation -e .`; add FORCE_CUDA=1 to also compile "
    "the CUDA kernels on a machine without a GPU)"
)


def _built_against():
    """The torch version the extension was compiled against (None when the
    build predates that record)."""
    try:
        from ._build_info import TORCH_VERSION
    except ImportError:
        return None
    return TORCH_VERSION


def _release(version):
    return version.split("+")[0]


def _abi(version):
    # torch keeps its C++ ABI within a minor release (2.14.0 -> 2.14.1), not
    # across them (2.11 -> 2.14): the extension's symbols and struct layouts
    # then no longer match.
    return tuple(_release(version).split(".")[:2])


#: Set to 1 to import kernels built for another torch minor release anyway
#: (a warning instead of the error; results may be wrong or the process crash).
ALLOW_MISMATCH = "CARAFE_ALLOW_TORCH_MISMATCH"


try:
    from . import _C  # type: ignore[attr-defined]  # noqa: F401  (runs the registrations)
except ImportError as e:  # pragma: no cover - exercised only on a broken install
    built = _built_against()
    mismatch = (
        f" It was compiled against torch {built} and this is torch "
        f"{torch.__version__}: the compiled kernels work only with the torch they were "
        "built against; rebuild."
        if built and _release(built) != _release(torch.__version__)
        else ""
    )
    raise ImportError(
        f"carafe: the compiled extension carafe._C could not be loaded ({e})."
        f"{mismatch} To " + _BUILD_HINT
    ) from e

_built = _built_against()
if _built and _abi(_built) != _abi(torch.__version__):
    import os

    message = (
        f"carafe: the compiled kernels were built against torch {_built}, but torch "
        f"{torch.__version__} is imported; the C++ ABI differs between minor releases "
        "(crashes or wrong results): " + _BUILD_HINT
    )
    if os.environ.get(ALLOW_MISMATCH) != "1":
        raise ImportError(message + f" (or set {ALLOW_MISMATCH}=1 to import them anyway)")
    import warnings

    warnings.warn(message, RuntimeWarning, stacklevel=2)
elif _built and _release(_built) != _release(torch.__version__):
    import warnings

    warnings.warn(
        f"carafe: the compiled kernels were built against torch {_built}, and torch "
        f"{torch.__version__} (same minor release) is imported; rebuild if anything "
        "misbehaves: " + _BUILD_HINT,
        RuntimeWarning,
        stacklevel=2,
    )


def has_kernel(device_type: str) -> bool:
    """Whether kernels for `device_type` ("cpu", "cuda") were compiled in."""
    key = {"cpu": "CPU", "cuda": "CUDA"}.get(device_type)
    return key is not None and torch._C._dispatch_has_kernel_for_dispatch_key("carafe::carafe", key)


def cuda_available() -> bool:
    """CUDA kernels compiled in and a CUDA GPU visible."""
    return has_kernel("cuda") and torch.cuda.is_available()


# What this build holds, read once after the registrations above: the op's
# argument checks read this constant, not the dispatcher, so torch.compile
# traces them without a graph break (fullgraph=True failed on CUDA tensors:
# the dispatcher query returns a bool that Dynamo cannot put in a graph).
HAS_CUDA_KERNEL = has_kernel("cuda")
