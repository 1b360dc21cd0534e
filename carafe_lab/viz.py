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


def nearest_masks(height: int, width: int, scale: int, k: int = 3) -> Tensor:
    """Masks (1, k*k, s*height, s*width) with which the CARAFE op reproduces
    nearest-neighbour upsampling: all weight on the centre tap (the source
    pixel p // s itself)."""
    m = torch.zeros(1, k * k, height * scale, width * scale)
    m[:, (k * k) // 2] = 1
    return m


#: How a feature map's pixel i at stride t sits on the image: "centre" -
#: centred on image pixel t*i (conv nets with "same" padding, strided convs
#: and pools: ResNet, the seg task's encoder; mmdet's anchors use it too);
#: "block" - covering image pixels [t*i, t*i + t) (average pooling,
#: F.interpolate's align_corners=False).
ALIGNMENTS = ("centre", "block")


def segment_fractions(
    labels: Tensor, stride: int, num_segments: int = None, alignment: str = "centre"
) -> Tensor:
    """Share of each feature pixel's t x t footprint (t = stride, placed as
    ``alignment`` says) that each segment covers: labels (N, H*t, W*t) int ->
    (N, S, H, W) float summing to one over S (S = num_segments, default
    labels.max() + 1); the image border is extended outwards."""
    if labels.dim() != 3:
        raise ValueError(f"labels: expected (N, H, W), got shape {tuple(labels.shape)}")
    if labels.shape[-2] % stride or labels.shape[-1] % stride:
        raise ValueError(
            f"labels: height and width must be divisible by stride={stride}, "
            f"got {tuple(labels.shape[-2:])}"
        )
    if alignment not in ALIGNMENTS:
        raise ValueError(f"alignment: expected one of {ALIGNMENTS}, got {alignment!r}")
    S = int(labels.max()) + 1 if num_segments is None else num_segments
    one_hot = F.one_hot(labels.long(), S).permute(0, 3, 1, 2).float()
    if stride == 1:
        return one_hot
    if alignment == "centre":
        Hi, Wi = one_hot.shape[-2:]
        h = stride // 2
        one_hot = F.pad(one_hot, (h, 0, h, 0), mode="replicate")[..., :Hi, :Wi]
    return F.avg_pool2d(one_hot, stride)


def same_segment_mass(
    kernels: Tensor, labels: Tensor, scale: int, alignment: str = "centre"
) -> Tensor:
    """Content-awareness with ground truth: for every output pixel, the share
    of its kernel's weight drawn from source pixels of its own segment.

    kernels: (N, G, k, k, s*H, s*W) (from :func:`reassembly_kernels`, or a
    fixed interpolation's masks viewed that way); labels: (N, s*H*t, s*W*t)
    integer segment ids at the image resolution, where t >= 1 is the output
    grid's stride in image pixels (the image size must be a multiple of the
    output size). The output pixel's segment is the majority label of its
    t x t footprint; a source pixel (a footprint of s*t image pixels a side)
    counts with the share of its footprint in that segment, so pixels
    straddling a boundary give partial credit. Footprints are placed as
    ``alignment`` says (see ALIGNMENTS): it must match the network's
    geometry, or a kernel that follows the geometry (a half-pixel shift)
    scores as if it ignored the content. Taps outside the input read zero padding
    and count as another segment. Kernels are normalised to sum to one first
    (see :func:`kernel_entropy`). Returns (N, G, s*H, s*W) in [0, 1]."""
    if kernels.dim() != 6:
        raise ValueError(
            f"kernels: expected (N, G, k, k, Ho, Wo), got shape {tuple(kernels.shape)}"
        )
    N, G, k, _, Ho, Wo = kernels.shape
    if Ho % scale or Wo % scale:
        raise ValueError(f"kernels: output size {Ho}x{Wo} is not a multiple of scale={scale}")
    if (
        labels.dim() != 3
        or labels.shape[0] != N
        or labels.shape[-2] % Ho
        or labels.shape[-1] % Wo
        or labels.shape[-2] // Ho != labels.shape[-1] // Wo
    ):
        raise ValueError(
            f"labels: expected ({N}, t*{Ho}, t*{Wo}) for an integer t >= 1, "
            f"got shape {tuple(labels.shape)}"
        )
    same = tap_same_fractions(labels, k, (Ho, Wo), scale, alignment)  # (N, k*k, Ho, Wo)
    p = _probabilities(kernels.float().reshape(N, G, k, k, Ho, Wo)).reshape(N, G, k * k, Ho, Wo)
    return (p * same[:, None].to(p.device)).sum(2)


def tap_same_fractions(
    labels: Tensor, k: int, out_size, scale: int, alignment: str = "centre"
) -> Tensor:
    """For every output pixel of an (Ho, Wo) grid and every tap of its k x k
    window, the share of the tap's source pixel in the output pixel's own
    segment (see :func:`same_segment_mass`): labels (N, t*Ho, t*Wo) ->
    (N, k*k, Ho, Wo); taps in the zero padding get 0."""
    Ho, Wo = out_size
    N = labels.shape[0]
    t = labels.shape[-2] // Ho
    S = int(labels.max()) + 1
    own = segment_fractions(labels, t, S, alignment).argmax(1)  # (N, Ho, Wo)
    frac = segment_fractions(labels, t * scale, S, alignment)  # (N, S, H, W)
    H, W = Ho // scale, Wo // scale
    # fraction of each tap's source pixel in each segment: (N, S, k*k, H, W)
    taps = F.unfold(frac, k, padding=k // 2).view(N, S, k * k, H, W)
    taps = taps.repeat_interleave(scale, -2).repeat_interleave(scale, -1)  # (N, S, k*k, Ho, Wo)
    return taps.gather(1, own[:, None, None].expand(N, 1, k * k, Ho, Wo))[:, 0]


def boundary_band(labels: Tensor, out_size, width: int = 1, alignment: str = "centre") -> Tensor:
    """Output pixels within ``width`` output pixels of a segment boundary:
    labels (N, Hi, Wi) -> bool (N, Ho, Wo), out_size = (Ho, Wo) dividing
    (Hi, Wi). A pixel is on a boundary when its t x t block is not all one
    segment or a 4-neighbour's majority segment differs from its own."""
    Ho, Wo = out_size
    t = labels.shape[-2] // Ho
    frac = segment_fractions(labels, t, alignment=alignment)
    own = frac.argmax(1)
    mixed = frac.max(1).values < 1
    edge = torch.zeros_like(mixed)
    edge[:, 1:] |= own[:, 1:] != own[:, :-1]
    edge[:, :-1] |= own[:, 1:] != own[:, :-1]
    edge[:, :, 1:] |= own[:, :, 1:] != own[:, :, :-1]
    edge[:, :, :-1] |= own[:, :, 1:] != own[:, :, :-1]
    band = (mixed | edge).float()[:, None]
    if width > 0:
        band = F.max_pool2d(band, 2 * width + 1, 1, width)
    return band[:, 0] > 0


def content_awareness(
    kernels: Tensor,
    labels: Tensor,
    scale: int,
    width: int = 1,
    margin: int = None,
    alignment: str = "centre",
) -> dict:
    """Same-segment mass (:func:`same_segment_mass`) averaged over the output
    pixels in the boundary band (:func:`boundary_band`) and over the rest
    (interior), leaving out ``margin`` output pixels at the image border
    (default s * (k // 2): windows there reach into the zero padding).
    Returns {"boundary", "interior", "n_boundary", "n_interior"}; the means
    are over all groups and images."""
    N, G, k, _, Ho, Wo = kernels.shape
    margin = scale * (k // 2) if margin is None else margin
    mass = same_segment_mass(kernels, labels, scale, alignment)  # (N, G, Ho, Wo)
    band = boundary_band(labels, (Ho, Wo), width, alignment).to(mass.device)
    valid = torch.zeros_like(band)
    valid[:, margin : Ho - margin, margin : Wo - margin] = True
    out = {}
    for name, where in (("boundary", band & valid), ("interior", ~band & valid)):
        n = int(where.sum())
        out[name] = float(mass[where[:, None].expand_as(mass)].mean()) if n else float("nan")
        out[f"n_{name}"] = n
    return out


def fixed_kernels(name: str, batch: int, height: int, width: int, scale: int, k: int = 5) -> Tensor:
    """The equivalent kernels of a fixed interpolation ("nearest" or
    "bilinear") over CARAFE's k x k window: (batch, 1, k, k, s*H, s*W)."""
    makers = {"nearest": nearest_masks, "bilinear": bilinear_masks}
    if name not in makers:
        raise ValueError(f"name: expected one of {sorted(makers)}, got {name!r}")
    m = makers[name](height, width, scale, k)
    return m.view(1, 1, k, k, height * scale, width * scale).expand(batch, -1, -1, -1, -1, -1)


def content_awareness_vs_fixed(
    kernels: Tensor, labels: Tensor, scale: int, width: int = 1, alignment: str = "centre"
) -> dict:
    """:func:`content_awareness` of learned kernels (N, G, k, k, s*H, s*W) and
    of nearest's and bilinear's equivalent kernels on the same grid:
    {"carafe" | "bilinear" | "nearest": {...}}."""
    N, _, k, _, Ho, Wo = kernels.shape
    kinds = {
        "carafe": kernels.cpu(),
        "bilinear": fixed_kernels("bilinear", N, Ho // scale, Wo // scale, scale, k),
        "nearest": fixed_kernels("nearest", N, Ho // scale, Wo // scale, scale, k),
    }
    return {
        name: content_awareness(kern, labels, scale, width=width, alignment=alignment)
        for name, kern in kinds.items()
    }


# --- content-agnostic controls ----------------------------------------------
# A kernel can score a low same-segment mass because it adapts to the content
# or merely because it is wide; the controls below share the learned kernels'
# support (and, for the phase mean and the permutations, their geometry) but
# not their dependence on the content.


def phase_mean_kernels(kernels: Tensor, scale: int) -> Tensor:
    """Each kernel replaced by the mean of the kernels of its sub-pixel phase
    (p % s, q % s) and group over all images and pixels: the content-agnostic
    twin with the same support and any geometric offset the kernels learned.
    (N, G, k, k, s*H, s*W) -> the same shape."""
    N, G, k, _, Ho, Wo = kernels.shape
    v = kernels.reshape(N, G, k, k, Ho // scale, scale, Wo // scale, scale)
    mean = v.mean(dim=(0, 4, 6), keepdim=True)
    return mean.expand_as(v).reshape(N, G, k, k, Ho, Wo)


def permuted_kernels(kernels: Tensor, scale: int, generator: torch.Generator) -> Tensor:
    """The learned kernels shuffled among the pixels (of all images) of the
    same sub-pixel phase and group: the same set of kernels, each at a pixel
    whose content did not produce it. (N, G, k, k, s*H, s*W) -> the same."""
    N, G, k, _, Ho, Wo = kernels.shape
    H, W = Ho // scale, Wo // scale
    # (phase row, phase column, G, N*H*W, k, k)
    v = kernels.reshape(N, G, k, k, H, scale, W, scale).permute(5, 7, 1, 0, 4, 6, 2, 3)
    v = v.reshape(scale, scale, G, N * H * W, k, k)
    out = torch.empty_like(v)
    for a in range(scale):
        for b in range(scale):
            for g in range(G):
                out[a, b, g] = v[a, b, g][torch.randperm(N * H * W, generator=generator)]
    out = out.reshape(scale, scale, G, N, H, W, k, k).permute(3, 2, 6, 7, 4, 0, 5, 1)
    return out.reshape(N, G, k, k, Ho, Wo)


def gaussian_kernel(k: int, sigma: float) -> Tensor:
    """An isotropic Gaussian over the k x k taps, centred on the source pixel,
    summing to one: (k, k) float64."""
    o = torch.arange(k, dtype=torch.float64) - k // 2
    w = torch.exp(-(o[:, None] ** 2 + o[None, :] ** 2) / (2 * sigma**2))
    return w / w.sum()


def entropy_matched_sigma(k: int, entropy: float) -> float:
    """The sigma whose :func:`gaussian_kernel` has the given entropy (nats),
    by bisection (entropy grows with sigma, from 0 towards log(k*k)); inf
    when entropy reaches that of the uniform kernel."""
    if not math.isfinite(entropy) or entropy < 0:
        raise ValueError(f"entropy: expected a finite value >= 0, got {entropy}")

    def h(sigma):
        w = gaussian_kernel(k, sigma)
        return float(-(w * w.clamp_min(1e-300).log()).sum())

    if entropy >= h(1e6) - 1e-9:
        return math.inf
    lo, hi = 1e-3, 1e6
    for _ in range(200):
        mid = math.sqrt(lo * hi)
        lo, hi = (mid, hi) if h(mid) < entropy else (lo, mid)
    return math.sqrt(lo * hi)


def weight_by_distance(phase_kernels) -> dict:
    """How far from the source pixel per-phase kernels (G, k*k, s, s) (as
    :func:`kernel_report`'s "phase_mean_kernels") put their weight: {d:
    share} for the Chebyshev distance d = max(|dy|, |dx|) of a tap from the
    source pixel, averaged over groups and phases. A kernel that follows a
    network's sub-pixel geometry needs d <= 1 (a sample point is at most
    half an input pixel from its source pixel)."""
    w = torch.as_tensor(phase_kernels, dtype=torch.float64)
    G, kk, s, _ = w.shape
    k = int(round(kk**0.5))
    o = torch.arange(k) - k // 2
    d = torch.maximum(o.abs()[:, None], o.abs()[None, :]).flatten()
    per = w.permute(1, 0, 2, 3).reshape(kk, -1)
    per = per / per.sum(0, keepdim=True)
    return {int(dist): float(per[d == dist].sum(0).mean()) for dist in range(k // 2 + 1)}


def constant_kernels(kernel: Tensor, like: Tensor) -> Tensor:
    """One (k, k) kernel at every pixel of like's (N, G, k, k, Ho, Wo) grid."""
    N, G, k, _, Ho, Wo = like.shape
    return kernel.to(like.dtype).view(1, 1, k, k, 1, 1).expand(N, G, k, k, Ho, Wo)


def _valid_mask(shape, scale, k, margin=None):
    N, Ho, Wo = shape
    margin = scale * (k // 2) if margin is None else margin
    valid = torch.zeros(N, Ho, Wo, dtype=torch.bool)
    valid[:, margin : Ho - margin, margin : Wo - margin] = True
    return valid


def direction_cosines(
    kernels: Tensor,
    twin: Tensor,
    labels: Tensor,
    scale: int,
    where: Tensor,
    alignment: str = "centre",
    min_norm: float = 0.05,
) -> dict:
    """Whether kernels pull towards their pixel's own segment. For every
    output pixel in ``where`` (N, Ho, Wo), d is the direction into the own
    segment within the window (the own-segment share of each tap times its
    offset, summed); the cosines of d with the kernel's centre-of-mass
    offset ("learned"), the twin's ("twin") and their difference ("shift",
    the part of the offset the content decided), averaged over the pixels
    where both vectors are longer than min_norm input pixels, with n the
    number of such pixels for "shift". (N, G, k, k, Ho, Wo) kernels."""
    N, G, k, _, Ho, Wo = kernels.shape
    same = tap_same_fractions(labels, k, (Ho, Wo), scale, alignment).double()
    o = torch.arange(k, dtype=torch.float64) - k // 2
    dy = (same.view(N, k, k, Ho, Wo) * o.view(1, k, 1, 1, 1)).sum((1, 2))
    dx = (same.view(N, k, k, Ho, Wo) * o.view(1, 1, k, 1, 1)).sum((1, 2))
    d = torch.stack([dy, dx], 1)[:, None]  # (N, 1, 2, Ho, Wo)
    com = kernel_center_of_mass(kernels.double().cpu())  # (N, G, 2, Ho, Wo)
    com_twin = kernel_center_of_mass(twin.double().cpu())
    out = {}
    for name, v in (("learned", com), ("twin", com_twin), ("shift", com - com_twin)):
        norm_v, norm_d = v.norm(dim=2), d.norm(dim=2)
        ok = where[:, None] & (norm_v > min_norm) & (norm_d > min_norm)
        cos = (v * d).sum(2) / (norm_v * norm_d).clamp_min(1e-12)
        out[name] = float(cos[ok].mean()) if ok.any() else float("nan")
        out[f"n_{name}"] = int(ok.sum())
    return out


def kernel_report(
    kernels: Tensor,
    labels: Tensor,
    scale: int,
    width: int = 1,
    alignment: str = "centre",
    permutations: int = 3,
    seed: int = 0,
) -> dict:
    """The learned kernels (N, G, k, k, s*H, s*W) of one upsampling step
    scored against their controls on images with segments labels
    (N, t*s*H, t*s*W). Returns:

    - "masses": {kind: :func:`content_awareness`'s dict} for kind in
      "carafe" (the learned kernels), "phase_mean" (:func:`phase_mean_kernels`),
      "permuted" (the mean over ``permutations`` :func:`permuted_kernels`),
      "uniform", "gaussian" (entropy-matched to the learned kernels' mean
      entropy), "bilinear", "nearest";
    - "ca": boundary mass of the learned kernels minus that of their phase
      mean, over the same boundary pixels (the content-awareness score);
    - "ca_permuted": the same against the permuted kernels;
    - "direction": :func:`direction_cosines` on the boundary pixels, twin =
      phase mean;
    - "entropy": mean entropy (nats) of the learned kernels inside the
      border margin; "one_hot_share": the share of them whose largest weight
      exceeds 0.9; "gaussian_sigma" (None: the uniform kernel);
      "phase_mean_kernels": (G, k*k, s, s) as nested lists; "centre_share":
      the phase-mean kernels' mean weight on the source tap."""
    kernels = kernels.detach().float().cpu()
    N, G, k, _, Ho, Wo = kernels.shape
    valid = _valid_mask((N, Ho, Wo), scale, k)
    if not valid.any():
        raise ValueError(
            f"kernels: an output grid of {Ho}x{Wo} leaves no pixel inside the "
            f"border margin of {scale * (k // 2)} (windows reaching the padding)"
        )
    probs = _probabilities(kernels)
    entropy = float(kernel_entropy(kernels).permute(1, 0, 2, 3)[:, valid].mean())
    one_hot = float((probs.amax(dim=(2, 3)).permute(1, 0, 2, 3)[:, valid] > 0.9).double().mean())
    sigma = entropy_matched_sigma(k, entropy)
    uniform = torch.full((k, k), 1.0 / (k * k), dtype=torch.float64)
    twin = phase_mean_kernels(probs, scale)
    gen = torch.Generator().manual_seed(seed)
    kinds = {
        "carafe": probs,
        "phase_mean": twin,
        "uniform": constant_kernels(uniform, probs),
        "gaussian": constant_kernels(
            uniform if math.isinf(sigma) else gaussian_kernel(k, sigma), probs
        ),
        "bilinear": fixed_kernels("bilinear", N, Ho // scale, Wo // scale, scale, k),
        "nearest": fixed_kernels("nearest", N, Ho // scale, Wo // scale, scale, k),
    }
    masses = {
        name: content_awareness(kern, labels, scale, width=width, alignment=alignment)
        for name, kern in kinds.items()
    }
    perms = [
        content_awareness(
            permuted_kernels(probs, scale, gen), labels, scale, width=width, alignment=alignment
        )
        for _ in range(permutations)
    ]
    masses["permuted"] = {
        part: sum(p[part] for p in perms) / len(perms) for part in ("boundary", "interior")
    }
    masses["permuted"].update(
        {f"n_{part}": perms[0][f"n_{part}"] for part in ("boundary", "interior")}
    )
    band = boundary_band(labels, (Ho, Wo), width, alignment) & valid
    k2 = k * k
    centre = twin.reshape(N, G, k2, Ho, Wo)[0, :, k2 // 2].reshape(
        G, Ho // scale, scale, Wo // scale, scale
    )
    return {
        "masses": masses,
        "ca": masses["carafe"]["boundary"] - masses["phase_mean"]["boundary"],
        "ca_permuted": masses["carafe"]["boundary"] - masses["permuted"]["boundary"],
        "direction": direction_cosines(probs, twin, labels, scale, band, alignment),
        "entropy": entropy,
        "one_hot_share": one_hot,
        "gaussian_sigma": None if math.isinf(sigma) else sigma,
        "centre_share": float(centre.mean()),
        "phase_mean_kernels": twin[0, :, :, :, :scale, :scale]
        .reshape(G, k2, scale, scale)
        .tolist(),
    }


def aggregate_scores(runs) -> dict:
    """Mean, sample std and n over runs (seeds) of score dicts shaped
    {level: {kind: {"boundary": x, "interior": y, ...}}} (as
    :func:`carafe_lab.ablations.seg.kernel_scores` and the detection runs'
    kernel_scores.json give them): {level: {kind: {"boundary_mean",
    "boundary_std", "interior_mean", "interior_std", "n"}}}. Levels with a
    non-finite score in any run are left out."""
    import statistics

    runs = list(runs)
    if not runs:
        raise ValueError("runs: expected at least one run's scores, got none")

    def finite(level):  # a grid too small to score has NaN means (older runs wrote them)
        return all(
            math.isfinite(r[level][kind][part])
            for r in runs
            if level in r
            for kind in r[level]
            for part in ("boundary", "interior")
        )

    out = {}
    for level in [lv for lv in runs[0] if finite(lv)]:
        for kind in runs[0][level]:
            row = {}
            for part in ("boundary", "interior"):
                values = [r[level][kind][part] for r in runs if level in r and kind in r[level]]
                row[f"{part}_mean"] = statistics.mean(values)
                row[f"{part}_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
                row["n"] = len(values)
            out.setdefault(level, {})[kind] = row
    return out


def scores_markdown(aggregated: dict) -> str:
    """A markdown table of :func:`aggregate_scores`' output."""
    lines = [
        "| step | kernels | same-segment mass, boundary | interior | seeds |",
        "|---|---|---:|---:|---:|",
    ]
    for level, kinds in aggregated.items():
        for kind, r in kinds.items():
            lines.append(
                f"| {level} | {kind} | {r['boundary_mean']:.3f} ± {r['boundary_std']:.3f} "
                f"| {r['interior_mean']:.3f} ± {r['interior_std']:.3f} | {r['n']} |"
            )
    return "\n".join(lines) + "\n"


def difference(
    aggregated: dict, level: str, a: str = "carafe", b: str = "bilinear", part: str = "boundary"
):
    """(mean_a - mean_b, p, verdict) at a level of :func:`aggregate_scores`'
    output: p is Welch's two-sided t-test over the seeds
    (:func:`carafe_lab.stats.welch_p`; a fixed kernel's score, with no spread,
    counts as a constant); verdict is "higher" or "lower" when p < 0.05,
    "indistinguishable" when not, "one run" when a has a single run (p NaN)."""
    from .stats import ALPHA, welch_p

    ra, rb = aggregated[level][a], aggregated[level][b]
    diff = ra[f"{part}_mean"] - rb[f"{part}_mean"]
    if ra["n"] < 2:
        return diff, float("nan"), "one run"
    p = welch_p(*[(r[f"{part}_mean"], r[f"{part}_std"], r["n"]) for r in (ra, rb)])
    if p < ALPHA:
        return diff, p, "higher" if diff > 0 else "lower"
    return diff, p, "indistinguishable"


def compare(
    aggregated: dict, level: str, a: str = "carafe", b: str = "bilinear", part: str = "boundary"
) -> str:
    """One sentence comparing kernels a and b at a level, computed from the
    numbers (see :func:`difference`)."""
    ra, rb = aggregated[level][a], aggregated[level][b]
    diff, p, verdict = difference(aggregated, level, a, b, part)
    words = {
        "higher": "higher than",
        "lower": "lower than",
        "indistinguishable": "not distinguishable from",
        "one run": "(one run: no spread to judge by) beside",
    }[verdict]
    test = "" if verdict == "one run" else f", Welch's t-test over the seeds p = {p:.2g}"
    return (
        f"{level}: {a}'s {part} same-segment mass {ra[f'{part}_mean']:.3f} ± "
        f"{ra[f'{part}_std']:.3f} (n={ra['n']}) is {words} {b}'s "
        f"{rb[f'{part}_mean']:.3f} (difference {diff:+.3f}{test})"
    )


def edge_and_flat_locations(image: Tensor, scale: int, n: int = 2, margin: int = 4):
    """Output locations (p, q) on the strongest edges and in the flattest
    regions of image (3 or 1, H, W): (edges, flats), n of each, at least
    ``margin`` input pixels apart from each other and the border."""
    gray = image.float().mean(0, keepdim=True)[None]
    gy = gray[..., 1:, :-1] - gray[..., :-1, :-1]
    gx = gray[..., :-1, 1:] - gray[..., :-1, :-1]
    mag = (gy**2 + gx**2).sqrt()[0, 0]
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


def plot_kernels(
    image: Tensor,
    kernels: Tensor,
    locations,
    scale: int,
    group: int = 0,
    titles=None,
    reference=None,
    reference_name="bilinear",
):
    """For each output location, the k x k kernel drawn over the input
    neighbourhood it mixes (top row), and a reference's weights over the
    same pixels (bottom row): bilinear's fixed weights, or the kernels
    ``reference`` (same shape as kernels, e.g. the learned kernels' phase
    mean), named reference_name; a first column marks the locations on the
    image.

    image: (3 or 1, H, W) in [0, 1], the input the kernels were predicted for
    (its pixels are the ones being reassembled); kernels: (G, k, k, s*H, s*W)
    or (1, G, k, k, s*H, s*W). Returns the matplotlib Figure.
    """
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    if kernels.dim() == 6:
        kernels = kernels[0]
    if reference is not None and reference.dim() == 6:
        reference = reference[0]
    k = kernels.shape[1]
    r = k // 2
    fig, axes = plt.subplots(
        2, len(locations) + 1, figsize=(2.4 * (len(locations) + 1), 5), squeeze=False
    )
    _show(axes[0, 0], image)
    axes[0, 0].set_title("input")
    axes[1, 0].axis("off")
    H, W = image.shape[-2:]
    padded = F.pad(image.float(), (r, r, r, r))
    for j, (p, q) in enumerate(locations):
        y, x = source_pixel(p, q, scale)
        axes[0, 0].add_patch(
            Rectangle((x - r - 0.5, y - r - 0.5), k, k, fill=False, lw=1.2, color=f"C{j}")
        )
        axes[0, 0].text(x + r + 1, y, str(j + 1), color=f"C{j}", fontsize=8, va="center")
        patch = padded[:, y : y + k, x : x + k]  # the neighbourhood, zero outside the image
        ref = (
            bilinear_kernel(p, q, scale, k)
            if reference is None
            else reference[group, :, :, p, q].cpu()
        ).float()
        for row, weights, name in (
            (0, kernels[group, :, :, p, q].float().cpu(), "CARAFE"),
            (1, ref, reference_name),
        ):
            ax = axes[row, j + 1]
            _show(ax, patch)
            ax.imshow(
                weights.numpy(),
                cmap="magma",
                alpha=0.55,
                vmin=0,
                vmax=max(float(weights.max()), 1e-6),
            )
            for (a, b), w in zip(
                torch.cartesian_prod(torch.arange(k), torch.arange(k)).tolist(),
                weights.flatten().tolist(),
            ):
                if w >= 0.05:
                    ax.text(b, a, f"{w:.2f}", ha="center", va="center", fontsize=6, color="white")
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
    axes[2].quiver(
        xs.numpy(),
        ys.numpy(),
        com[1, ::step, ::step].numpy(),
        com[0, ::step, ::step].numpy(),
        color="cyan",
        angles="xy",
        scale_units="xy",
        scale=2.0 / step,
    )
    axes[2].set_title("kernel centre of mass (input px; arrows: direction)")
    fig.colorbar(im, ax=axes[2], fraction=0.046)
    for ax in axes[1:]:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    return fig


def plot_mass_maps(image: Tensor, labels: Tensor, maps: dict, title: str = ""):
    """The image (3, H, W), its segments (H, W) and, for each named map
    (Ho, Wo) in maps, the same-segment mass per output pixel (1: all of the
    kernel's weight from the pixel's own segment). Returns the Figure."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2 + len(maps), figsize=(3.1 * (2 + len(maps)), 3.3))
    _show(axes[0], image)
    axes[0].set_title("image")
    axes[1].imshow(labels.cpu().numpy(), cmap="tab10", interpolation="nearest")
    axes[1].set_title("segments (ground truth)")
    axes[1].set_xticks([])
    axes[1].set_yticks([])
    for ax, (name, m) in zip(axes[2:], maps.items()):
        im = ax.imshow(m.cpu().numpy(), cmap="viridis", vmin=0, vmax=1, interpolation="nearest")
        ax.set_title(f"{name}: same-segment mass", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(im, ax=axes[-1], fraction=0.046, label="share of kernel weight")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


__all__ = [
    "reassembly_kernels",
    "kernel_entropy",
    "kernel_center_of_mass",
    "source_pixel",
    "bilinear_kernel",
    "bilinear_masks",
    "nearest_masks",
    "segment_fractions",
    "same_segment_mass",
    "boundary_band",
    "content_awareness",
    "fixed_kernels",
    "content_awareness_vs_fixed",
    "tap_same_fractions",
    "phase_mean_kernels",
    "permuted_kernels",
    "gaussian_kernel",
    "entropy_matched_sigma",
    "constant_kernels",
    "direction_cosines",
    "kernel_report",
    "weight_by_distance",
    "aggregate_scores",
    "scores_markdown",
    "difference",
    "compare",
    "plot_mass_maps",
    "edge_and_flat_locations",
    "plot_kernels",
    "plot_kernel_maps",
]
