"""Wall-clock timing shared by the benchmarks, the ablation harness and the
notebooks."""

import statistics
import time

import torch


def seconds(fn, device="cpu"):
    """Wall time of one call of fn(); on CUDA, synchronised before and after
    so that the time covers the kernels, not just their launch."""
    if device == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def median_seconds(fn, device="cpu", repeat=10):
    """Median wall time (seconds()) of fn() over repeat calls, after one
    warm-up call."""
    fn()
    return statistics.median(seconds(fn, device) for _ in range(repeat))
