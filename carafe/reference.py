"""Pure-PyTorch CARAFE and window similarity: the specifications and the
test oracles.

Nothing in the package falls back to these functions; they exist to define
the operators and to check (and benchmark) the compiled kernels against.

Semantics (Wang et al., "CARAFE: Content-Aware ReAssembly of FEatures",
ICCV 2019, arXiv 1905.02188, Eq. 2 with mmcv's indexing)::

    out[n, c, p, q] = sum_{ky, kx < k} masks[n, g*k*k + ky*k + kx, p, q]
                      * features[n, c, p // s + ky - k // 2, q // s + kx - k // 2]

with g = c // (C / G); taps that fall outside the input are skipped (their
weights are never read, so a NaN or inf weight there changes nothing, and
their gradient is zero), and the weights are not renormalised.
:func:`window_similarity_reference` specifies ``carafe.window_similarity``.
"""

import torch
import torch.nn.functional as F


def _shapes(features, masks, kernel_size, group_size, scale_factor):
    N, C, H, W = features.shape
    k, G, s = kernel_size, group_size, scale_factor
    return N, C, H, W, k, G, s, H * s, W * s


def carafe_reference(
    features: torch.Tensor,
    masks: torch.Tensor,
    kernel_size: int,
    group_size: int,
    scale_factor: int,
) -> torch.Tensor:
    """The spec: one shifted, nearest-upsampled copy of the input per tap.

    Args:
        features: (N, C, H, W).
        masks: (N, k*k*G, s*H, s*W) reassembly kernels.
    Returns:
        (N, C, s*H, s*W), in the dtype of ``features``. Differentiable by autograd.
    """
    N, C, H, W, k, G, s, Ho, Wo = _shapes(features, masks, kernel_size, group_size, scale_factor)
    r = k // 2
    padded = F.pad(features, (r, r, r, r))
    m = masks.reshape(N, G, 1, k * k, Ho, Wo)
    out = features.new_zeros(N, G, C // G, Ho, Wo)
    rows = torch.arange(Ho, device=features.device) // s
    cols = torch.arange(Wo, device=features.device) // s
    for ky in range(k):
        for kx in range(k):
            # window[n, c, i, j] = features[n, c, i + ky - r, j + kx - r] (zero outside)
            window = padded[:, :, ky : ky + H, kx : kx + W]
            up = window.repeat_interleave(s, dim=2).repeat_interleave(s, dim=3)
            # Taps outside the input are skipped, weight and all, so that a
            # non-finite weight there (0 * inf = NaN) cannot reach the output.
            y, x = rows + ky - r, cols + kx - r
            inside = ((y >= 0) & (y < H))[:, None] & ((x >= 0) & (x < W))[None, :]
            weight = torch.where(inside, m[:, :, :, ky * k + kx], 0)
            out = out + up.reshape(N, G, C // G, Ho, Wo) * weight
    return out.reshape(N, C, Ho, Wo)


def carafe_unfold(
    features: torch.Tensor,
    masks: torch.Tensor,
    kernel_size: int,
    group_size: int,
    scale_factor: int,
) -> torch.Tensor:
    """The common pure-PyTorch re-implementation (the benchmarks' baseline):
    nearest-upsample the input, gather every k x k window with a dilated
    ``F.unfold`` (a k*k-times expanded tensor), weight and sum.

    Same arguments, shapes and result as :func:`carafe_reference` for finite
    weights (taps outside the input are multiplied by zero padding here, so a
    non-finite weight there gives NaN).
    """
    N, C, H, W, k, G, s, Ho, Wo = _shapes(features, masks, kernel_size, group_size, scale_factor)
    up = F.interpolate(features, scale_factor=s, mode="nearest")
    # Dilation s on the upsampled map reads features[p//s + ky - r] for tap ky.
    cols = F.unfold(up, kernel_size=k, dilation=s, padding=(k // 2) * s)
    cols = cols.view(N, G, C // G, k * k, Ho, Wo)
    return (cols * masks.view(N, G, 1, k * k, Ho, Wo)).sum(dim=3).view(N, C, Ho, Wo)


def _inside_taps(H: int, W: int, k: int, s: int, device) -> torch.Tensor:
    """(k*k, s*H, s*W) bool: whether tap (ky, kx) of output pixel (p, q)
    reads inside the (H, W) input."""
    r = k // 2
    taps = torch.arange(k, device=device) - r
    y = (torch.arange(H * s, device=device) // s)[None, :] + taps[:, None]  # (k, s*H)
    x = (torch.arange(W * s, device=device) // s)[None, :] + taps[:, None]  # (k, s*W)
    in_y, in_x = (y >= 0) & (y < H), (x >= 0) & (x < W)
    return (in_y[:, None, :, None] & in_x[None, :, None, :]).reshape(k * k, H * s, W * s)


def window_similarity_reference(
    query: torch.Tensor,
    key: torch.Tensor,
    kernel_size: int,
    group_size: int,
    scale_factor: int,
) -> torch.Tensor:
    """The spec of :func:`carafe.window_similarity`: each query pixel's dot
    products, per channel group, with the k x k key window CARAFE reads::

        sim[n, g*k*k + ky*k + kx, p, q] = sum_{c in group g} query[n, c, p, q]
                                          * key[n, c, p // s + ky - k // 2, q // s + kx - k // 2]

    Taps outside the key are 0 (whatever the query holds). Every window is
    gathered with a dilated ``F.unfold`` of the nearest-upsampled key (a
    k*k-times expanded tensor), as :func:`carafe_unfold` does.

    Args:
        query: (N, C, s*H, s*W).
        key: (N, C, H, W).
    Returns:
        (N, G*k*k, s*H, s*W), CARAFE's masks layout, in the dtype of ``key``.
        Differentiable by autograd.
    """
    N, C, H, W = key.shape
    k, G, s = kernel_size, group_size, scale_factor
    Ho, Wo = H * s, W * s
    up = key.repeat_interleave(s, dim=2).repeat_interleave(s, dim=3)
    # Dilation s on the upsampled map reads key[p//s + ky - r] for tap ky.
    cols = F.unfold(up, kernel_size=k, dilation=s, padding=(k // 2) * s)
    cols = cols.view(N, G, C // G, k * k, Ho, Wo)
    sim = (cols * query.reshape(N, G, C // G, 1, Ho, Wo)).sum(dim=2)
    # zero padding times a non-finite query would be NaN: outside taps are 0
    sim = torch.where(_inside_taps(H, W, k, s, key.device), sim, 0)
    return sim.reshape(N, G * k * k, Ho, Wo)


def random_inputs(
    N,
    C,
    H,
    W,
    kernel_size=5,
    group_size=1,
    scale_factor=2,
    dtype=torch.float32,
    device="cpu",
    normalized=True,
    seed=0,
    requires_grad=False,
    with_grad_output=False,
):
    """Reproducible test and benchmark inputs, drawn in float64 on the CPU from
    one seeded generator (the same values on every device and dtype):
    features (N, C, H, W) ~ N(0, 1); masks (N, k*k*G, s*H, s*W), softmax-
    normalised over each k*k kernel as CARAFEPack makes them (normalized=True)
    or raw N(0, 1); with with_grad_output also an output gradient
    (N, C, s*H, s*W) ~ N(0, 1). Returns (features, masks[, grad_output])."""
    k, G, s = kernel_size, group_size, scale_factor
    g = torch.Generator().manual_seed(seed)
    f = torch.randn(N, C, H, W, generator=g, dtype=torch.float64)
    m = torch.randn(N, G, k * k, H * s, W * s, generator=g, dtype=torch.float64)
    if normalized:
        m = m.softmax(dim=2)
    out = [f, m.reshape(N, G * k * k, H * s, W * s)]
    if with_grad_output:
        out.append(torch.randn(N, C, H * s, W * s, generator=g, dtype=torch.float64))
    out = [t.to(device=device, dtype=dtype) for t in out]
    for t in out[:2]:
        t.requires_grad_(requires_grad)
    return tuple(out)


def misaligned_copy(t: torch.Tensor) -> torch.Tensor:
    """The values of `t` in a contiguous tensor that starts one element into
    its storage, so that its data pointer is not aligned to two elements.
    Kernels that read neighbouring elements as one wide access must notice
    and take their one-element path (a test input; same shape, dtype, device)."""
    storage = torch.empty(t.numel() + 1, dtype=t.dtype, device=t.device)
    view = storage[1:].view(t.shape)
    view.copy_(t)
    return view
