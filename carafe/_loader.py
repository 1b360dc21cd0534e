"""Loads the compiled kernels (carafe._C), whose import registers the
``torch.ops.carafe`` operators. There is deliberately no fallback to the
pure-PyTorch reference: a missing build is an error that says how to fix it."""

import torch

_BUILD_HINT = (
    "build it from the repository root with `make setup` (or "
    "`pip install --no-build-isolation -e .`; add FORCE_CUDA=1 to also compile "
    "the CUDA kernels on a machine without a GPU)"
)

try:
    from . import _C  # noqa: F401  (import runs the TORCH_LIBRARY registrations)
except ImportError as e:  # pragma: no cover - exercised only on a broken install
    raise ImportError(f"carafe: the compiled extension carafe._C could not be loaded ({e}); "
                      + _BUILD_HINT) from e


def has_kernel(device_type: str) -> bool:
    """Whether kernels for `device_type` ("cpu", "cuda") were compiled in."""
    key = {"cpu": "CPU", "cuda": "CUDA"}.get(device_type)
    return key is not None and torch._C._dispatch_has_kernel_for_dispatch_key(
        "carafe::carafe", key)


def cuda_available() -> bool:
    """CUDA kernels compiled in and a CUDA GPU visible."""
    return has_kernel("cuda") and torch.cuda.is_available()
