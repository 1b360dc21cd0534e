"""A small, complete workload of the CUDA kernels for compute-sanitizer
(memcheck, racecheck, synccheck): forward and both gradients over edge-case
shapes, every dtype, k in 1..7, G, s up to 4, a non-contiguous input and
inputs one element off alignment (which the kernels must not read in pairs),
each checked against the CPU kernel; then, at shapes whose warps lie wholly
inside the input (rows of 80 columns), every k in 3, 5, 7 with every s in
1..4, so that the warps' votes (__all_sync) send some of them down the
bounds-test-free loops, each checked against the CPU kernel too and run
again with the test-only launch switches of csrc/cuda/grid.cuh:
the 64-bit index kernels, and grids of 3 blocks whose grid-stride loops
repeat (the same bits as the default launch)."""

import itertools
import os

import torch

import carafe
from carafe.reference import misaligned_copy, random_inputs

CASES = [
    (1, 4, 3, 5, 1, 1, 2),
    (2, 8, 5, 7, 3, 2, 2),
    (1, 6, 4, 3, 5, 3, 3),
    (2, 4, 2, 9, 7, 1, 4),
    (1, 8, 1, 1, 5, 4, 2),
    (1, 2, 6, 33, 3, 1, 1),
]
# (N, C, H, W, k, G, s): tests/cuda_paths.py counts their warps' votes
INTERIOR_CASES = [
    (1, 32, 24, 80, k, 1 + (k + s) % 2, s) for k, s in itertools.product((3, 5, 7), (1, 2, 3, 4))
]
DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
SWITCHES = ({"CARAFE_TEST_CUDA_INDEX64": "1"}, {"CARAFE_TEST_CUDA_MAX_BLOCKS": "3"})


def run(inputs, k, G, s):
    f, m, go = inputs
    return (carafe.carafe(f, m, k, G, s), *torch.ops.carafe.carafe_backward(go, f, m, k, G, s))


def check(gpu, cpu, k, G, s, dtype):
    results, expected = run(gpu, k, G, s), run(cpu, k, G, s)
    torch.cuda.synchronize()
    tol = 1e-5 if dtype in (torch.float32, torch.float64) else 5e-2
    for a, b in zip(results, expected):
        torch.testing.assert_close(a.cpu().double(), b.double(), rtol=tol, atol=tol)
    return results


def main():
    torch.manual_seed(0)
    for N, C, H, W, k, G, s in CASES:
        for dtype in DTYPES:
            cpu = random_inputs(N, C, H, W, k, G, s, dtype=dtype, with_grad_output=True)
            gpu = [t.cuda() for t in cpu]
            if (N, C) == (2, 8):  # the features as a strided view (same values)
                gpu[0] = torch.stack([gpu[0], torch.zeros_like(gpu[0])], -1)[..., 0]
                assert not gpu[0].is_contiguous()
            if (N, C) in ((2, 8), (2, 4)):  # masks and grad_output off pair alignment
                gpu[1], gpu[2] = misaligned_copy(gpu[1]), misaligned_copy(gpu[2])
            check(gpu, cpu, k, G, s, dtype)
    for N, C, H, W, k, G, s in INTERIOR_CASES:
        for dtype in DTYPES:
            cpu = random_inputs(N, C, H, W, k, G, s, dtype=dtype, with_grad_output=True)
            gpu = [t.cuda() for t in cpu]
            default = check(gpu, cpu, k, G, s, dtype)
            for switch in SWITCHES:
                os.environ.update(switch)
                try:
                    results = run(gpu, k, G, s)
                finally:
                    for name in switch:
                        del os.environ[name]
                for a, b in zip(results, default):
                    assert torch.equal(a, b), (switch, k, s, dtype)
    print(
        f"sanitize workload: {len(CASES) * len(DTYPES)} edge cases and "
        f"{len(INTERIOR_CASES) * len(DTYPES)} interior cases (each also with "
        f"{len(SWITCHES)} launch switches) agree with the CPU kernel"
    )


if __name__ == "__main__":
    main()
