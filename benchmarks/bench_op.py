"""Speed and memory of the CARAFE op against the common pure-PyTorch
re-implementation (nearest upsample + dilated F.unfold + weighted sum), the
strongest pure-PyTorch peer a user could pick (torch.compile of the
shifted-gather formulation, carafe_reference: one shifted, upsampled copy per
tap) and F.interpolate(bilinear) for context, in one run, as ratios; on CUDA
also mmcv's op when it is installed. On CPU the run also places carafe on
its roofline at the same thread count (carafe_lab.roofline.paired_shares):
in rounds, each timing a float32 matrix multiply (compute ceiling), a large
buffer copy (memory ceiling) and a carafe call back to back, it reports
carafe's useful FLOP rate (2*k*k multiply-adds per output element forward,
three times that forward+backward) as a share of the compute ceiling, and
the larger of the compute and memory floors as a share of its time (the
share of the roofline), medians over rounds: this VM's speed drifts by up to
2x over minutes. Then carafe and the compiled peer are timed again, and
placed on the roofline again, with freed memory kept for reuse
(_glibc_keep_freed_memory). carafe.window_similarity, the primitive of
SAPA-style kernels, is timed the same way against the same two peers, with
its roofline (time_similarity).

    python benchmarks/bench_op.py [--device cpu|cuda] [--quick] [--out FILE]

Reports, per size and method: forward and forward+backward wall time (median
of repeats, after a warm-up) and the peak memory a call adds on top of its
inputs (CUDA: the caching allocator's peak; CPU: the process's peak resident
set, with glibc told to return large blocks to the OS so freed memory is not
reused unseen; accurate to about 0.5 MiB, the kernel's RSS accounting
granularity). Writes JSON with a machine description under
benchmarks/results/.
"""

import argparse
import ctypes
import gc
import json
import re
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import carafe
from carafe.reference import (
    carafe_reference,
    carafe_unfold,
    random_inputs,
    window_similarity_reference,
)
from carafe_lab.environment import describe
from carafe_lab.roofline import floor_bytes, paired_shares, similarity_floor_bytes, useful_gflop
from carafe_lab.timing import median_seconds, seconds

RESULTS = Path(__file__).resolve().parent / "results"
SIZES = {"2x256x50x76": (2, 256, 50, 76), "2x256x100x152": (2, 256, 100, 152)}
QUICK_SIZES = {"2x64x25x38": (2, 64, 25, 38)}
K, G, S = 5, 1, 2


_LIBC = None


def _glibc_return_freed_memory():
    """Serve allocations over 64 KiB with mmap, so that free() gives them back
    and the resident set measures what is live (CPU peak memory)."""
    global _LIBC
    try:
        _LIBC = ctypes.CDLL("libc.so.6")
        _LIBC.mallopt(-3, 64 * 1024)  # M_MMAP_THRESHOLD
        _LIBC.mallopt(-1, 128 * 1024)  # M_TRIM_THRESHOLD
        return True
    except (OSError, AttributeError):
        _LIBC = None
        return False


def _glibc_keep_freed_memory():
    """Serve every allocation from glibc's heap and keep freed memory for reuse
    (mallopt M_MMAP_MAX=0, M_TRIM_THRESHOLD=2 GiB): what jemalloc and TCMalloc
    do, and why PyTorch's CPU performance tuning guide recommends them. A
    large tensor freed and asked for again is then the same, already mapped
    memory; by default glibc maps every block over 32 MiB afresh, and the
    kernel zeroes each page on its first write. Returns False where glibc
    cannot be told."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(-4, 0)) and bool(libc.mallopt(-1, 2**31 - 1))
    except (OSError, AttributeError):
        return False


def _release_free_heap():
    """Give freed heap memory back to the OS, so that reusing it shows up in
    the resident set again."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


def _rss(field):
    with open("/proc/self/status") as fh:
        return int(re.search(field + r":\s+(\d+)", fh.read()).group(1)) * 1024


def peak_extra_bytes(fn, device):
    """Peak bytes that one call of fn adds to what is already allocated."""
    if device == "cuda":
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        fn()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base
    gc.collect()
    _release_free_heap()
    base = _rss("VmRSS")
    with open("/proc/self/clear_refs", "w") as fh:  # reset the peak (VmHWM) to now
        fh.write("5")
    fn()
    return max(0, _rss("VmHWM") - base)


