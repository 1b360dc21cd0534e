"""Wall-clock timing shared by the benchmarks, the ablation harness and the
notebooks."""

import statistics
import time

import torch


def median_seconds(fn, device="cpu", repeat=10):
    """Median wall time of fn() over repeat calls, after one warm-up call;
    on CUDA, synchronised before and after each call so that the time covers
    the kernels, not just their launch."""
    fn()
    times = []
    for _ in range(repeat):
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)
