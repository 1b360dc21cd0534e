"""The upsampler zoo of the paper's ablations (Wang et al., ICCV 2019,
Sec. 4.4 / Table 5) plus DySample (Liu et al., ICCV 2023), two successors
built on the library's two ops, FADE (ECCV 2022) and SAPA-B (NeurIPS 2022),
and the two controls of the ``mechanism`` study: ``static_carafe`` (CARAFE's
reassembly with learned kernels that depend on the sub-pixel phase only, not
on the content) and ``nearest_conv`` (nearest followed by convolutions with
about CARAFE's parameter count).

Every upsampler is an ``nn.Module`` built as ``cls(channels, scale_factor,
**options)`` and maps (N, C, H, W) -> (N, C, s*H, s*W); ``build_upsampler(name,
channels, scale_factor, **options)`` builds one by name. Those whose class
sets ``needs_skip = True`` (FADE, SAPA) also take the encoder feature at the
output resolution, ``forward(x, skip)`` with skip (N, C, s*H, s*W), and raise
a ValueError without it; networks call every upsampler through
``upsample(module, x, skip)``, which passes skip only to those. Each also reports
``flops_per_pixel()``: the paper's convention, 2 x multiply-adds per *input*
pixel, weights only (biases, softmax and other elementwise work left out), so
CARAFE at C=256, s=2 with the defaults comes out at the paper's ~199K.
Only torch is needed.
"""

import math

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


def _check_skip(owner: str, x: Tensor, skip, scale_factor: int) -> None:
    """The encoder feature of an upsampler that needs one: (N, C, s*H, s*W)
    for x (N, C, H, W), on x's device and dtype."""
    N, C, H, W = x.shape
    expected = (N, C, scale_factor * H, scale_factor * W)
    if skip is None:
        raise ValueError(
            f"{owner}: skip (the encoder feature at the output resolution) is required, "
            f"expected a tensor of shape {expected}, got None"
        )
    if not isinstance(skip, Tensor) or tuple(skip.shape) != expected:
        got = tuple(skip.shape) if isinstance(skip, Tensor) else type(skip).__name__
        raise ValueError(
            f"{owner}: skip must have shape {expected} (x is {tuple(x.shape)}), got {got}"
        )
    if skip.dtype != x.dtype or skip.device != x.device:
        raise ValueError(
            f"{owner}: skip must be {x.dtype} on {x.device} like x, "
            f"got {skip.dtype} on {skip.device}"
        )


