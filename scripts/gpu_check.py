"""`make gpu-check`: everything a GPU machine should tell us, in one command.

On a machine with an NVIDIA GPU, nvcc and a CUDA build of PyTorch (no
network needed; carry build/gpu-check/ from `make gpu-check-prepare`):

1. builds the extension for this GPU's architecture (in place);
2. runs the CUDA tests (pytest -m cuda);
3. benchmarks forward and forward+backward of our kernels and of mmcv 2.1.0's
   own CUDA op (built from its sources by benchmarks/mmcv_peer), float32,
   float16 and bfloat16, at the FPN shapes of bench_op.py, against the
   bandwidth floor: the bytes each call must move at the device-to-device
   copy rate measured in the same run. Times are GPU times from CUDA events
   around calls made back to back (carafe_lab.timing.cuda_event_seconds),
   not synchronised calls, which would add each call's host dispatch; and
   carafe.window_similarity against its unfold spec at the same shapes;
4. runs the CUDA cases of the op, property and module tests, then
   compute-sanitizer (SANITIZER_TOOLS: memcheck, racecheck, synccheck) over
   scripts/gpu_sanitize.py;
5. profiles our kernels with Nsight Compute (ncu) over
   scripts/gpu_profile.py: per kernel launch, the counters of its standard
   sections (duration, DRAM / L1 / L2 throughput, occupancy, issue slots,
   warp states), which a machine without a GPU cannot measure;
6. writes benchmarks/results/gpu_check_<gpu>.json after every step (and a
   copy, with the log, into the output folder given by --out or $OUT, when
   one is given), and prints a summary. Each step's failure is
   recorded and the later steps still run; the exit status is non-zero if
   any step failed.

    python3 scripts/gpu_check.py [--skip-build] [--quick] [--out DIR]
"""

import argparse
import csv
import io
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# The checkout's packages in this process too (the subprocesses get ROOT
# through PYTHONPATH): `python3 scripts/gpu_check.py` puts only scripts/ on sys.path.
sys.path.insert(0, str(ROOT))
PREPARED = ROOT / "build" / "gpu-check"
SHAPES = {"2x256x50x76": (2, 256, 50, 76), "2x256x100x152": (2, 256, 100, 152)}
K, G, S = 5, 1, 2
# compute-sanitizer's tools, one run each over scripts/gpu_sanitize.py:
# out-of-bounds and misaligned accesses; shared-memory races; barriers and
# warp-synchronous calls (__all_sync) whose mask names lanes that do not take
# part, as a vote in divergent code could.
SANITIZER_TOOLS = ("memcheck", "racecheck", "synccheck")


def sh(cmd, timeout, env=None, log=None, whole=False):
    """Run cmd; returns (ok, seconds, last lines of its output, or all of it
    when `whole`)."""
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(
            cmd,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, **(env or {})},
        )
        ok, text = proc.returncode == 0, proc.stdout + proc.stderr
    except subprocess.TimeoutExpired as e:
        ok, text = False, f"timed out after {timeout} s\n{(e.stdout or '')}{(e.stderr or '')}"
        text = text if isinstance(text, str) else str(text)
    seconds = round(time.perf_counter() - t0, 1)
    if log is not None:
        log.write(f"\n$ {' '.join(map(str, cmd))}  ({seconds} s, {'ok' if ok else 'FAILED'})\n")
        log.write(text)
        log.flush()
    return ok, seconds, text if whole else "\n".join(text.strip().splitlines()[-15:])


def install_wheels(log):
    """Prepared wheels into build/gpu-check/site (added to PYTHONPATH)."""
    wheels = sorted((PREPARED / "wheels").glob("*.whl"))
    site = PREPARED / "site"
    if wheels:
        sh(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "-q",
                "--no-index",
                "--no-deps",
                "--target",
                str(site),
                *map(str, wheels),
            ],
            120,
            log=log,
        )
    return {"PYTHONPATH": os.pathsep.join([str(ROOT), str(site), os.environ.get("PYTHONPATH", "")])}


