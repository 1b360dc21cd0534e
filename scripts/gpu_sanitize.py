"""A small, complete workload of the CUDA kernels for compute-sanitizer
(memcheck, racecheck): forward and both gradients over edge-case shapes,
every dtype, k in 1..7, G, s up to 4, a non-contiguous input and inputs
one element off alignment (which the kernels must not read in pairs), each
checked against the CPU kernel."""

import torch

import carafe
from carafe.reference import misaligned_copy, random_inputs

CASES = [(1, 4, 3, 5, 1, 1, 2), (2, 8, 5, 7, 3, 2, 2), (1, 6, 4, 3, 5, 3, 3), (2, 4, 2, 9, 7, 1, 4),
         (1, 8, 1, 1, 5, 4, 2), (1, 2, 6, 33, 3, 1, 1)]


def main():
    torch.manual_seed(0)
    for N, C, H, W, k, G, s in CASES:
        for dtype in (torch.float32, torch.float64, torch.float16, torch.bfloat16):
            cpu = random_inputs(N, C, H, W, k, G, s, dtype=dtype, with_grad_output=True)
            gpu = [t.cuda() for t in cpu]
            if (N, C) == (2, 8):  # the features as a strided view (same values)
                gpu[0] = torch.stack([gpu[0], torch.zeros_like(gpu[0])], -1)[..., 0]
                assert not gpu[0].is_contiguous()
            if (N, C) in ((2, 8), (2, 4)):  # masks and grad_output off pair alignment
                gpu[1], gpu[2] = misaligned_copy(gpu[1]), misaligned_copy(gpu[2])
            out = carafe.carafe(gpu[0], gpu[1], k, G, s)
            gf, gm = torch.ops.carafe.carafe_backward(gpu[2], gpu[0], gpu[1], k, G, s)
            ref = carafe.carafe(cpu[0], cpu[1], k, G, s)
            rgf, rgm = torch.ops.carafe.carafe_backward(cpu[2], cpu[0], cpu[1], k, G, s)
            torch.cuda.synchronize()
            tol = 1e-5 if dtype in (torch.float32, torch.float64) else 5e-2
            for a, b in ((out, ref), (gf, rgf), (gm, rgm)):
                torch.testing.assert_close(a.cpu().double(), b.double(), rtol=tol, atol=tol)
    print(f"sanitize workload: {len(CASES) * 4} cases agree with the CPU kernel")


if __name__ == "__main__":
    main()
