"""The specification itself: the pure-PyTorch reference against a direct
transcription of the formula, and the unfold re-implementation against it."""

import itertools

import pytest
import torch
from conftest import make_inputs

from carafe.reference import carafe_reference, carafe_unfold


def carafe_loops(features, masks, k, G, s):
    """out[n,c,p,q] = sum masks[n, g*k*k + ky*k + kx, p, q]
    * features[n, c, p//s+ky-r, q//s+kx-r]."""
    N, C, H, W = features.shape
    r = k // 2
    out = torch.zeros(N, C, H * s, W * s, dtype=features.dtype)
    for n, c, p, q in itertools.product(range(N), range(C), range(H * s), range(W * s)):
        g = c // (C // G)
        for ky, kx in itertools.product(range(k), range(k)):
            y, x = p // s + ky - r, q // s + kx - r
            if 0 <= y < H and 0 <= x < W:
                out[n, c, p, q] += masks[n, g * k * k + ky * k + kx, p, q] * features[n, c, y, x]
    return out


@pytest.mark.parametrize("k,G,s", [(1, 1, 1), (3, 2, 2), (5, 1, 3), (3, 4, 2)])
def test_reference_matches_formula(k, G, s):
    f, m = make_inputs(N=1, C=4, H=3, W=4, k=k, G=G, s=s, normalized=False)
    torch.testing.assert_close(carafe_reference(f, m, k, G, s), carafe_loops(f, m, k, G, s))


@pytest.mark.parametrize("k,G,s", [(1, 1, 2), (3, 2, 2), (5, 4, 3), (7, 1, 4)])
def test_unfold_matches_reference(k, G, s):
    f, m = make_inputs(N=2, C=8, H=4, W=6, k=k, G=G, s=s, normalized=False)
    torch.testing.assert_close(carafe_unfold(f, m, k, G, s), carafe_reference(f, m, k, G, s))
