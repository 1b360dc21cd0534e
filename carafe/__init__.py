"""carafe: CARAFE (Content-Aware ReAssembly of FEatures, Wang et al., ICCV 2019,
arXiv 1905.02188) as a PyTorch operator on CPU and CUDA, with mmcv-compatible
modules. The core package imports only torch."""

from ._loader import cuda_available, has_kernel
from .convert import convert_upsamplers
from .modules import CARAFE, CARAFEPack
from .ops import carafe, window_similarity
from .reference import carafe_reference, carafe_unfold, window_similarity_reference

__version__ = "0.3.0.dev0"

__all__ = [
    "CARAFE",
    "CARAFEPack",
    "carafe",
    "carafe_reference",
    "carafe_unfold",
    "convert_upsamplers",
    "cuda_available",
    "has_kernel",
    "window_similarity",
    "window_similarity_reference",
]