def methods(device):
    out = {
        "carafe": lambda f, m: carafe.carafe(f, m, K, G, S),
        "unfold": lambda f, m: carafe_unfold(f, m, K, G, S),
        # compiled once per input shape; the warm-up call of every timing
        # pays the compilation
        "compiled": torch.compile(lambda f, m: carafe_reference(f, m, K, G, S), dynamic=False),
        "bilinear": lambda f, m: F.interpolate(
            f, scale_factor=S, mode="bilinear", align_corners=False
        ),
    }
    if device == "cuda":
        try:
            from mmcv.ops import carafe as mmcv_carafe

            out["mmcv"] = lambda f, m: mmcv_carafe(f, m, K, G, S)
        except Exception as e:  # noqa: BLE001 - any import failure means "not available"
            print(f"mmcv CARAFE not available ({type(e).__name__}: {e}); skipping it")
    return out


def machine(device):
    """The machine and software, with this checkout's commit (carafe_lab.environment)."""
    return describe(device, commit_of=Path(__file__).parent, short_commit=True)


def slug(text):
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def _problem(device, N, C, H, W):
    return random_inputs(N, C, H, W, K, G, S, device=device, with_grad_output=True)


def _calls(fn, f, m, grad_out):
    fr, mr = f.clone().requires_grad_(), m.clone().requires_grad_()

    def forward():
        with torch.no_grad():
            return fn(f, m)

    def forward_backward():
        fr.grad = mr.grad = None
        fn(fr, mr).backward(grad_out)
        fr.grad = mr.grad = None

    return forward, forward_backward


