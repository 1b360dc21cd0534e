"""The roofline the op benchmarks measure against, in one place (bench_op.py
on CPU, scripts/gpu_check.py on a GPU).

A call cannot finish faster than the larger of two floors, both measured on
the machine of the run:
- compute: its useful FLOP (2*k*k per output element and channel forward;
  grad_masks and grad_features each as many again) at the float32 matrix
  multiply rate;
- memory: the bytes it must move at least (read each input once, write each
  output once) at the rate of a large buffer copy (bytes read + written).
The share of the roofline is that larger floor over the measured time.

On a machine whose speed drifts over minutes (a shared VM: this project's
measured sgemm 148 and 242 GFLOP/s minutes apart), ceilings measured at
another time than the op misstate its share either way; paired_shares
measures them in rounds interleaved with the op's own calls.
"""

import statistics

from carafe_lab.timing import cuda_event_seconds, median_seconds, seconds


def useful_gflop(N, C, H, W, k, s, backward=False):
    """FLOP (in units of 1e9) of one forward, or of forward+backward (3x),
    for features (N, C, H, W) upsampled s times with k x k kernels. The same
    counts hold for :func:`carafe.window_similarity` with a key (N, C, H, W):
    k*k multiply-adds per query channel and pixel forward, and the same again
    for each of its two input gradients."""
    forward = 2 * k * k * N * C * (s * H) * (s * W) / 1e9
    return 3 * forward if backward else forward


def floor_bytes(N, C, H, W, k, G, s, dtype_size, backward):
    """Bytes a call must move at least. The forward reads features (N, C, H, W)
    and masks (N, G*k*k, s*H, s*W) and writes the output (N, C, s*H, s*W); the
    backward reads grad_output, features and masks and writes both gradients."""
    f, m, o = N * C * H * W, N * k * k * G * s * H * s * W, N * C * s * H * s * W
    n = (f + m + o) if not backward else (o + f + m + f + m)
    return n * dtype_size


def similarity_floor_bytes(N, C, H, W, k, G, s, dtype_size, backward):
    """Bytes :func:`carafe.window_similarity` must move at least, for a key
    (N, C, H, W) and a query (N, C, s*H, s*W). The forward reads both and
    writes the similarity (N, G*k*k, s*H, s*W): the same three sizes as
    CARAFE's forward. The backward reads the similarity's gradient, query and
    key and writes the gradients of query and key, so it moves the
    query-sized tensor where CARAFE's moves the masks-sized one."""
    f, m, o = N * C * H * W, N * k * k * G * s * H * s * W, N * C * s * H * s * W
    n = (f + m + o) if not backward else (m + o + f + o + f)
    return n * dtype_size


def _copy_buffers(device, nbytes=None):
    """Source and destination of the memory ceiling's copy. The default size,
    1 GiB on CUDA and 256 MiB on CPU, is beyond the last-level caches of the
    machines we use (an H100's 50 MB L2; this project's Xeon VM reports 300 MB
    of L3, which its neighbours share), so the copy measures DRAM, not cache.
    The destination is written once first: the copy times no page faults."""
    import torch

    if nbytes is None:
        nbytes = 2**30 if device == "cuda" else 2**28
    x = torch.ones(nbytes // 4, dtype=torch.float32, device=device)
    return x, torch.zeros_like(x)


def copy_bandwidth(device, nbytes=None, repeat=20):
    """Bytes read + written per second by a copy between two buffers of nbytes
    (_copy_buffers; median of repeat): the memory ceiling. On CUDA, timed as
    scripts/gpu_check.py times the kernels it compares with this: CUDA events
    over rounds of `repeat` copies back to back (cuda_event_seconds)."""
    x, y = _copy_buffers(device, nbytes)
    if device == "cuda":
        return 2 * x.nbytes / cuda_event_seconds(lambda: y.copy_(x), repeat, rounds=3)
    return 2 * x.nbytes / median_seconds(lambda: y.copy_(x), device, repeat)


def shares(gflop, nbytes, t, gflops, bytes_per_s):
    """Where a call of t seconds stands against the roofline: each floor in ms,
    the bound (the larger floor), and the shares of the compute ceiling and of
    the roofline, in percent."""
    compute_ms = 1e3 * gflop / gflops
    memory_ms = 1e3 * nbytes / bytes_per_s
    floor_ms = max(compute_ms, memory_ms)
    return {
        "compute_floor_ms": compute_ms,
        "memory_floor_ms": memory_ms,
        "bound": "memory" if memory_ms > compute_ms else "compute",
        "pct_of_sgemm": 100 * compute_ms / (1e3 * t),
        "pct_of_roofline": 100 * floor_ms / (1e3 * t),
    }


def paired_shares(fn, gflop, nbytes, device, rounds=11, sgemm_n=2048, copy_bytes=None):
    """fn's place on the roofline from interleaved rounds: each round times
    float32 n x n matrix multiplies, buffer copies (_copy_buffers) and
    a call of fn, back to back, and computes the shares from that round's
    times; the result holds the medians over rounds of the shares, the
    floors, the ceilings and fn's time, and the bound of the median floors.
    fn is called once untimed before its timed call, as in a loop of its own
    (the copy has flushed the caches)."""
    import torch

    a = torch.randn(sgemm_n, sgemm_n, device=device)
    b = torch.randn(sgemm_n, sgemm_n, device=device)
    x, y = _copy_buffers(device, copy_bytes)
    for warm in (lambda: a @ b, lambda: y.copy_(x), fn):
        warm()
    per_round = []
    for _ in range(rounds):
        # the ceilings as the better of two calls: one call can dip (sgemm
        # 143-248 GFLOP/s call to call here), which would inflate the share
        t_gemm = min(seconds(lambda: a @ b, device) for _ in range(2))
        t_copy = min(seconds(lambda: y.copy_(x), device) for _ in range(2))
        fn()
        t_fn = seconds(fn, device)
        gflops, bytes_per_s = 2 * sgemm_n**3 / t_gemm / 1e9, 2 * x.nbytes / t_copy
        r = shares(gflop, nbytes, t_fn, gflops, bytes_per_s)
        r.update(sgemm_gflops=gflops, copy_GBps=bytes_per_s / 1e9, ms=1e3 * t_fn)
        per_round.append(r)
    out = {
        key: statistics.median(r[key] for r in per_round) for key in per_round[0] if key != "bound"
    }
    out["bound"] = "memory" if out["memory_floor_ms"] > out["compute_floor_ms"] else "compute"
    out["rounds"] = rounds
    return out
