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


def cuda_event_seconds(fn, repeat=10, rounds=5, warmup=3, event=None):
    """GPU seconds per call of fn(): CUDA events recorded around `repeat`
    calls made back to back, so that the GPU runs them queued one after
    another, as in a model, and the time is theirs, not each call's host
    dispatch plus a synchronisation (what seconds() measures). The median
    over `rounds` such rounds, each synchronised once at its end, after
    `warmup` untimed calls. `event`: the event class, torch.cuda.Event by
    default (a test passes a stand-in)."""
    if event is None:
        import torch

        event = torch.cuda.Event
    for _ in range(warmup):
        fn()
    per_call = []
    for _ in range(rounds):
        start, end = event(enable_timing=True), event(enable_timing=True)
        start.record()
        for _ in range(repeat):
            fn()
        end.record()
        end.synchronize()
        per_call.append(start.elapsed_time(end) / 1e3 / repeat)  # elapsed_time: ms
    return statistics.median(per_call)
