"""Stride-2 downsamplers for the ``downsamplers`` study: a strided 3x3
convolution, 3x3 max and average pooling, and the content-aware downsampler
of CARAFE++ (Wang et al., "CARAFE++: Unified Content-Aware ReAssembly of
FEatures", TPAMI 2021, arXiv 2012.04733).

Every downsampler is an ``nn.Module`` built as ``cls(channels, **options)``
(``build_downsampler(name, channels, **options)``) and maps (N, C, H, W) to
(N, C, ceil(H/2), ceil(W/2)): output pixel (i, j) is centred on input pixel
(2i, 2j) and reads a window around it (3x3 for conv and the pools, k_down x
k_down for carafe_pp), zero-padded (the pools ignore the padding). All four
share that rule, so they can replace one another anywhere.

``flops_per_pixel()``: 2 x multiply-adds per *low-resolution* pixel, weights
only, as the upsampler zoo counts them (carafe_lab.upsamplers: per input
pixel, which is the low-resolution side there). For a downsampler that is per
output pixel, with every high-resolution layer counted at its s*s = 4 input
pixels per output pixel (exact for even H and W). Only torch is needed.

CARAFE++'s downsampler, as we read it (the paper's Sec. 3 in outline; the
paper's code is not public, mmdet and mmcv ship the upsampler only): a
kernel prediction module on the high-resolution input -- a 1x1 channel
compressor to C_m channels, then a k_encoder x k_encoder content encoder of
stride 2 that gives k_down^2 logits at every output pixel, softmax over the
taps -- and a reassembly: output (i, j) is the kernel-weighted sum of the
k_down x k_down window of the input centred on (2i, 2j). Defaults: k_down =
5, k_encoder = 3 (k_encoder = k_down - 2, as for the upsampler), C_m = 16
(the downsampler's; the upsampler's is 64).
"""

import torch
import torch.nn.functional as F
from torch import Tensor, nn

#: The downsampling step of every module here.
STRIDE = 2


