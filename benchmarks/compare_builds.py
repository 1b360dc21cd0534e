"""Two builds of the op timed together: a change to the kernels is checked
for a regression against the build before it on the same machine, in the
same minutes (this VM's speed drifts by up to 2x over minutes, so builds
timed in different runs cannot be compared).

    python benchmarks/compare_builds.py OLD_TREE NEW_TREE [--rounds 6] [--out FILE]

Each tree is a checkout with its extension built in place (carafe/_C*.so).
Rounds alternate old, new, old, new, ...; each round is a fresh process
(PYTHONPATH=tree) that times forward and forward+backward of the benchmark
sizes (k=5, x2) in float32 and bfloat16, median of --repeat calls after a
warm-up. Reports per case the median over rounds of each build and
new/old, and the bit-identity of the two builds' outputs on those inputs.
Writes JSON with the machine description under benchmarks/results/.
"""

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
SIZES = {"2x256x50x76": (2, 256, 50, 76), "2x256x100x152": (2, 256, 100, 152)}
DTYPES = ("float32", "bfloat16")

#: Run in each round's process: prints {case: [forward s, fwd+bwd s]} and
#: a digest of each case's outputs.
ROUND = r"""
import hashlib, json, sys, time
import torch
import carafe
from carafe.reference import random_inputs
repeat, sizes, dtypes = int(sys.argv[1]), json.loads(sys.argv[2]), sys.argv[3].split(",")
torch.set_num_threads(int(sys.argv[4]))
out = {"file": carafe.__file__}
for name, (N, C, H, W) in sizes.items():
    for dtype in dtypes:
        f, m, go = random_inputs(N, C, H, W, 5, 1, 2, dtype=getattr(torch, dtype),
                                 with_grad_output=True, seed=0)
        def fwd():
            return carafe.carafe(f, m, 5, 1, 2)
        def both():
            return (fwd(), *torch.ops.carafe.carafe_backward(go, f, m, 5, 1, 2))
        results = both()
        digest = hashlib.sha256(b"".join(t.contiguous().view(torch.uint8).numpy().tobytes()
                                         for t in results)).hexdigest()
        times = []
        for fn in (fwd, both):
            fn()
            samples = []
            for _ in range(repeat):
                t0 = time.perf_counter()
                fn()
                samples.append(time.perf_counter() - t0)
            samples.sort()
            times.append(samples[len(samples) // 2])
        out[f"{name} {dtype}"] = {"forward": times[0], "forward_backward": times[1],
                                  "digest": digest}
print(json.dumps(out))
"""


def one_round(tree, repeat, sizes, dtypes, threads):
    env = dict(os.environ, PYTHONPATH=str(tree))
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            ROUND,
            str(repeat),
            json.dumps(sizes),
            ",".join(dtypes),
            str(threads),
        ],
        env=env,
        capture_output=True,
        text=True,
        cwd=str(tree),
        check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(f"round in {tree} failed:\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    if Path(result.pop("file")).resolve().parent.parent != Path(tree).resolve():
        raise SystemExit(f"{tree}: imported carafe from elsewhere; build it in place there")
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("old", type=Path)
    parser.add_argument("new", type=Path)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="the smaller size only")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    for name, value in (
        ("rounds", args.rounds),
        ("repeat", args.repeat),
        ("threads", args.threads),
    ):
        if value < 1:
            parser.error(f"--{name}: expected an integer >= 1, got {value}")
    sizes = dict(list(SIZES.items())[:1]) if args.quick else SIZES
    runs = {"old": [], "new": []}
    for r in range(args.rounds):
        for which in ("old", "new"):
            runs[which].append(
                one_round(getattr(args, which), args.repeat, sizes, DTYPES, args.threads)
            )
        print(f"round {r + 1}/{args.rounds} done", flush=True)
    report = {}
    for case in runs["old"][0]:
        row = {
            "identical_outputs": runs["old"][0][case]["digest"] == runs["new"][0][case]["digest"]
        }
        for what in ("forward", "forward_backward"):
            old = statistics.median(x[case][what] for x in runs["old"])
            new = statistics.median(x[case][what] for x in runs["new"])
            row[f"{what}_ms_old"], row[f"{what}_ms_new"] = 1e3 * old, 1e3 * new
            row[f"{what}_new_over_old"] = new / old
            # the same ratio per round: how far the drift moves it
            ratios = [n[case][what] / o[case][what] for o, n in zip(runs["old"], runs["new"])]
            row[f"{what}_ratio_per_round"] = ratios
        report[case] = row
        print(
            f"{case}: forward {row['forward_ms_old']:.2f} -> {row['forward_ms_new']:.2f} ms "
            f"({row['forward_new_over_old']:.3f}x), fwd+bwd {row['forward_backward_ms_old']:.2f}"
            f" -> {row['forward_backward_ms_new']:.2f} ms "
            f"({row['forward_backward_new_over_old']:.3f}x; per round "
            f"{min(row['forward_backward_ratio_per_round']):.3f}-"
            f"{max(row['forward_backward_ratio_per_round']):.3f}); outputs "
            + ("bit-identical" if row["identical_outputs"] else "DIFFER")
        )
    sys.path.insert(0, str(args.new))
    from carafe_lab.environment import describe

    info = describe("cpu")
    name = re.sub(r"[^a-z0-9]+", "-", f"{info['cpu']}-{info['cpu_count']}c".lower()).strip("-")
    out = args.out or RESULTS / f"compare_builds_cpu_{name}{'_quick' if args.quick else ''}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    commits = {
        which: describe("cpu", commit_of=getattr(args, which)).get("git_commit")
        for which in ("old", "new")
    }
    out.write_text(
        json.dumps(
            {
                "machine": info,
                "old": str(args.old),
                "new": str(args.new),
                "commits": commits,
                "rounds": args.rounds,
                "repeat": args.repeat,
                "threads": args.threads,
                "cases": report,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {out}")
    return 0 if all(r["identical_outputs"] for r in report.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
