"""Looking at reassembly kernels: extraction and summary maps (torch only),
and figures (matplotlib, imported when a plotting function is called).

Index convention (the op's, see :mod:`carafe.reference`): output pixel
(p, q) reads the k x k input neighbourhood centred on its source pixel
(p // s, q // s); tap (ky, kx) sits at input offset (ky - k // 2, kx - k // 2).
"""

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def reassembly_kernels(module, x: Tensor) -> Tensor:
    """The kernels a CARAFE module predicts for input x (N, C, H, W):
    (N, G, k, k, s*H, s*W). ``module`` is a :class:`carafe.CARAFEPack` (or a
    zoo ``CARAFE``)."""
    k, G = module.up_kernel, module.up_group
    with torch.no_grad():
        masks = module.predict_kernels(x)
    N, _, Ho, Wo = masks.shape
    return masks.view(N, G, k, k, Ho, Wo)


def _probabilities(kernels: Tensor) -> Tensor:
    """Kernels (..., k, k, Ho, Wo) as weights summing to one over each window
    (a sigmoid normaliser's kernels do not)."""
    w = kernels.clamp_min(0)
    return w / w.sum(dim=(-4, -3), keepdim=True).clamp_min(1e-12)


def kernel_entropy(kernels: Tensor) -> Tensor:
    """Entropy in nats of each kernel, (..., k, k, Ho, Wo) -> (..., Ho, Wo):
    0 for a kernel that copies one input pixel, log(k*k) for a uniform one."""
    p = _probabilities(kernels.double())
    return -(p * p.clamp_min(1e-300).log()).sum(dim=(-4, -3)).to(kernels.dtype)


def kernel_center_of_mass(kernels: Tensor) -> Tensor:
    """Where each kernel pulls from: its weighted mean tap offset (dy, dx) in
    input pixels from the source pixel, (..., k, k, Ho, Wo) -> (..., 2, Ho, Wo)."""
    k = kernels.shape[-3]
    p = _probabilities(kernels)
    offsets = torch.arange(k, dtype=p.dtype, device=p.device) - k // 2
    dy = (p * offsets.view(k, 1, 1, 1)).sum(dim=(-4, -3))
    dx = (p * offsets.view(1, k, 1, 1)).sum(dim=(-4, -3))
    return torch.stack([dy, dx], dim=-3)


def source_pixel(p: int, q: int, scale: int):
    """The input pixel an output location (p, q) is centred on."""
    return p // scale, q // scale


def _bilinear_weights_1d(o: int, scale: int, k: int):
    """Weights over taps -k//2..k//2 (around o // scale) with which
    align_corners=False bilinear interpolation makes output coordinate o."""
    src = (o + 0.5) / scale - 0.5
    lo = math.floor(src)
    frac = src - lo
    w = [0.0] * k
    for pos, weight in ((lo, 1 - frac), (lo + 1, frac)):
        tap = pos - o // scale + k // 2
        if weight and not 0 <= tap < k:
            raise ValueError(f"k: bilinear at scale {scale} needs k >= 3, got {k}")
        if weight:
            w[tap] += weight
    return torch.tensor(w, dtype=torch.float64)


def bilinear_kernel(p: int, q: int, scale: int, k: int = 5) -> Tensor:
    """Bilinear interpolation's fixed weights (align_corners=False) for output
    location (p, q), as a k x k kernel over the same neighbourhood CARAFE
    reads: (k, k), summing to one. Away from the image border it does not
    depend on the content, only on the sub-pixel phase (p % s, q % s)."""
    return torch.outer(_bilinear_weights_1d(p, scale, k), _bilinear_weights_1d(q, scale, k))


def bilinear_masks(height: int, width: int, scale: int, k: int = 3) -> Tensor:
    """Masks (1, k*k, s*height, s*width) with which the CARAFE op reproduces
    bilinear upsampling (align_corners=False) everywhere except the one-pixel
    border (where F.interpolate clamps and CARAFE pads with zeros)."""
    Ho, Wo = height * scale, width * scale
    ky = torch.stack([_bilinear_weights_1d(p, scale, k) for p in range(Ho)])  # (Ho, k)
    kx = torch.stack([_bilinear_weights_1d(q, scale, k) for q in range(Wo)])  # (Wo, k)
    m = ky.t()[:, None, :, None] * kx.t()[None, :, None, :]  # (k, k, Ho, Wo)
    return m.reshape(1, k * k, Ho, Wo).float()