def output_size(size: int) -> int:
    """The output length of an input length: ceil(size / 2)."""
    return -(-size // STRIDE)


class ConvDown(nn.Module):
    """A 3x3 convolution (C -> C) of stride 2, padding 1, with bias."""

    def __init__(self, channels: int, kernel_size: int = 3):
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(
                f"ConvDown: kernel_size must be an odd integer >= 1, got {kernel_size}"
            )
        self.channels, self.kernel_size = channels, kernel_size
        self.conv = nn.Conv2d(channels, channels, kernel_size, STRIDE, kernel_size // 2)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)

    def flops_per_pixel(self) -> int:
        return 2 * self.kernel_size**2 * self.channels**2


class MaxPoolDown(nn.Module):
    """3x3 max pooling of stride 2, padding 1 (ResNet's stem pooling): the
    same window and centre as the 3x3 strided convolution."""

    def __init__(self, channels: int):
        super().__init__()
        self.channels = channels

    def forward(self, x: Tensor) -> Tensor:
        return F.max_pool2d(x, 3, STRIDE, 1)

    def flops_per_pixel(self) -> int:
        return 0


class AvgPoolDown(MaxPoolDown):
    """3x3 average pooling of stride 2, padding 1, over the pixels inside the
    image (the padding is not counted, so borders are not darkened)."""

    def forward(self, x: Tensor) -> Tensor:
        return F.avg_pool2d(x, 3, STRIDE, 1, count_include_pad=False)


def strided_reassembly(x: Tensor, kernels: Tensor, kernel_size: int, groups: int = 1) -> Tensor:
    """Content-aware reassembly at stride 2: x (N, C, H, W), kernels
    (N, G*k*k, Ho, Wo) with Ho, Wo = ceil(H/2), ceil(W/2); output (N, C, Ho, Wo)
    whose pixel (i, j) in channel group g is sum_t kernels[g*k*k + t, i, j] *
    x[2i + dy_t, 2j + dx_t] over the k x k taps t (zero outside the image).

    Composed as unfold (the k x k windows at stride 2) times the kernels: the
    windows take k*k/4 times the input's memory (6.25x at k = 5), fine at the
    lab's sizes, and the weighted sum is one batched matmul, which autograd
    and torch's FLOP counter both see. Our op ``carafe.carafe`` gathers the
    window of the *low*-resolution input around each *high*-resolution
    output, so it does not express a strided gather directly;
    :func:`strided_reassembly_op` composes it exactly at scale 1 (4x the
    work, no window buffer)."""
    N, C, H, W = x.shape
    k, G = kernel_size, groups
    Ho, Wo = output_size(H), output_size(W)
    if kernels.shape != (N, G * k * k, Ho, Wo):
        raise ValueError(
            f"kernels: expected shape {(N, G * k * k, Ho, Wo)} for x of shape "
            f"{tuple(x.shape)}, got {tuple(kernels.shape)}"
        )
    windows = F.unfold(x, k, padding=k // 2, stride=STRIDE)  # (N, C*k*k, Ho*Wo)
    windows = windows.view(N * G, C // G, k * k, Ho * Wo).permute(0, 3, 1, 2)
    weights = kernels.reshape(N * G, k * k, Ho * Wo).permute(0, 2, 1).unsqueeze(-1)
    out = torch.matmul(windows, weights)  # (N*G, Ho*Wo, C/G, 1)
    return out.view(N, G, Ho, Wo, C // G).permute(0, 1, 4, 2, 3).reshape(N, C, Ho, Wo)


def strided_reassembly_op(x: Tensor, kernels: Tensor, kernel_size: int, groups: int = 1) -> Tensor:
    """:func:`strided_reassembly` through our op: CARAFE at scale 1 is the
    same reassembly at stride 1 (pixel p reads the k x k window centred on
    p), so give every input pixel the kernel of the output pixel it maps to
    (nearest, cropped to H x W) and keep every second row and column. Exact
    (both zero-pad); 4x the op's work, but no k*k window buffer, and the
    op's CUDA kernel where there is one."""
    from carafe import carafe

    H, W = x.shape[-2:]
    masks = kernels.repeat_interleave(STRIDE, -2).repeat_interleave(STRIDE, -1)
    masks = masks[..., :H, :W].contiguous()
    return carafe(x, masks, kernel_size, groups, 1)[..., ::STRIDE, ::STRIDE]


class CARAFEDown(nn.Module):
    """CARAFE++'s content-aware downsampler (see the module docstring):
    channel compressor (1x1, C -> C_m), content encoder (k_encoder x
    k_encoder, stride 2, C_m -> G*k_down^2), softmax over each group's taps,
    reassembly of the k_down x k_down window centred on (2i, 2j).

    Initialised as the upsampler (mmcv's CARAFEPack): the compressor xavier-
    uniform, the encoder normal with std 0.001 and zero bias, so every
    output starts as the uniform k_down x k_down average of its window.

    impl: "unfold" (:func:`strided_reassembly`) or "op"
    (:func:`strided_reassembly_op`); the same numbers."""

    def __init__(
        self,
        channels: int,
        down_kernel: int = 5,
        encoder_kernel: int = 3,
        compressed_channels: int = 16,
        down_group: int = 1,
        impl: str = "unfold",
    ):
        super().__init__()
        for name, k in (("down_kernel", down_kernel), ("encoder_kernel", encoder_kernel)):
            if k < 1 or k % 2 == 0:
                raise ValueError(f"CARAFEDown: {name} must be an odd integer >= 1, got {k}")
        if down_group < 1 or channels % down_group:
            raise ValueError(
                f"CARAFEDown: down_group must be >= 1 and divide channels={channels}, "
                f"got {down_group}"
            )
        if impl not in ("unfold", "op"):
            raise ValueError(f"CARAFEDown: impl must be 'unfold' or 'op', got {impl!r}")
        self.channels, self.down_kernel, self.encoder_kernel = channels, down_kernel, encoder_kernel
        self.compressed_channels, self.down_group, self.impl = (
            compressed_channels,
            down_group,
            impl,
        )
        self.channel_compressor = nn.Conv2d(channels, compressed_channels, 1)
        self.content_encoder = nn.Conv2d(
            compressed_channels,
            down_group * down_kernel**2,
            encoder_kernel,
            STRIDE,
            encoder_kernel // 2,
        )
        self.init_weights()

    def init_weights(self) -> None:
        nn.init.xavier_uniform_(self.channel_compressor.weight)
        nn.init.zeros_(self.channel_compressor.bias)
        nn.init.normal_(self.content_encoder.weight, std=0.001)
        nn.init.zeros_(self.content_encoder.bias)

    def predict_kernels(self, x: Tensor) -> Tensor:
        """The kernels for x (N, C, H, W): (N, G*k*k, ceil(H/2), ceil(W/2)),
        each group's k*k taps summing to one."""
        logits = self.content_encoder(self.channel_compressor(x))
        N, _, Ho, Wo = logits.shape
        kernels = F.softmax(logits.view(N, self.down_group, -1, Ho, Wo), dim=2)
        return kernels.view(N, -1, Ho, Wo)

    def forward(self, x: Tensor) -> Tensor:
        reassemble = strided_reassembly if self.impl == "unfold" else strided_reassembly_op
        return reassemble(x, self.predict_kernels(x), self.down_kernel, self.down_group)

    def flops_per_pixel(self) -> int:
        k2, s2 = self.down_kernel**2, STRIDE**2
        return 2 * (
            s2 * self.channels * self.compressed_channels  # compressor, at the input's pixels
            + self.encoder_kernel**2 * self.compressed_channels * self.down_group * k2
            + k2 * self.channels  # reassembly
        )


DOWNSAMPLERS = {
    "conv": ConvDown,
    "maxpool": MaxPoolDown,
    "avgpool": AvgPoolDown,
    "carafe_pp": CARAFEDown,
}


def build_downsampler(name: str, channels: int, **options) -> nn.Module:
    """The downsampler ``name``: (N, channels, H, W) -> (N, channels, ceil(H/2), ceil(W/2))."""
    if name not in DOWNSAMPLERS:
        raise ValueError(f"unknown downsampler {name!r}; choose from {sorted(DOWNSAMPLERS)}")
    return DOWNSAMPLERS[name](channels, **options)


def split_options(options):
    """A study variant's options split into (the upsampler's options, the
    downsampler as (name, options) or None). A variant names a downsampler
    with ``{"downsampler": name}`` or ``{"downsampler": {"name": name,
    **options}}``; every other option is the upsampler's."""
    options = dict(options or {})
    spec = options.pop("downsampler", None)
    if spec is None:
        return options, None
    if isinstance(spec, str):
        return options, (spec, {})
    spec = dict(spec)
    if "name" not in spec:
        raise ValueError(f"downsampler: expected a name or dict(name=..., **options), got {spec!r}")
    return options, (spec.pop("name"), spec)


def measured_flops_per_pixel(module: nn.Module, channels: int, size: int = 8) -> float:
    """FLOPs per output pixel as torch's FlopCounterMode counts them on a
    (1, C, size, size) input (size even): the check of flops_per_pixel().
    The op composition's reassembly is invisible to the counter, so it is
    added as 2*C*k*k per output pixel."""
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.randn(1, channels, size, size)
    with FlopCounterMode(display=False) as counter:
        module(x)
    total = counter.get_total_flops()
    out_pixels = output_size(size) ** 2
    if isinstance(module, CARAFEDown) and module.impl == "op":
        total += 2 * channels * module.down_kernel**2 * out_pixels
    return total / out_pixels


__all__ = [
    "DOWNSAMPLERS",
    "STRIDE",
    "build_downsampler",
    "output_size",
    "split_options",
    "strided_reassembly",
    "strided_reassembly_op",
    "measured_flops_per_pixel",
] + [c.__name__ for c in DOWNSAMPLERS.values()]
