"""The workload `make gpu-check` runs under Nsight Compute (ncu): one forward
and one backward of carafe at the larger FPN shape of bench_op.py
(2x256x100x152, k=5, s=2), in float32 and float16, so that the report holds
each kernel's hardware counters (duration, DRAM and L1/L2 throughput,
achieved occupancy, issue-slot use, warp stalls).

    ncu --kernel-name regex:carafe_ ... python3 scripts/gpu_profile.py

Run alone it does the same launches without a profiler (a smoke check).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SHAPE = (2, 256, 100, 152)
K, G, S = 5, 1, 2


def main():
    import torch

    import carafe
    from carafe.reference import random_inputs

    for dtype in (torch.float32, torch.float16):
        f, m, go = random_inputs(*SHAPE, K, G, S, dtype=dtype, device="cuda", with_grad_output=True)
        carafe.carafe(f, m, K, G, S)
        torch.ops.carafe.carafe_backward(go, f, m, K, G, S)
    torch.cuda.synchronize()
    return 0


if __name__ == "__main__":
    sys.exit(main())