def edge_and_flat_locations(image: Tensor, scale: int, n: int = 2, margin: int = 4):
    """Output locations (p, q) on the strongest edges and in the flattest
    regions of image (3 or 1, H, W): (edges, flats), n of each, at least
    ``margin`` input pixels apart from each other and the border."""
    gray = image.float().mean(0, keepdim=True)[None]
    gy = gray[..., 1:, :-1] - gray[..., :-1, :-1]
    gx = gray[..., :-1, 1:] - gray[..., :-1, :-1]
    mag = (gy ** 2 + gx ** 2).sqrt()[0, 0]
    mag = F.avg_pool2d(mag[None, None], 3, 1, 1)[0, 0]  # favour edges over single-pixel noise
    H, W = mag.shape

    def pick(order):
        chosen = []
        for idx in order.tolist():
            y, x = divmod(idx, W)
            if not (margin <= y < H - margin and margin <= x < W - margin):
                continue
            if all(max(abs(y - cy), abs(x - cx)) >= 2 * margin for cy, cx in chosen):
                chosen.append((y, x))
            if len(chosen) == n:
                break
        # the output location at the centre of the source pixel's s x s block
        return [(y * scale + scale // 2, x * scale + scale // 2) for y, x in chosen]

    flat = mag.flatten()
    return pick(flat.argsort(descending=True)), pick(flat.argsort())


def _show(ax, image):
    im = image.detach().float().cpu()
    if im.shape[0] == 1:
        ax.imshow(im[0].numpy(), cmap="gray", vmin=0, vmax=1)
    else:
        ax.imshow(im.permute(1, 2, 0).clamp(0, 1).numpy())
    ax.set_xticks([])
    ax.set_yticks([])


def plot_kernels(image: Tensor, kernels: Tensor, locations, scale: int, group: int = 0,
                 titles=None):
    """For each output location, the k x k kernel drawn over the input
    neighbourhood it mixes (top row), and bilinear's fixed weights over the
    same pixels (bottom row); a first column marks the locations on the image.

    image: (3 or 1, H, W) in [0, 1], the input the kernels were predicted for
    (its pixels are the ones being reassembled); kernels: (G, k, k, s*H, s*W)
    or (1, G, k, k, s*H, s*W). Returns the matplotlib Figure.
    """
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle
    if kernels.dim() == 6:
        kernels = kernels[0]
    k = kernels.shape[1]
    r = k // 2
    fig, axes = plt.subplots(2, len(locations) + 1, figsize=(2.4 * (len(locations) + 1), 5),
                             squeeze=False)
    _show(axes[0, 0], image)
    axes[0, 0].set_title("input")
    axes[1, 0].axis("off")
    H, W = image.shape[-2:]
    padded = F.pad(image.float(), (r, r, r, r))
    for j, (p, q) in enumerate(locations):
        y, x = source_pixel(p, q, scale)
        axes[0, 0].add_patch(Rectangle((x - r - 0.5, y - r - 0.5), k, k, fill=False, lw=1.2,
                                       color=f"C{j}"))
        axes[0, 0].text(x + r + 1, y, str(j + 1), color=f"C{j}", fontsize=8, va="center")
        patch = padded[:, y:y + k, x:x + k]  # the neighbourhood, zero outside the image
        for row, weights, name in ((0, kernels[group, :, :, p, q].float().cpu(), "CARAFE"),
                                   (1, bilinear_kernel(p, q, scale, k).float(), "bilinear")):
            ax = axes[row, j + 1]
            _show(ax, patch)
            ax.imshow(weights.numpy(), cmap="magma", alpha=0.55, vmin=0, vmax=max(float(weights.max()),
                                                                        1e-6))
            for (a, b), w in zip(torch.cartesian_prod(torch.arange(k), torch.arange(k)).tolist(),
                                 weights.flatten().tolist()):
                if w >= 0.05:
                    ax.text(b, a, f"{w:.2f}", ha="center", va="center", fontsize=6,
                            color="white")
            label = titles[j] if titles else f"({p}, {q})"
            ax.set_title(f"{j + 1}: {name} {label}" if row == 0 else name, fontsize=8)
    fig.tight_layout()
    return fig


def plot_kernel_maps(image: Tensor, kernels: Tensor, scale: int, group: int = 0, step=None):
    """Three panels: the input, the kernel entropy map (low = the kernel
    concentrates on few pixels), and the centre-of-mass offsets as arrows
    (where kernels pull from) over its magnitude. Shapes as in plot_kernels.
    Returns the Figure."""
    import matplotlib.pyplot as plt
    if kernels.dim() == 6:
        kernels = kernels[0]
    kg = kernels[group].float().cpu()
    k = kg.shape[0]
    entropy = kernel_entropy(kg)
    com = kernel_center_of_mass(kg)
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.2))
    _show(axes[0], image)
    axes[0].set_title("input")
    im = axes[1].imshow(entropy.numpy(), cmap="viridis", vmin=0, vmax=math.log(k * k))
    axes[1].set_title(f"kernel entropy (nats; uniform = {math.log(k * k):.2f})")
    fig.colorbar(im, ax=axes[1], fraction=0.046)
    magnitude = com.norm(dim=0)
    im = axes[2].imshow(magnitude.numpy(), cmap="magma")
    Ho, Wo = magnitude.shape
    step = step or max(1, max(Ho, Wo) // 24)
    ys, xs = torch.meshgrid(torch.arange(0, Ho, step), torch.arange(0, Wo, step), indexing="ij")
    # angles="xy" on an image (y down): v = +dy points where the kernel pulls from
    axes[2].quiver(xs.numpy(), ys.numpy(), com[1, ::step, ::step].numpy(),
                   com[0, ::step, ::step].numpy(), color="cyan",
                   angles="xy", scale_units="xy", scale=2.0 / step)
    axes[2].set_title("kernel centre of mass (input px; arrows: direction)")
    fig.colorbar(im, ax=axes[2], fraction=0.046)
    for ax in axes[1:]:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    return fig


__all__ = ["reassembly_kernels", "kernel_entropy", "kernel_center_of_mass", "source_pixel",
           "bilinear_kernel", "bilinear_masks", "edge_and_flat_locations", "plot_kernels",
           "plot_kernel_maps"]