def machine():
    import torch

    # not describe(): it imports carafe, which fails before the kernels are built
    from carafe_lab.environment import git_commit

    info = {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "gpu": torch.cuda.get_device_name(0),
        "capability": ".".join(map(str, torch.cuda.get_device_capability(0))),
        "sm_count": torch.cuda.get_device_properties(0).multi_processor_count,
        # the commit as its sender states it wins: a copy of the tree made
        # for a GPU machine may carry a stale git history, or none
        "git_commit": os.environ.get("CARAFE_GIT_COMMIT") or git_commit(ROOT, short=True),
    }
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version,memory.total", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout.strip()
        info["driver"], info["memory"] = [s.strip() for s in out.split(",")][:2]
    except (OSError, ValueError, subprocess.TimeoutExpired):
        pass
    return info


def benchmark(quick, log):
    import torch

    import carafe
    from carafe.reference import random_inputs
    from carafe_lab.timing import cuda_event_seconds

    peer, peer_error = None, None
    try:
        sys.path.insert(0, str(ROOT / "benchmarks"))
        from mmcv_peer.build import load

        peer = load()
    except Exception as e:  # noqa: BLE001 (the benchmark runs without its peer)
        peer_error = f"{type(e).__name__}: {e}"
        log.write(f"\nmmcv peer unavailable: {peer_error}\n")
    from carafe_lab.roofline import copy_bandwidth, floor_bytes

    bandwidth = copy_bandwidth("cuda", 2**30, 20)
    rows = []
    shapes = {"2x64x25x38": (2, 64, 25, 38)} if quick else SHAPES
    for size, (N, C, H, W) in shapes.items():
        for dtype in (torch.float32, torch.float16, torch.bfloat16):
            f, m, go = random_inputs(
                N, C, H, W, K, G, S, dtype=dtype, device="cuda", with_grad_output=True
            )
            impls = {"carafe": lambda a, b: carafe.carafe(a, b, K, G, S)}
            if peer is not None and dtype != torch.bfloat16:  # mmcv: float and half only
                impls["mmcv"] = lambda a, b: peer(a, b, K, G, S)
            row = {"size": size, "dtype": str(dtype).replace("torch.", "")}
            for name, fn in impls.items():
                fr, mr = f.clone().requires_grad_(), m.clone().requires_grad_()

                def fwd_bwd():
                    out = fn(fr, mr)
                    torch.autograd.grad(out, (fr, mr), go)

                with torch.no_grad():
                    fwd = cuda_event_seconds(lambda: fn(f, m))
                both = cuda_event_seconds(fwd_bwd)
                row[name] = {"forward_us": 1e6 * fwd, "forward_backward_us": 1e6 * both}
                if name == "carafe":
                    bwd = cuda_event_seconds(
                        lambda: torch.ops.carafe.carafe_backward(go, f, m, K, G, S)
                    )
                    size_b = f.element_size()
                    row[name]["backward_us"] = 1e6 * bwd
                    for what, t, back in (("forward", fwd, False), ("backward", bwd, True)):
                        moved = floor_bytes(N, C, H, W, K, G, S, size_b, back)
                        row[name][f"{what}_GBps"] = moved / t / 1e9
                        row[name][f"{what}_pct_of_copy"] = 100 * moved / t / bandwidth
            row.update(similarity_timings(N, C, H, W, dtype))
            if "mmcv" in row:
                row["mmcv_over_carafe_forward"] = (
                    row["mmcv"]["forward_us"] / row["carafe"]["forward_us"]
                )
                row["mmcv_over_carafe_forward_backward"] = (
                    row["mmcv"]["forward_backward_us"] / row["carafe"]["forward_backward_us"]
                )
            rows.append(row)
    return {
        "copy_GBps": bandwidth / 1e9,
        "k": K,
        "group_size": G,
        "scale_factor": S,
        "timing": "CUDA events around 10 calls back to back; median of 5 rounds",
        "mmcv_peer": peer is not None,
        "mmcv_peer_error": peer_error,
        "rows": rows,
    }


