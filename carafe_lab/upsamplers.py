"""The upsampler zoo of the paper's ablations (Wang et al., ICCV 2019,
Sec. 4.4 / Table 5) plus DySample (Liu et al., ICCV 2023), and the two
controls of the ``mechanism`` study: ``static_carafe`` (CARAFE's reassembly
with learned kernels that depend on the sub-pixel phase only, not on the
content) and ``nearest_conv`` (nearest followed by convolutions with about
CARAFE's parameter count).

Every upsampler is an ``nn.Module`` built as ``cls(channels, scale_factor,
**options)`` and maps (N, C, H, W) -> (N, C, s*H, s*W); ``build_upsampler(name,
channels, scale_factor, **options)`` builds one by name. Each also reports
``flops_per_pixel()``: the paper's convention, 2 x multiply-adds per *input*
pixel, weights only (biases, softmax and other elementwise work left out), so
CARAFE at C=256, s=2 with the defaults comes out at the paper's ~199K.
Only torch is needed.
"""

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from carafe.modules import CARAFEPack


class Nearest(nn.Module):
    """Nearest-neighbour interpolation (no parameters)."""

    def __init__(self, channels: int, scale_factor: int):
        super().__init__()
        self.channels, self.scale_factor = channels, scale_factor

    def forward(self, x: Tensor) -> Tensor:
        return F.interpolate(x, scale_factor=self.scale_factor, mode="nearest")

    def flops_per_pixel(self) -> int:
        return 0


class Bilinear(Nearest):
    """Bilinear interpolation, align_corners=False (no parameters)."""

    def forward(self, x: Tensor) -> Tensor:
        return F.interpolate(
            x, scale_factor=self.scale_factor, mode="bilinear", align_corners=False
        )