def time_methods(device, sizes, repeat):
    """Forward and forward+backward times of every (size, method)."""
    rows = []
    for size_name, shape in sizes.items():
        f, m, grad_out = _problem(device, *shape)
        for name, fn in methods(device).items():
            forward, forward_backward = _calls(fn, f, m, grad_out)
            # The slow baselines need fewer repeats to give a stable median.
            reps = repeat if name in ("carafe", "bilinear", "compiled") else max(3, repeat // 4)
            rows.append(
                {
                    "size": size_name,
                    "method": name,
                    "forward_ms": 1e3 * median_seconds(forward, device, reps),
                    "forward_backward_ms": 1e3 * median_seconds(forward_backward, device, reps),
                    "output_bytes": grad_out.numel() * grad_out.element_size(),
                }
            )
            print(
                f"  {size_name:>14} {name:>8}: fwd {rows[-1]['forward_ms']:9.2f} ms, "
                f"fwd+bwd {rows[-1]['forward_backward_ms']:9.2f} ms",
                flush=True,
            )
    return rows


def probe_memory(device, sizes, rows):
    """Adds each row's peak extra memory. On CPU it first changes how glibc
    serves large blocks (which would slow the allocation-heavy baselines'
    timings), so it runs after every timing done with the default allocator."""
    if device == "cpu":
        _glibc_return_freed_memory()
    for size_name, shape in sizes.items():
        f, m, grad_out = _problem(device, *shape)
        for name, fn in methods(device).items():
            forward, forward_backward = _calls(fn, f, m, grad_out)
            forward()  # warm-up (thread pools, first-touch of code paths)
            row = next(r for r in rows if r["size"] == size_name and r["method"] == name)
            row["forward_peak_extra_bytes"] = peak_extra_bytes(forward, device)
            row["forward_backward_peak_extra_bytes"] = peak_extra_bytes(forward_backward, device)
            print(
                f"  {size_name:>14} {name:>8}: peak extra fwd "
                f"{row['forward_peak_extra_bytes'] / 2**20:8.1f} MiB, fwd+bwd "
                f"{row['forward_backward_peak_extra_bytes'] / 2**20:8.1f} MiB "
                f"(output {row['output_bytes'] / 2**20:.1f} MiB)",
                flush=True,
            )


def run_with_reused_memory(device, sizes, repeat, names=("carafe", "compiled")):
    """carafe's and the strongest peer's timings again, with freed memory kept
    for reuse (_glibc_keep_freed_memory): what their time is apart from the
    kernel's first-touch zeroing of fresh output pages. None where glibc
    cannot be told."""
    if device != "cpu" or not _glibc_keep_freed_memory():
        return None
    rows = []
    for size_name, shape in sizes.items():
        f, m, grad_out = _problem(device, *shape)
        for name, fn in methods(device).items():
            if name not in names:
                continue
            forward, forward_backward = _calls(fn, f, m, grad_out)
            rows.append(
                {
                    "size": size_name,
                    "method": name,
                    "forward_ms": 1e3 * median_seconds(forward, device, repeat),
                    "forward_backward_ms": 1e3 * median_seconds(forward_backward, device, repeat),
                }
            )
            print(
                f"  {size_name:>14} {name:>8}: fwd {rows[-1]['forward_ms']:9.2f} ms, "
                f"fwd+bwd {rows[-1]['forward_backward_ms']:9.2f} ms (freed memory reused)",
                flush=True,
            )
    return rows


def roofline(device, sizes, heading):
    """Per size, carafe's forward and forward+backward on the roofline, from
    rounds interleaved with the ceilings' measurements
    (carafe_lab.roofline.paired_shares); the FLOP shares also under their old
    keys."""
    print(
        f"Roofline rounds ({heading}; each a matrix multiply, a copy, a carafe call; "
        "medians over rounds):"
    )
    out = {}
    carafe_fn = methods(device)["carafe"]
    for size_name, shape in sizes.items():
        f, m, grad_out = _problem(device, *shape)
        forward, forward_backward = _calls(carafe_fn, f, m, grad_out)
        fwd_bytes = floor_bytes(*shape, K, G, S, 4, backward=False)
        both_bytes = fwd_bytes + floor_bytes(*shape, K, G, S, 4, backward=True)
        fwd = paired_shares(forward, useful_gflop(*shape, K, S), fwd_bytes, device)
        both = paired_shares(
            forward_backward, useful_gflop(*shape, K, S, backward=True), both_bytes, device
        )
        out[size_name] = {
            "forward_pct_of_sgemm": fwd["pct_of_sgemm"],
            "forward_backward_pct_of_sgemm": both["pct_of_sgemm"],
            "forward": fwd,
            "forward_backward": both,
        }
        for what, x in (("forward", fwd), ("forward_backward", both)):
            print(
                f"  {size_name:>14} {what:>16}: {x['ms']:8.2f} ms; floors compute "
                f"{x['compute_floor_ms']:6.2f} ms (at {x['sgemm_gflops']:.0f} GFLOP/s), memory "
                f"{x['memory_floor_ms']:6.2f} ms (at {x['copy_GBps']:.1f} GB/s; "
                f"{x['bound']}-bound); {x['pct_of_sgemm']:5.1f}% of the compute ceiling, "
                f"{x['pct_of_roofline']:5.1f}% of the roofline",
                flush=True,
            )
    return out


def similarity_methods(peer=True):
    """carafe.window_similarity, the pure-PyTorch spec compiled (the strongest
    peer, as for the reassembly; left out with peer=False, as --quick does:
    its compilation takes about a minute per size) and the spec eager
    (dilated F.unfold, what a SAPA-style implementation without this op
    computes)."""
    spec = lambda q, k: window_similarity_reference(q, k, K, G, S)  # noqa: E731
    out = {"window_similarity": lambda q, k: carafe.window_similarity(q, k, K, G, S)}
    if peer:
        out["compiled"] = torch.compile(spec, dynamic=False)
    out["unfold"] = spec
    return out


def time_similarity(device, sizes, repeat, peer=True):
    """carafe.window_similarity for a key (N, C, H, W) and a query
    (N, C, s*H, s*W): forward and forward+backward times of it and its peers
    (ratios peer / ours) and, on CPU, its place on the roofline (the same
    useful FLOPs as the reassembly; its own byte floor,
    carafe_lab.roofline.similarity_floor_bytes)."""
    out = {}
    for size_name, shape in sizes.items():
        N, C, H, W = shape
        g = torch.Generator().manual_seed(0)
        key = torch.randn(N, C, H, W, generator=g).to(device)
        query = torch.randn(N, C, S * H, S * W, generator=g).to(device)
        grad = torch.randn(N, G * K * K, S * H, S * W, generator=g).to(device)
        rows = {}
        for name, fn in similarity_methods(peer).items():
            forward, forward_backward = _calls(fn, query, key, grad)
            reps = repeat if name != "unfold" else max(3, repeat // 4)
            rows[name] = {
                "forward_ms": 1e3 * median_seconds(forward, device, reps),
                "forward_backward_ms": 1e3 * median_seconds(forward_backward, device, reps),
            }
            print(
                f"  {size_name:>14} {name:>17}: fwd {rows[name]['forward_ms']:9.2f} ms, "
                f"fwd+bwd {rows[name]['forward_backward_ms']:9.2f} ms",
                flush=True,
            )
        ours = rows["window_similarity"]
        entry = {
            "results": rows,
            "ratios": {
                name: {
                    "forward_time": r["forward_ms"] / ours["forward_ms"],
                    "forward_backward_time": r["forward_backward_ms"] / ours["forward_backward_ms"],
                }
                for name, r in rows.items()
                if name != "window_similarity"
            },
        }
        if device == "cpu":
            forward, forward_backward = _calls(
                similarity_methods()["window_similarity"], query, key, grad
            )
            fwd_bytes = similarity_floor_bytes(*shape, K, G, S, 4, backward=False)
            both_bytes = fwd_bytes + similarity_floor_bytes(*shape, K, G, S, 4, backward=True)
            entry["roofline"] = {
                "forward": paired_shares(forward, useful_gflop(*shape, K, S), fwd_bytes, device),
                "forward_backward": paired_shares(
                    forward_backward, useful_gflop(*shape, K, S, backward=True), both_bytes, device
                ),
            }
            for what, x in entry["roofline"].items():
                print(
                    f"  {size_name:>14} {what:>17}: {x['ms']:8.2f} ms; {x['bound']}-bound, "
                    f"{x['pct_of_sgemm']:5.1f}% of the compute ceiling, "
                    f"{x['pct_of_roofline']:5.1f}% of the roofline",
                    flush=True,
                )
        for name, r in entry["ratios"].items():
            print(
                f"  {size_name:>14} {name:>17} / ours: fwd {r['forward_time']:6.1f}x, "
                f"fwd+bwd {r['forward_backward_time']:6.1f}x",
                flush=True,
            )
        out[size_name] = entry
    return out


DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def time_dtypes(device, sizes, rounds, peer=True):
    """carafe's forward and forward+backward per dtype (float32, bfloat16 -- the
    CPU autocast dtype -- and float16), in rounds that call each dtype once in
    turn, so drift in the machine's speed falls on all alike; medians over
    rounds and ratios to float32. With peer, also the strongest peer in
    bfloat16: torch.compile of the shifted-gather formulation, its own median
    (its compilation takes about a minute per size)."""
    out = {}
    by_name = methods(device)
    carafe_fn, compiled = by_name["carafe"], by_name["compiled"]
    for size_name, shape in sizes.items():
        calls = {}
        for dtype in DTYPES:
            f, m, grad_out = random_inputs(
                *shape, K, G, S, device=device, dtype=dtype, with_grad_output=True
            )
            calls[dtype] = _calls(carafe_fn, f, m, grad_out)
            for call in calls[dtype]:
                call()  # warm-up
        times = {(dtype, what): [] for dtype in DTYPES for what in ("forward", "forward_backward")}
        for _ in range(rounds):
            for dtype, (forward, forward_backward) in calls.items():
                times[(dtype, "forward")].append(seconds(forward, device))
                times[(dtype, "forward_backward")].append(seconds(forward_backward, device))
        res = out[size_name] = {}
        for dtype in DTYPES:
            name = str(dtype).removeprefix("torch.")
            res[name] = {
                f"{what}_ms": 1e3 * statistics.median(times[(dtype, what)])
                for what in ("forward", "forward_backward")
            }
        for row in res.values():
            for what in ("forward", "forward_backward"):
                row[f"{what}_vs_float32"] = row[f"{what}_ms"] / res["float32"][f"{what}_ms"]
        if peer:
            f, m, grad_out = random_inputs(
                *shape, K, G, S, device=device, dtype=torch.bfloat16, with_grad_output=True
            )
            forward, forward_backward = _calls(compiled, f, m, grad_out)
            reps = max(3, rounds // 3)
            row = res["compiled_bfloat16"] = {
                "forward_ms": 1e3 * median_seconds(forward, device, reps),
                "forward_backward_ms": 1e3 * median_seconds(forward_backward, device, reps),
            }
            for what in ("forward", "forward_backward"):
                row[f"{what}_vs_carafe_bfloat16"] = (
                    row[f"{what}_ms"] / res["bfloat16"][f"{what}_ms"]
                )
        for name, row in res.items():
            extra = (
                f"; {row['forward_vs_carafe_bfloat16']:.1f}x / "
                f"{row['forward_backward_vs_carafe_bfloat16']:.1f}x carafe bfloat16's time"
                if name == "compiled_bfloat16"
                else f"; {row['forward_vs_float32']:.2f}x / "
                f"{row['forward_backward_vs_float32']:.2f}x float32's time"
            )
            print(
                f"  {size_name:>14} {name:>17}: fwd {row['forward_ms']:9.2f} ms, fwd+bwd "
                f"{row['forward_backward_ms']:9.2f} ms{extra}",
                flush=True,
            )
    return out


def ratios(rows):
    """Per size: each method's time and memory divided by ours (>1: ours is better)."""
    out = {}
    for row in rows:
        ours = next(r for r in rows if r["size"] == row["size"] and r["method"] == "carafe")
        if row["method"] == "carafe":
            continue
        r = out.setdefault(row["size"], {})[row["method"]] = {
            "forward_time": row["forward_ms"] / ours["forward_ms"],
            "forward_backward_time": row["forward_backward_ms"] / ours["forward_backward_ms"],
        }
        if "forward_peak_extra_bytes" in row:  # timings-only rows have no memory probe
            r["forward_peak_memory"] = row["forward_peak_extra_bytes"] / max(
                1, ours["forward_peak_extra_bytes"]
            )
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description="CARAFE op benchmark")
    parser.add_argument(
        "--device", choices=["cpu", "cuda"], default="cuda" if carafe.cuda_available() else "cpu"
    )
    parser.add_argument("--quick", action="store_true", help="one small size (a smoke run)")
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--out", type=Path, help="JSON path (default: benchmarks/results/...)")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not carafe.cuda_available():
        parser.error("--device cuda needs a GPU and carafe's CUDA kernels")
    info = machine(args.device)
    sizes = QUICK_SIZES if args.quick else SIZES
    print(
        f"CARAFE benchmark on {args.device}: {info.get('gpu', info['cpu'])}, "
        f"{info['torch_threads']} threads, torch {info['torch']}; k={K}, G={G}, s={S}"
    )
    rows = time_methods(args.device, sizes, args.repeat)
    # The roofline (CPU): carafe's calls interleaved with the ceilings'
    # measurements, round by round, with the allocator of the timings.
    roof = roofline(args.device, sizes, "default allocator") if args.device == "cpu" else None
    dtypes = None
    if args.device == "cpu":  # on the GPU, scripts/gpu_check.py times the dtypes, with mmcv
        print(
            "Dtypes (carafe, in rounds"
            + ("" if args.quick else "; and the compiled peer in bfloat16")
            + "):"
        )
        dtypes = time_dtypes(args.device, sizes, args.repeat, peer=not args.quick)
    print("window_similarity (the primitive of SAPA-style kernels; query s*H x s*W, key H x W):")
    similarity = time_similarity(args.device, sizes, args.repeat, peer=not args.quick)
    probe_memory(args.device, sizes, rows)
    reused = run_with_reused_memory(args.device, sizes, args.repeat)
    result = {
        "machine": info,
        "device": args.device,
        "k": K,
        "group_size": G,
        "scale_factor": S,
        "quick": args.quick,
        "results": rows,
        "ratios": ratios(rows),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }
    if dtypes:
        result["dtypes"] = dtypes
    result["window_similarity"] = similarity
    if roof:
        result["roofline"] = roof
        result["roofline_method"] = (
            "medians over rounds of (float32 2048x2048 matrix multiply, 256 MiB copy, one "
            "carafe call), shares computed per round"
        )
    if reused:
        result["reused_memory"] = {
            "how": "glibc mallopt M_MMAP_MAX=0, M_TRIM_THRESHOLD=2 GiB (freed memory kept "
            "for reuse, as jemalloc and TCMalloc do)",
            "results": reused,
            "ratios": ratios(reused),
            "roofline": roofline(args.device, sizes, "freed memory kept for reuse"),
        }
    print("\nRatios (other / carafe; > 1 means carafe is faster or smaller):")
    for size, by_method in result["ratios"].items():
        for name, r in by_method.items():
            print(
                f"  {size:>14} {name:>8}: fwd {r['forward_time']:7.1f}x, fwd+bwd "
                f"{r['forward_backward_time']:7.1f}x, fwd peak memory "
                f"{r['forward_peak_memory']:7.1f}x"
            )
    write_result(result, f"bench_op_{args.device}", info, args.quick, args.out)
    return 0


def write_result(result, prefix, info, quick, out=None):
    """Save a benchmark's JSON as benchmarks/results/<prefix>_<machine>[_quick].json
    (or out), named after the GPU or the CPU and its core count."""
    name = info.get("gpu") or f"{info['cpu']}-{info['cpu_count']}c"
    out = out or RESULTS / f"{prefix}_{slug(name)}{'_quick' if quick else ''}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {out}")
    return out


if __name__ == "__main__":
    sys.exit(main())