def similarity_timings(N, C, H, W, dtype):
    """carafe.window_similarity for a key (N, C, H, W) and a query
    (N, C, s*H, s*W) in dtype: forward and forward+backward (us) of ours and
    of its pure-PyTorch unfold spec (mmcv has no such op; SAPA's own CUDA op
    is not packaged), as {"window_similarity": ..., "window_similarity_unfold":
    ..., "unfold_over_similarity_forward", ..._forward_backward}."""
    import torch

    import carafe
    from carafe.reference import window_similarity_reference
    from carafe_lab.timing import cuda_event_seconds

    g = torch.Generator().manual_seed(0)
    key = torch.randn(N, C, H, W, generator=g).to("cuda", dtype)
    query = torch.randn(N, C, S * H, S * W, generator=g).to("cuda", dtype)
    grad = torch.randn(N, G * K * K, S * H, S * W, generator=g).to("cuda", dtype)
    out = {}
    for name, fn in (
        ("window_similarity", carafe.window_similarity),
        ("window_similarity_unfold", window_similarity_reference),
    ):
        qr, kr = query.clone().requires_grad_(), key.clone().requires_grad_()

        def fwd_bwd():
            torch.autograd.grad(fn(qr, kr, K, G, S), (qr, kr), grad)

        with torch.no_grad():
            fwd = cuda_event_seconds(lambda: fn(query, key, K, G, S))
        out[name] = {
            "forward_us": 1e6 * fwd,
            "forward_backward_us": 1e6 * cuda_event_seconds(fwd_bwd),
        }
    ours, peer = out["window_similarity"], out["window_similarity_unfold"]
    out["unfold_over_similarity_forward"] = peer["forward_us"] / ours["forward_us"]
    out["unfold_over_similarity_forward_backward"] = (
        peer["forward_backward_us"] / ours["forward_backward_us"]
    )
    return out


# Nsight Compute sections recorded per kernel launch (standard section names).
NCU_SECTIONS = (
    "SpeedOfLight",
    "LaunchStats",
    "Occupancy",
    "SchedulerStats",
    "WarpStateStats",
    "MemoryWorkloadAnalysis",
)


def parse_ncu_csv(text):
    """ncu --csv --page details output -> one entry per profiled launch:
    {"kernel", "grid", "block", "metrics": {"<section>: <metric> [<unit>]": value}}.
    Lines that are not CSV rows (the program's own output, ncu's ==PROF==
    notes) are skipped; numbers are parsed where they are numbers."""
    rows = [line for line in text.splitlines() if line.startswith('"')]
    launches = {}
    for rec in csv.DictReader(io.StringIO("\n".join(rows))):
        if not rec.get("Metric Name") or rec.get("ID") is None:
            continue
        entry = launches.setdefault(
            rec["ID"],
            {
                "kernel": rec.get("Kernel Name", "?"),
                "grid": rec.get("Grid Size"),
                "block": rec.get("Block Size"),
                "metrics": {},
            },
        )
        unit = f" [{rec['Metric Unit']}]" if rec.get("Metric Unit") else ""
        value = (rec.get("Metric Value") or "").replace(",", "")
        try:
            value = float(value)
        except ValueError:
            pass
        entry["metrics"][f"{rec.get('Section Name', '')}: {rec['Metric Name']}{unit}"] = value
    return [launches[i] for i in sorted(launches, key=lambda i: int(i) if i.isdigit() else 0)]


def profile(env, log):
    """Our kernels under ncu (scripts/gpu_profile.py): (step record, launches)."""
    ncu = shutil.which("ncu") or "/usr/local/cuda/bin/ncu"
    if not Path(ncu).exists():
        return {"ok": False, "tail": "ncu not found"}, None
    sections = [arg for name in NCU_SECTIONS for arg in ("--section", name)]
    # --clock-control none: measure the card as it runs, its clocks left alone
    ok, secs, text = sh(
        [
            ncu,
            "--clock-control",
            "none",
            "--kernel-name",
            "regex:carafe_",
            "--csv",
            "--page",
            "details",
            *sections,
            sys.executable,
            "scripts/gpu_profile.py",
        ],
        240,
        env=env,
        log=log,
        whole=True,
    )
    launches = parse_ncu_csv(text) if ok else None
    step = {"ok": ok and bool(launches), "seconds": secs}
    if not step["ok"]:
        step["tail"] = "\n".join(text.strip().splitlines()[-15:])
    return step, launches