class Deconv(nn.Module):
    """Transposed convolution (C -> C), kernel 2s - s%2, stride s: exactly s x."""

    def __init__(self, channels: int, scale_factor: int, kernel_size=None):
        super().__init__()
        s = scale_factor
        k = kernel_size or (2 * s - s % 2)
        self.channels, self.scale_factor, self.kernel_size = channels, s, k
        self.deconv = nn.ConvTranspose2d(channels, channels, k, stride=s, padding=(k - s) // 2)

    def forward(self, x: Tensor) -> Tensor:
        return self.deconv(x)

    def flops_per_pixel(self) -> int:
        # each input pixel scatters a k x k patch of C x C weights
        return 2 * self.channels * self.channels * self.kernel_size**2


class PixelShuffle(nn.Module):
    """Sub-pixel convolution: a k x k conv to C*s*s channels, then pixel shuffle."""

    def __init__(self, channels: int, scale_factor: int, kernel_size: int = 3):
        super().__init__()
        self.channels, self.scale_factor, self.kernel_size = channels, scale_factor, kernel_size
        self.conv = nn.Conv2d(
            channels, channels * scale_factor**2, kernel_size, padding=kernel_size // 2
        )

    def forward(self, x: Tensor) -> Tensor:
        return F.pixel_shuffle(self.conv(x), self.scale_factor)

    def flops_per_pixel(self) -> int:
        return 2 * self.channels * self.channels * self.scale_factor**2 * self.kernel_size**2


class SpatialAttention(nn.Module):
    """Nearest upsampling reweighted by a predicted spatial attention map: a
    k x k conv predicts s*s sigmoid weights per input pixel (one per output
    sub-pixel, shared over channels), pixel-shuffled to the output grid. Our
    reading of the paper's "spatial attention" baseline (Table 5), which it
    does not specify further."""

    def __init__(self, channels: int, scale_factor: int, kernel_size: int = 3):
        super().__init__()
        self.channels, self.scale_factor, self.kernel_size = channels, scale_factor, kernel_size
        self.attention = nn.Conv2d(channels, scale_factor**2, kernel_size, padding=kernel_size // 2)
        nn.init.zeros_(self.attention.weight)
        nn.init.zeros_(self.attention.bias)  # 2 * sigmoid(0) = 1: starts as nearest

    def forward(self, x: Tensor) -> Tensor:
        weights = 2 * torch.sigmoid(F.pixel_shuffle(self.attention(x), self.scale_factor))
        return F.interpolate(x, scale_factor=self.scale_factor, mode="nearest") * weights

    def flops_per_pixel(self) -> int:
        return 2 * self.channels * self.scale_factor**2 * self.kernel_size**2


def _sample_with_offsets(x: Tensor, offsets: Tensor, scale_factor: int, groups: int) -> Tensor:
    """Bilinear sampling of x (N, C, H, W) at the output grid's nearest source
    positions plus offsets (N, 2*groups, s*H, s*W) in input pixels (x, y);
    channel group g uses offsets[:, 2g:2g+2]."""
    N, C, H, W = x.shape
    s = scale_factor
    Ho, Wo = H * s, W * s
    # centre of output pixel (p, q) in input pixel coordinates
    ys = (torch.arange(Ho, device=x.device, dtype=x.dtype) + 0.5) / s - 0.5
    xs = (torch.arange(Wo, device=x.device, dtype=x.dtype) + 0.5) / s - 0.5
    base_y, base_x = torch.meshgrid(ys, xs, indexing="ij")
    off = offsets.view(N, groups, 2, Ho, Wo)
    px = base_x + off[:, :, 0]
    py = base_y + off[:, :, 1]
    # grid_sample's normalised coordinates (align_corners=False)
    grid = torch.stack([(2 * px + 1) / W - 1, (2 * py + 1) / H - 1], dim=-1)
    grid = grid.view(N * groups, Ho, Wo, 2)
    out = F.grid_sample(
        x.reshape(N * groups, C // groups, H, W),
        grid,
        mode="bilinear",
        padding_mode="border",
        align_corners=False,
    )
    return out.view(N, C, Ho, Wo)


class GUM(nn.Module):
    """Guided Upsampling Module (Mazzini, BMVC 2018): a k x k conv predicts, for
    every output pixel, a 2-D offset of its sampling position; features are
    sampled bilinearly there. Offsets start at zero (bilinear upsampling)."""

    def __init__(self, channels: int, scale_factor: int, kernel_size: int = 3):
        super().__init__()
        self.channels, self.scale_factor, self.kernel_size = channels, scale_factor, kernel_size
        self.offset = nn.Conv2d(
            channels, 2 * scale_factor**2, kernel_size, padding=kernel_size // 2
        )
        nn.init.zeros_(self.offset.weight)
        nn.init.zeros_(self.offset.bias)

    def forward(self, x: Tensor) -> Tensor:
        offsets = F.pixel_shuffle(self.offset(x), self.scale_factor)
        return _sample_with_offsets(x, offsets, self.scale_factor, 1)

    def flops_per_pixel(self) -> int:
        return 2 * self.channels * 2 * self.scale_factor**2 * self.kernel_size**2


class DySample(nn.Module):
    """DySample (Liu et al., "Learning to Upsample by Learning to Sample",
    ICCV 2023), its "LP" static-scope variant: a 1x1 linear layer predicts
    2*G*s*s offsets per input pixel, scaled by 0.25 (so neighbouring sampling
    points cannot swap places), pixel-shuffled to the output grid and added to
    the initial sampling positions; features are sampled bilinearly."""

    def __init__(self, channels: int, scale_factor: int, groups: int = 4):
        super().__init__()
        if channels % groups != 0:
            raise ValueError(f"DySample: groups={groups} must divide channels={channels}")
        self.channels, self.scale_factor, self.groups = channels, scale_factor, groups
        self.offset = nn.Conv2d(channels, 2 * groups * scale_factor**2, 1)
        nn.init.normal_(self.offset.weight, std=0.001)
        nn.init.zeros_(self.offset.bias)

    def forward(self, x: Tensor) -> Tensor:
        s, g = self.scale_factor, self.groups
        # Channel order (xy, group, sub-pixel) as in the official code, so its
        # checkpoints' offset layer means the same here.
        offsets = F.pixel_shuffle(self.offset(x) * 0.25, s)  # (N, 2*g, sH, sW)
        N, _, Ho, Wo = offsets.shape
        offsets = offsets.view(N, 2, g, Ho, Wo).transpose(1, 2).reshape(N, 2 * g, Ho, Wo)
        return _sample_with_offsets(x, offsets, s, g)

    def flops_per_pixel(self) -> int:
        return 2 * self.channels * 2 * self.groups * self.scale_factor**2


class CARAFEUpsampler(CARAFEPack):
    """CARAFE (the paper's upsampler): :class:`carafe.CARAFEPack` with the zoo's
    constructor shape; options: up_kernel, up_group, encoder_kernel,
    encoder_dilation, compressed_channels, normalizer, kernel_init.

    kernel_init: the kernels at initialisation, set by the content encoder's
    bias (its weights start at std 0.001, so every pixel starts with the same
    kernel per sub-pixel phase): "uniform" (mmcv's: zero bias, a k x k box
    blur), "nearest" (the centre tap, the source pixel nearest-neighbour
    upsampling copies) or "bilinear" (bilinear interpolation's weights,
    align_corners=False), each mixed with KERNEL_INIT_UNIFORM_SHARE of the
    uniform kernel. Softmax normaliser only."""

    def __init__(
        self,
        channels: int,
        scale_factor: int,
        normalizer: str = "softmax",
        kernel_init: str = "uniform",
        **options,
    ):
        if normalizer not in NORMALIZERS:
            raise ValueError(
                f"CARAFEUpsampler: normalizer must be one of {sorted(NORMALIZERS)}, "
                f"got {normalizer!r}"
            )
        if kernel_init not in KERNEL_INITS:
            raise ValueError(
                f"CARAFEUpsampler: kernel_init must be one of {list(KERNEL_INITS)}, "
                f"got {kernel_init!r}"
            )
        if kernel_init != "uniform" and normalizer != "softmax":
            raise ValueError(
                f"CARAFEUpsampler: kernel_init={kernel_init!r} needs normalizer='softmax', "
                f"got {normalizer!r}"
            )
        self.kernel_init = kernel_init
        super().__init__(channels, scale_factor, **options)
        self.normalizer = normalizer

    def init_weights(self) -> None:
        super().init_weights()
        if getattr(self, "kernel_init", "uniform") != "uniform":
            with torch.no_grad():
                self.content_encoder.bias.copy_(
                    init_kernel_logits(
                        self.kernel_init, self.up_kernel, self.scale_factor, self.up_group
                    )
                )

    def kernel_normalizer(self, mask: Tensor) -> Tensor:
        if self.normalizer == "softmax":
            return super().kernel_normalizer(mask)
        mask = F.pixel_shuffle(mask, self.scale_factor)
        n, c, h, w = mask.shape
        mask = torch.sigmoid(mask.view(n, c // self.up_kernel**2, -1, h, w))
        if self.normalizer == "sigmoid_normalized":
            mask = mask / mask.sum(dim=2, keepdim=True)
        return mask.reshape(n, c, h, w).contiguous()

    def flops_per_pixel(self) -> int:
        s2, k2 = self.scale_factor**2, self.up_kernel**2
        return 2 * (
            self.channels * self.compressed_channels
            + self.encoder_kernel**2 * s2 * k2 * self.up_group * self.compressed_channels
            + s2 * k2 * self.channels
        )


#: The kernels CARAFE can start from (CARAFEUpsampler's kernel_init).
KERNEL_INITS = ("uniform", "nearest", "bilinear")
#: The share of the uniform kernel mixed into a "nearest" or "bilinear" start:
#: a softmax saturated at a one-hot kernel passes almost no gradient to the
#: other taps (w * (1 - w)), which would pin the kernel where it started.
KERNEL_INIT_UNIFORM_SHARE = 0.1


def bilinear_phase_kernels(up_kernel: int, scale_factor: int) -> Tensor:
    """Bilinear interpolation (align_corners=False) as CARAFE kernels: (k*k, s, s),
    tap (ky, kx) of phase (ry, rx). Output pixel p = s*i + r samples the input
    at i + (r + 0.5) / s - 0.5; CARAFE's tap d reads input pixel i + d - k//2."""
    k, s = up_kernel, scale_factor
    taps = torch.arange(k, dtype=torch.float64) - k // 2
    shift = (torch.arange(s, dtype=torch.float64) + 0.5) / s - 0.5
    w1 = (1 - (taps[:, None] - shift[None, :]).abs()).clamp(min=0)  # (k, s)
    return torch.einsum("ay,bx->abyx", w1, w1).reshape(k * k, s, s)


def init_kernel_logits(kernel_init: str, up_kernel: int, scale_factor: int, up_group: int):
    """The content encoder bias (s*s*G*k*k,) whose softmax is `kernel_init`'s
    kernel mixed with KERNEL_INIT_UNIFORM_SHARE of the uniform one. Channel
    c*s*s + ry*s + rx of the encoder is kernel channel c = g*k*k + tap at
    phase (ry, rx) after the pixel shuffle."""
    k, s = up_kernel, scale_factor
    if kernel_init == "nearest":
        target = torch.zeros(k * k, s, s, dtype=torch.float64)
        target[(k * k) // 2] = 1.0
    elif kernel_init == "bilinear":
        target = bilinear_phase_kernels(k, s)
    else:
        raise ValueError(f"kernel_init: expected 'nearest' or 'bilinear', got {kernel_init!r}")
    share = KERNEL_INIT_UNIFORM_SHARE
    kernels = (1 - share) * target + share / (k * k)
    logits = kernels.log().repeat(up_group, 1, 1)  # (G*k*k, s, s)
    return logits.reshape(-1).float()


def carafe_parameter_count(channels: int, scale_factor: int, **options) -> int:
    """Parameters of the zoo's CARAFE at these channels, scale and options."""
    return count_parameters(CARAFEUpsampler(channels, scale_factor, **options))


class StaticCARAFE(nn.Module):
    """The content-agnostic twin of CARAFE: the same reassembly (k_up x k_up
    window around the source pixel, G groups), with softmax kernels that are
    learned parameters, one per sub-pixel phase (p % s, q % s) and group,
    instead of predicted from the content. G*s*s*k*k parameters (100 at
    k_up = 5, s = 2); they start at zero, so the kernels start uniform, as
    CARAFE's do (its encoder starts at std 0.001).

    forward(x (N, C, H, W)) -> (N, C, s*H, s*W)."""

    def __init__(self, channels: int, scale_factor: int, up_kernel: int = 5, up_group: int = 1):
        super().__init__()
        if up_kernel < 1 or up_kernel % 2 == 0:
            raise ValueError(
                f"StaticCARAFE: up_kernel must be an odd integer >= 1, got {up_kernel}"
            )
        if up_group < 1 or channels % up_group:
            raise ValueError(
                f"StaticCARAFE: up_group must be >= 1 and divide "
                f"channels={channels}, got {up_group}"
            )
        self.channels, self.scale_factor = channels, scale_factor
        self.up_kernel, self.up_group = up_kernel, up_group
        #: (G, k*k, s, s) logits: group, tap, phase row, phase column
        self.kernel_logits = nn.Parameter(
            torch.zeros(up_group, up_kernel**2, scale_factor, scale_factor)
        )

    def phase_kernels(self) -> Tensor:
        """The kernels, (G, k*k, s, s), each summing to one over its k*k taps."""
        return F.softmax(self.kernel_logits, dim=1)

    def predict_kernels(self, x: Tensor) -> Tensor:
        """The masks for x (N, C, H, W): (N, G*k*k, s*H, s*W), the phase
        kernels tiled over the output grid (the same for every input)."""
        return tile_phase_kernels(self.phase_kernels(), x.shape[0], x.shape[-2], x.shape[-1])

    def forward(self, x: Tensor) -> Tensor:
        from carafe import carafe

        return carafe(
            x, self.predict_kernels(x).to(x.dtype), self.up_kernel, self.up_group, self.scale_factor
        )

    def flops_per_pixel(self) -> int:
        return 2 * self.scale_factor**2 * self.up_kernel**2 * self.channels


def tile_phase_kernels(phase_kernels: Tensor, batch: int, height: int, width: int) -> Tensor:
    """Per-phase kernels (G, k*k, s, s) as CARAFE masks (batch, G*k*k, s*H, s*W):
    output pixel (p, q) gets the kernel of phase (p % s, q % s)."""
    G, kk, s, _ = phase_kernels.shape
    masks = phase_kernels.reshape(1, G * kk, s, s).repeat(1, 1, height, width)
    return masks.expand(batch, -1, -1, -1).contiguous()


class NearestConv(nn.Module):
    """The parameter control of the ``mechanism`` study: nearest upsampling,
    then a residual block at the output resolution, ``x + conv1x1(relu(
    conv_kxk(x)))`` with M hidden channels, M chosen so that the block has
    about as many parameters as CARAFE at the same channels and scale (the
    zoo's defaults, or ``match`` options). The last conv starts at zero, so
    the block starts as nearest. It adds CARAFE's capacity without its
    mechanism (reassembly with content-predicted kernels).

    forward(x (N, C, H, W)) -> (N, C, s*H, s*W)."""

    def __init__(
        self, channels: int, scale_factor: int, kernel_size: int = 3, hidden=None, match=None
    ):
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(
                f"NearestConv: kernel_size must be an odd integer >= 1, got {kernel_size}"
            )
        if hidden is None:
            target = carafe_parameter_count(channels, scale_factor, **(match or {}))
            # k*k*C*M + M (first conv) + M*C + C (second conv) = target
            hidden = max(1, round((target - channels) / (kernel_size**2 * channels + channels + 1)))
        self.channels, self.scale_factor = channels, scale_factor
        self.kernel_size, self.hidden = kernel_size, hidden
        self.expand = nn.Conv2d(channels, hidden, kernel_size, padding=kernel_size // 2)
        self.project = nn.Conv2d(hidden, channels, 1)
        nn.init.zeros_(self.project.weight)
        nn.init.zeros_(self.project.bias)

    def forward(self, x: Tensor) -> Tensor:
        up = F.interpolate(x, scale_factor=self.scale_factor, mode="nearest")
        return up + self.project(F.relu(self.expand(up)))

    def flops_per_pixel(self) -> int:
        # per input pixel: s*s output pixels, each through both convs
        return (
            2
            * self.scale_factor**2
            * (self.kernel_size**2 * self.channels * self.hidden + self.hidden * self.channels)
        )


#: The paper's kernel normalisers (ablation, Table 8): sigmoid,
#: sigmoid + normalise (sum to one), softmax.
NORMALIZERS = ("sigmoid", "sigmoid_normalized", "softmax")

UPSAMPLERS = {
    "nearest": Nearest,
    "bilinear": Bilinear,
    "deconv": Deconv,
    "pixel_shuffle": PixelShuffle,
    "spatial_attention": SpatialAttention,
    "gum": GUM,
    "carafe": CARAFEUpsampler,
    "dysample": DySample,
    "static_carafe": StaticCARAFE,
    "nearest_conv": NearestConv,
}


def build_upsampler(name: str, channels: int, scale_factor: int, **options) -> nn.Module:
    """The zoo's upsampler ``name`` for (N, channels, H, W) -> (N, channels, s*H, s*W)."""
    if name not in UPSAMPLERS:
        raise ValueError(f"unknown upsampler {name!r}; choose from {sorted(UPSAMPLERS)}")
    if not isinstance(scale_factor, int) or scale_factor < 1:
        raise ValueError(f"scale_factor must be an integer >= 1, got {scale_factor!r}")
    return UPSAMPLERS[name](channels, scale_factor, **options)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def measured_flops_per_pixel(module: nn.Module, channels: int, size: int = 8) -> float:
    """FLOPs per input pixel as torch's FlopCounterMode counts them on a
    (1, C, size, size) input, with our op's reassembly counted as 2*C*k*k per
    output pixel: the check of flops_per_pixel()."""
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.randn(1, channels, size, size)
    with FlopCounterMode(display=False) as counter:
        module(x)
    total = counter.get_total_flops()
    for sub in module.modules():
        if isinstance(sub, (CARAFEPack, StaticCARAFE)):
            s = sub.scale_factor
            total += 2 * channels * sub.up_kernel**2 * (size * s) ** 2
    return total / size**2


__all__ = [
    "UPSAMPLERS",
    "NORMALIZERS",
    "build_upsampler",
    "count_parameters",
    "carafe_parameter_count",
    "tile_phase_kernels",
    "measured_flops_per_pixel",
] + [c.__name__ for c in UPSAMPLERS.values()]
