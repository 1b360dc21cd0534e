"""Which loop the CUDA kernels' warps take, predicted from the shape alone.

Each window kernel (csrc/cuda/forward_kernels.cuh, backward_kernels.cuh)
lets a warp run its loop without bounds tests when, by a vote (warp_all:
__all_sync over the lanes still in the grid-stride loop), every lane's
window lies inside the input.
A warp is 32 consecutive work items (idx) of one iteration of the
grid-stride loop: blocks are 256 threads and the grid stride is a whole
number of blocks, so the split into warps, and hence the votes, do not
depend on the grid size. This module repeats the kernels' decomposition of
idx in Python and counts the votes each way: the emulation tests compare it
with the votes the emulated kernels cast (tests/cuda_emulation/), and the
GPU tests use it to show that their shapes reach the interior loops.
"""

import numpy as np

WARP = 32
CHANNELS_PER_THREAD = 16  # kChannelsPerThread, the forward's channel chunk
GRAD_FEATURE_CHANNELS = 8  # kGradFeatureChannels
UNROLLED = (1, 3, 5, 7)  # kernel sizes with unrolled taps (dispatch_kernel_size)


def _inside(coord, lo, hi):
    return (coord >= lo) & (coord < hi)


def _votes(interior, voting=None):
    """(interior, checked) warp votes for lanes in idx order: a warp takes the
    interior loop when all its voting lanes vote for it. Lanes that do not
    reach the vote (voting False: a branch around it; past the end of the
    work: they have left the loop) do not count, and a warp none of whose
    lanes reach it does not vote."""
    voting = np.ones_like(interior) if voting is None else voting
    pad = (-interior.size) % WARP
    lanes = np.concatenate([interior | ~voting, np.ones(pad, bool)]).reshape(-1, WARP)
    voters = np.concatenate([voting, np.zeros(pad, bool)]).reshape(-1, WARP).any(1)
    taken = int((lanes.all(1) & voters).sum())
    return taken, int(voters.sum()) - taken


def _split(idx, *sizes):
    """idx -> its digits, fastest first, in the mixed radix `sizes` (the last
    digit unbounded)."""
    digits = []
    for size in sizes:
        digits.append(idx % size)
        idx = idx // size
    return digits + [idx]


def forward_variant(k, s, aligned=True):
    """launch_forward's choice: 'generic' (no vote), or the window kernel's
    S: 2 (output pairs: s = 2, k <= 5, aligned pointers) or 0."""
    if k not in UNROLLED:
        return "generic"
    return 2 if (s == 2 and k <= 5 and aligned) else 0


def grad_masks_variant(k, s, aligned=True):
    if k not in UNROLLED:
        return "generic"
    return 2 if (s == 2 and aligned) else 0


def warp_votes(N, C, H, W, k, G, s, aligned=True):
    """{kernel: (interior, checked)} for the launches of one forward and one
    backward, in launch order: forward, grad_masks, grad_features. Kernels
    without a vote (the generic ones) are (0, 0)."""
    R = k // 2
    cpg, Ho, Wo = C // G, H * s, W * s
    out = {}

    S = forward_variant(k, s, aligned)
    if S == "generic":
        out["forward"] = (0, 0)
    else:
        chunks = -(-cpg // CHANNELS_PER_THREAD)
        cols = W if S else Wo
        col, p, _chunk, _g, _n = _split(np.arange(N * G * chunks * Ho * cols), cols, Ho, chunks, G)
        ci, cj = p // s, (col if S else col // s)
        out["forward"] = _votes(_inside(ci, R, H - R) & _inside(cj, R, W - R))

    S = grad_masks_variant(k, s, aligned)
    if S == "generic":
        out["grad_masks"] = (0, 0)
    else:
        cols = W if S else Wo
        # a row of taps per thread, the k tap rows of an output row side by side
        col, ky, p, _g, _n = _split(np.arange(N * G * Ho * k * cols), cols, k, Ho, G)
        ci, cj = p // s, (col if S else col // s)
        # a lane whose row of taps is outside skips the vote (and both loops)
        out["grad_masks"] = _votes(_inside(cj, R, W - R), voting=_inside(ci - R + ky, 0, H))

    chunks = -(-cpg // GRAD_FEATURE_CHANNELS)
    yx, _chunk, _g, _n = _split(np.arange(N * G * chunks * H * W), H * W, chunks, G)
    y, x = yx // W, yx % W
    out["grad_features"] = _votes(_inside(y, R, H - R) & _inside(x, R, W - R))
    return out