def pytest_counts(text):
    counts = {}
    for n, word in re.findall(r"(\d+) (passed|failed|skipped|error|errors|deselected)", text):
        counts[word] = int(n)
    return counts


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-build", action="store_true")
    parser.add_argument("--quick", action="store_true", help="one small benchmark shape")
    parser.add_argument(
        "--out",
        default=os.environ.get("OUT") or None,
        help="a folder that also receives the report and the log after every "
        "step (default: $OUT, when set)",
    )
    args = parser.parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        print("gpu-check: no CUDA GPU visible to torch; nothing to check", file=sys.stderr)
        return 2
    PREPARED.mkdir(parents=True, exist_ok=True)
    log = open(PREPARED / "gpu_check.log", "w")
    info = machine()
    report = {"machine": info, "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "steps": {}}
    env = install_wheels(log)
    steps = report["steps"]
    slug = re.sub(r"[^a-z0-9]+", "-", info["gpu"].lower()).strip("-")
    out = ROOT / "benchmarks" / "results" / f"gpu_check_{slug}{'_quick' if args.quick else ''}.json"

    def save():
        """The report so far, after every step: a run cut off by its time
        limit still leaves what it measured (in the output folder too, when
        one is given)."""
        log.flush()
        out.write_text(json.dumps(report, indent=2) + "\n")
        if args.out:
            shutil.copy(out, Path(args.out) / out.name)
            shutil.copy(PREPARED / "gpu_check.log", Path(args.out) / "gpu_check.log")

    if not args.skip_build:
        ok, secs, tail = sh(
            [sys.executable, "setup.py", "build_ext", "--inplace"],
            420,
            env={
                "FORCE_CUDA": "1",
                "TORCH_CUDA_ARCH_LIST": info["capability"],
                "MAX_JOBS": str(os.cpu_count() or 8),
            },
            log=log,
        )
        steps["build"] = {"ok": ok, "seconds": secs, **({} if ok else {"tail": tail})}
        save()

    def pytest_step(name, targets):
        ok, secs, tail = sh(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *targets],
            300,
            env=env,
            log=log,
        )
        steps[name] = {
            "ok": ok,
            "seconds": secs,
            "counts": pytest_counts(tail),
            **({} if ok else {"tail": tail}),
        }
        save()

    # The CUDA tests, then the benchmark (the numbers the targets are about),
    # then the longer checks, so that a cut-off run has the essentials.
    pytest_step("pytest_cuda", ["-m", "cuda", "tests"])
    try:
        report["benchmark"] = benchmark(args.quick, log)
        steps["benchmark"] = {"ok": True}
    except Exception as e:  # noqa: BLE001 (recorded; the report is still written)
        steps["benchmark"] = {"ok": False, "tail": f"{type(e).__name__}: {e}"}
    save()
    pytest_step(
        "pytest_cuda_cases",
        ["tests/test_ops.py", "tests/test_properties.py", "tests/test_modules.py", "-k", "cuda"],
    )
    sanitizer = shutil.which("compute-sanitizer") or "/usr/local/cuda/bin/compute-sanitizer"
    for tool in SANITIZER_TOOLS:
        if not Path(sanitizer).exists():
            steps[f"sanitizer_{tool}"] = {"ok": False, "tail": "compute-sanitizer not found"}
            continue
        ok, secs, tail = sh(
            [
                sanitizer,
                "--tool",
                tool,
                "--error-exitcode",
                "1",
                sys.executable,
                "scripts/gpu_sanitize.py",
            ],
            240,
            env=env,
            log=log,
        )
        steps[f"sanitizer_{tool}"] = {"ok": ok, "seconds": secs, "tail": tail}
        save()
    steps["ncu_profile"], report["ncu_profile"] = profile(env, log)
    save()
    print(summary(report))
    print(f"wrote {out}")
    return 0 if all(s.get("ok") for s in steps.values()) else 1