class FADE(nn.Module):
    """FADE (Lu et al., "FADE: Fusing the Assets of Decoder and Encoder for
    Task-Agnostic Upsampling", ECCV 2022, arXiv 2207.10392): CARAFE's
    reassembly of the decoder feature x with kernels predicted from both x
    and the encoder feature ``skip`` at the output resolution, and a gate,
    predicted from x, that lets the encoder feature through::

        e = compress_skip(skip)                   (N, d, sH, sW), 1x1 conv
        c = compress_x(x)                         (N, d, H, W),   1x1 conv, no bias
        logits = conv_W(e) + nearest_s(conv_W(c)) (N, k*k, sH, sW)
        out = g * skip + (1 - g) * carafe(x, softmax_kk(logits)),
        g = sigmoid(nearest_s(gate(x)))           (N, 1, sH, sW),  1x1 conv

    conv_W is one e x e convolution (k*k outputs) applied to both maps: the
    paper's semi-shift convolution, which for output pixel (p, q) sums W over
    the e x e window of e around (p, q) and over the e x e window of c around
    (p // s, q // s). The paper writes it as s*s shifted stride-s windows
    over e; that equals conv_W at full resolution, computed here as such.
    The decoder's term is computed once per input pixel and shared by its
    s x s output pixels. The paper uses s = 2; the equations hold for any s.

    Defaults as the paper: k_up 5, e 3, d 64; initialisation xavier (uniform
    for the 1x1 convs, normal for conv_W), biases zero.

    Control: ``static_carafe`` is the content-agnostic twin of the
    reassembly (same k x k window, learned per-phase kernels); the gate has
    no twin in the zoo (a learned per-phase constant gate would be one).

    forward(x (N, C, H, W), skip (N, C, s*H, s*W)) -> (N, C, s*H, s*W)."""

    #: forward takes the encoder feature: ``forward(x, skip)``.
    needs_skip = True

    def __init__(
        self,
        channels: int,
        scale_factor: int,
        up_kernel: int = 5,
        encoder_kernel: int = 3,
        compressed_channels: int = 64,
    ):
        super().__init__()
        for name, value in (("up_kernel", up_kernel), ("encoder_kernel", encoder_kernel)):
            if not isinstance(value, int) or value < 1 or value % 2 == 0:
                raise ValueError(f"FADE: {name} must be an odd integer >= 1, got {value!r}")
        if not isinstance(compressed_channels, int) or compressed_channels < 1:
            raise ValueError(
                f"FADE: compressed_channels must be an integer >= 1, got {compressed_channels!r}"
            )
        self.channels, self.scale_factor = channels, scale_factor
        self.up_kernel, self.encoder_kernel = up_kernel, encoder_kernel
        self.compressed_channels = d = compressed_channels
        self.compress_skip = nn.Conv2d(channels, d, 1)
        # no bias: the two compressed maps go through the same conv_W and are
        # summed, so one bias (compress_skip's) already shifts the sum
        self.compress_x = nn.Conv2d(channels, d, 1, bias=False)
        self.kernel_conv = nn.Conv2d(d, up_kernel**2, encoder_kernel, padding=encoder_kernel // 2)
        self.gate = nn.Conv2d(channels, 1, 1)
        for conv in (self.compress_skip, self.compress_x, self.gate):
            nn.init.xavier_uniform_(conv.weight)
        nn.init.xavier_normal_(self.kernel_conv.weight)
        for conv in (self.compress_skip, self.kernel_conv, self.gate):
            nn.init.zeros_(conv.bias)

    def kernel_logits(self, x: Tensor, skip: Tensor) -> Tensor:
        """The semi-shift convolution: (N, k*k, s*H, s*W) logits."""
        e = self.encoder_kernel // 2
        from_skip = self.kernel_conv(self.compress_skip(skip))
        from_x = F.conv2d(self.compress_x(x), self.kernel_conv.weight, padding=e)
        return from_skip + F.interpolate(from_x, scale_factor=self.scale_factor, mode="nearest")

    def predict_kernels(self, x: Tensor, skip: Tensor) -> Tensor:
        """The reassembly kernels, CARAFE's masks (N, k*k, s*H, s*W), each
        summing to one over its k*k taps."""
        return F.softmax(self.kernel_logits(x, skip), dim=1)

    def forward(self, x: Tensor, skip: Tensor = None) -> Tensor:
        from carafe import carafe

        _check_skip("FADE", x, skip, self.scale_factor)
        s = self.scale_factor
        gate = torch.sigmoid(F.interpolate(self.gate(x), scale_factor=s, mode="nearest"))
        up = carafe(x, self.predict_kernels(x, skip), self.up_kernel, 1, s)
        return gate * skip + (1 - gate) * up

    def flops_per_pixel(self) -> int:
        C, d, s2 = self.channels, self.compressed_channels, self.scale_factor**2
        kk, ee = self.up_kernel**2, self.encoder_kernel**2
        return 2 * (
            s2 * C * d  # compress_skip at the output resolution
            + C * d  # compress_x
            + (s2 + 1) * ee * d * kk  # conv_W on both maps
            + C  # gate
            + s2 * kk * C  # reassembly
        )


class SAPA(nn.Module):
    """SAPA-B (Lu et al., "SAPA: Similarity-Aware Point Affiliation for
    Feature Upsampling", NeurIPS 2022, arXiv 2209.12866; the base module of
    the extension "On Point Affiliation in Feature Upsampling", arXiv
    2307.08198): CARAFE's reassembly of the decoder feature x with kernels
    that are the softmax, over each k x k window, of the similarity between
    the encoder feature ``skip`` at the output pixel (the query) and the
    decoder feature at the window's pixels (the keys)::

        q = P norm(skip)     (N, d, sH, sW), 1x1 conv (linear embedding)
        k = Q norm(x)        (N, d, H, W),   1x1 conv
        w[p, t] = softmax_t(q[p] . k[p // s + t])   t over the k x k window
        out = carafe(x, w)

    The similarity is the low-rank bilinear one, skip^T P^T Q x ("B"), as
    in the extension's SAPA-B; the gated variant of the NeurIPS paper is not
    this one. norm: a GroupNorm per input (the reference code's 32 groups;
    here gcd(32, C), so that any C works), affine. It is
    ``carafe.window_similarity`` then ``carafe.carafe``. The raw x, not its
    normalised copy, is reassembled. Taps outside x are 0 in the
    similarity and skipped by the reassembly, as CARAFE's zero padding.

    Defaults as the reference: k_up 5, d 32, embeddings N(0, 0.02) with
    zero biases.

    Control: ``static_carafe`` is the content-agnostic twin (same k x k
    window, learned per-phase kernels, no encoder feature).

    forward(x (N, C, H, W), skip (N, C, s*H, s*W)) -> (N, C, s*H, s*W)."""

    #: forward takes the encoder feature: ``forward(x, skip)``.
    needs_skip = True

    def __init__(
        self,
        channels: int,
        scale_factor: int,
        up_kernel: int = 5,
        embedding_dim: int = 32,
        norm_groups: int = 32,
    ):
        super().__init__()
        if not isinstance(up_kernel, int) or up_kernel < 1 or up_kernel % 2 == 0:
            raise ValueError(f"SAPA: up_kernel must be an odd integer >= 1, got {up_kernel!r}")
        for name, value in (("embedding_dim", embedding_dim), ("norm_groups", norm_groups)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"SAPA: {name} must be an integer >= 1, got {value!r}")
        self.channels, self.scale_factor = channels, scale_factor
        self.up_kernel, self.embedding_dim = up_kernel, embedding_dim
        groups = math.gcd(norm_groups, channels)
        self.norm_skip = nn.GroupNorm(groups, channels)
        self.norm_x = nn.GroupNorm(groups, channels)
        self.query = nn.Conv2d(channels, embedding_dim, 1)
        self.key = nn.Conv2d(channels, embedding_dim, 1)
        for conv in (self.query, self.key):
            nn.init.normal_(conv.weight, std=0.02)
            nn.init.zeros_(conv.bias)

    def similarity(self, x: Tensor, skip: Tensor) -> Tensor:
        """The query-key similarities, CARAFE's masks layout (N, k*k, s*H, s*W)."""
        from carafe import window_similarity

        q = self.query(self.norm_skip(skip))
        k = self.key(self.norm_x(x))
        return window_similarity(q, k, self.up_kernel, 1, self.scale_factor)

    def predict_kernels(self, x: Tensor, skip: Tensor) -> Tensor:
        """The reassembly kernels (N, k*k, s*H, s*W): softmax over the taps."""
        return F.softmax(self.similarity(x, skip), dim=1)

    def forward(self, x: Tensor, skip: Tensor = None) -> Tensor:
        from carafe import carafe

        _check_skip("SAPA", x, skip, self.scale_factor)
        return carafe(x, self.predict_kernels(x, skip), self.up_kernel, 1, self.scale_factor)

    def flops_per_pixel(self) -> int:
        C, d, s2, kk = self.channels, self.embedding_dim, self.scale_factor**2, self.up_kernel**2
        return 2 * (
            s2 * C * d  # query embedding at the output resolution
            + C * d  # key embedding
            + s2 * kk * d  # similarities
            + s2 * kk * C  # reassembly
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
    "fade": FADE,
    "sapa": SAPA,
}


def build_upsampler(name: str, channels: int, scale_factor: int, **options) -> nn.Module:
    """The zoo's upsampler ``name`` for (N, channels, H, W) -> (N, channels, s*H, s*W)."""
    if name not in UPSAMPLERS:
        raise ValueError(f"unknown upsampler {name!r}; choose from {sorted(UPSAMPLERS)}")
    if not isinstance(scale_factor, int) or scale_factor < 1:
        raise ValueError(f"scale_factor must be an integer >= 1, got {scale_factor!r}")
    return UPSAMPLERS[name](channels, scale_factor, **options)


def needs_skip(upsampler) -> bool:
    """Whether an upsampler (a module, its class or its zoo name) takes the
    encoder feature at the output resolution: ``forward(x, skip)``."""
    if isinstance(upsampler, str):
        upsampler = UPSAMPLERS[upsampler]
    return bool(getattr(upsampler, "needs_skip", False))


def upsample(module: nn.Module, x: Tensor, skip=None) -> Tensor:
    """``module(x, skip)`` for an upsampler that needs the encoder feature
    skip (N, C, s*H, s*W), else ``module(x)``: how a network calls any of the
    zoo's upsamplers on x (N, C, H, W)."""
    return module(x, skip) if needs_skip(module) else module(x)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _carafe_flops(features, masks, kernel_size, group_size, scale_factor, *, out_shape, **_):
    # each output element: a k*k-tap weighted sum
    N, C, Ho, Wo = out_shape
    return 2 * N * C * Ho * Wo * kernel_size**2


def _window_similarity_flops(query, key, kernel_size, group_size, scale_factor, *, out_shape, **_):
    # each query element: a product with each of its k*k window taps
    N, C, Ho, Wo = query
    return 2 * N * C * Ho * Wo * kernel_size**2


def carafe_flop_formulas() -> dict:
    """FlopCounterMode's ``custom_mapping`` for the library's ops, which it
    does not know (a function: the ops exist once carafe is imported)."""
    import carafe  # noqa: F401  (registers the ops)

    return {
        torch.ops.carafe.carafe: _carafe_flops,
        torch.ops.carafe.window_similarity: _window_similarity_flops,
    }


def measured_flops_per_pixel(module: nn.Module, channels: int, size: int = 8) -> float:
    """FLOPs per input pixel as torch's FlopCounterMode counts them on a
    (1, C, size, size) input (and, for an upsampler that needs one, a random
    encoder feature at the output resolution), with our ops counted by
    carafe_flop_formulas(): the check of flops_per_pixel()."""
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.randn(1, channels, size, size)
    skip = None
    if needs_skip(module):
        s = module.scale_factor
        skip = torch.randn(1, channels, s * size, s * size)
    with FlopCounterMode(display=False, custom_mapping=carafe_flop_formulas()) as counter:
        upsample(module, x, skip)
    return counter.get_total_flops() / size**2


__all__ = [
    "UPSAMPLERS",
    "NORMALIZERS",
    "build_upsampler",
    "needs_skip",
    "upsample",
    "count_parameters",
    "carafe_parameter_count",
    "tile_phase_kernels",
    "measured_flops_per_pixel",
    "carafe_flop_formulas",
] + [c.__name__ for c in UPSAMPLERS.values()]