def summary(report):
    lines = [
        f"gpu-check on {report['machine']['gpu']} (torch {report['machine']['torch']}, "
        f"driver {report['machine'].get('driver', '?')})"
    ]
    for name, step in report["steps"].items():
        extra = f" {step['counts']}" if "counts" in step else ""
        lines.append(
            f"  {name:<22} {'ok' if step.get('ok') else 'FAILED'} {step.get('seconds', '')}{extra}"
        )
    bench = report.get("benchmark")
    if bench:
        lines.append(f"  copy bandwidth {bench['copy_GBps']:.0f} GB/s (read + write)")
        for r in bench["rows"]:
            c = r["carafe"]
            line = (
                f"  {r['size']:>14} {r['dtype']:>8}: fwd {c['forward_us']:8.1f} us "
                f"({c['forward_pct_of_copy']:4.0f}% of copy), bwd {c['backward_us']:8.1f} us "
                f"({c['backward_pct_of_copy']:4.0f}%), fwd+bwd {c['forward_backward_us']:8.1f} us"
            )
            if "mmcv" in r:
                line += (
                    f"; mmcv/ours fwd {r['mmcv_over_carafe_forward']:.2f}x, fwd+bwd "
                    f"{r['mmcv_over_carafe_forward_backward']:.2f}x"
                )
            if "window_similarity" in r:
                w = r["window_similarity"]
                line += (
                    f"; window_similarity fwd {w['forward_us']:.1f} us, fwd+bwd "
                    f"{w['forward_backward_us']:.1f} us (unfold/ours "
                    f"{r['unfold_over_similarity_forward']:.2f}x, "
                    f"{r['unfold_over_similarity_forward_backward']:.2f}x)"
                )
            lines.append(line)
    for launch in report.get("ncu_profile") or []:
        lines.append(
            f"  ncu {short_kernel_name(launch['kernel'])}: "
            + ", ".join(f"{label} {value}" for label, value in ncu_highlights(launch["metrics"]))
        )
    return "\n".join(lines)


def short_kernel_name(name):
    """'void carafe::kernels::k<c10::Half, int, 5, 2>(const c10::Half *, ...)'
    -> 'k<Half, int, 5, 2>': ncu prints demangled names with their arguments."""
    name = re.sub(r"^void ", "", name.strip())
    depth, cut = 0, len(name)
    for i, ch in enumerate(name):  # the argument list: the first '(' outside <...>
        depth += {"<": 1, ">": -1}.get(ch, 0)
        if ch == "(" and depth == 0:
            cut = i
            break
    return name[:cut].replace("carafe::kernels::", "").replace("c10::", "")


# The ncu counters the summary shows, by metric name (whatever section ncu
# files them under; the unit, in brackets after the name, is shown as ncu
# gave it).
NCU_HIGHLIGHTS = (
    ("time", "Duration"),
    ("DRAM", "DRAM Throughput"),
    ("memory", "Memory Throughput"),
    ("SM", "Compute (SM) Throughput"),
    ("regs", "Registers Per Thread"),
    ("occupancy", "Achieved Occupancy"),
    ("issued/cycle", "Issued Warp Per Scheduler"),
    ("cycles/issue", "Warp Cycles Per Issued Instruction"),
)


def ncu_highlights(metrics):
    """[(label, 'value unit')] for the NCU_HIGHLIGHTS found in one launch's metrics."""
    found = []
    for label, metric in NCU_HIGHLIGHTS:
        for name, value in metrics.items():
            bare = name.split(": ", 1)[-1]
            if bare == metric or bare.startswith(metric + " ["):
                unit = bare[len(metric) + 2 : -1] if bare != metric else ""
                shown = f"{value:.4g}" if isinstance(value, float) else str(value)
                found.append((label, f"{shown}{'' if unit in ('', '%') else ' '}{unit}"))
                break
    return found


if __name__ == "__main__":
    sys.exit(main())
