"""Render the saved benchmark results (benchmarks/results/bench_op_*.json,
bench_export_*.json and bench_convert_*.json, quick runs excluded) as markdown
tables, and optionally write them into the docs: docs/kernels.md between its
`<!-- bench:start -->` / `<!-- bench:end -->` markers, docs/export.md and
docs/convert.md between theirs.

    python benchmarks/report.py [--update-docs]    (--update-readme: the same)
"""

import argparse
import json
import sys
from pathlib import Path

from carafe_lab.readme import write_section

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
BENCH_PAGE = ROOT / "docs" / "kernels.md"
EXPORT_PAGE = ROOT / "docs" / "export.md"
START, END = "<!-- bench:start -->", "<!-- bench:end -->"
EXPORT_MARKERS = ("<!-- export:start -->", "<!-- export:end -->")
CONVERT_PAGE = ROOT / "docs" / "convert.md"
CONVERT_MARKERS = ("<!-- convert:start -->", "<!-- convert:end -->")


def load_results(folder=RESULTS):
    runs = []
    for path in sorted(folder.glob("bench_op_*.json")):
        data = json.loads(path.read_text())
        if not data.get("quick"):
            runs.append((path, data))
    return runs


def mib(n):
    return f"{n / 2**20:.1f}"


def render(runs):
    parts = []
    for path, data in runs:
        m = data["machine"]
        where = (
            f"{m['gpu']} (CUDA {m.get('cuda')})"
            if data["device"] == "cuda"
            else f"{m['cpu']}, {m['torch_threads']} threads"
        )
        parts.append(
            f"**{data['device'].upper()}: {where}**, torch {m['torch']}, "
            f"k={data['k']}, G={data['group_size']}, s={data['scale_factor']} "
            f"(`benchmarks/results/{path.name}`, commit {m.get('git_commit', '?')})\n"
        )
        parts.append(
            "| input -> x2 | method | forward ms | fwd+bwd ms | fwd+bwd speed-up "
            "of carafe | forward peak extra MiB (output MiB) |"
        )
        parts.append("|---|---|---:|---:|---:|---:|")
        for row in data["results"]:
            ratio = data["ratios"].get(row["size"], {}).get(row["method"])
            speedup = (
                "1.0x"
                if row["method"] == "carafe"
                else (f"{ratio['forward_backward_time']:.1f}x" if ratio else "")
            )
            parts.append(
                f"| {row['size']} | {row['method']} | {row['forward_ms']:.2f} | "
                f"{row['forward_backward_ms']:.2f} | {speedup} | "
                f"{mib(row['forward_peak_extra_bytes'])} ({mib(row['output_bytes'])}) |"
            )
        if data.get("roofline"):
            parts.append("")
            parts.append(roofline_line(data))
        if data.get("reused_memory"):
            parts.append("")
            parts.append(reused_memory_line(data))
        if data.get("dtypes"):
            parts.append("")
            parts.append(dtypes_line(data))
        if data.get("window_similarity"):
            parts.append("")
            parts.append(similarity_line(data))
        parts.append("")
    return "\n".join(parts).rstrip() + "\n"


def _shares(x):
    return (
        f"{x['ms']:.2f} ms, {x['pct_of_sgemm']:.0f}% of the compute ceiling "
        f"({x['sgemm_gflops']:.0f} GFLOP/s), {x['pct_of_roofline']:.0f}% of the roofline "
        f"({x['bound']}-bound; copy {x['copy_GBps']:.1f} GB/s)"
    )


def roofline_line(data):
    """One sentence: carafe on the roofline measured in rounds (bench_op.py)."""
    return (
        "Roofline of this run, in rounds interleaved with carafe's calls (a float32 "
        "2048x2048 matrix multiply for the compute ceiling, a 256 MiB copy, read + write, "
        "for the memory ceiling, one carafe call; its FLOP 2k² per output element, 3x that "
        "forward+backward; its floor the larger of FLOP at the first and the bytes it must "
        "move at the second; medians over rounds): "
        + "; ".join(
            f"{size}: forward {_shares(r['forward'])}, fwd+bwd {_shares(r['forward_backward'])}"
            for size, r in data["roofline"].items()
        )
        + "."
    )


def reused_memory_line(data):
    """One sentence: carafe and its strongest peer timed again with freed
    memory kept for reuse, and carafe's roofline rounds under it."""
    reused = data["reused_memory"]
    parts = []
    for size, r in reused["roofline"].items():
        row = next(x for x in reused["results"] if x["size"] == size and x["method"] == "carafe")
        peer = reused["ratios"].get(size, {}).get("compiled")
        parts.append(
            f"{size}: carafe forward {row['forward_ms']:.2f} ms, fwd+bwd "
            f"{row['forward_backward_ms']:.2f} ms"
            + (
                f" (torch.compile peer {peer['forward_time']:.1f}x / "
                f"{peer['forward_backward_time']:.1f}x slower)"
                if peer
                else ""
            )
            + f"; in rounds, forward {_shares(r['forward'])}, fwd+bwd "
            f"{_shares(r['forward_backward'])}"
        )
    return (
        "Timed again in the same run with freed memory kept for reuse ("
        + reused["how"]
        + "), so that a fresh output is not a fresh mapping whose pages the kernel zeroes "
        "on first write: " + "; ".join(parts) + "."
    )


def dtypes_line(data):
    """One sentence: carafe's time per dtype as a multiple of float32's (timed
    in rounds), and the compiled peer in bfloat16."""
    parts = []
    for size, res in data["dtypes"].items():
        each = ", ".join(
            f"{name} {row['forward_ms']:.2f} / {row['forward_backward_ms']:.2f} ms "
            f"({row['forward_vs_float32']:.2f}x / {row['forward_backward_vs_float32']:.2f}x)"
            for name, row in res.items()
            if name != "compiled_bfloat16"
        )
        peer = res.get("compiled_bfloat16")
        parts.append(
            f"{size}: {each}"
            + (
                f"; torch.compile peer in bfloat16 {peer['forward_vs_carafe_bfloat16']:.1f}x / "
                f"{peer['forward_backward_vs_carafe_bfloat16']:.1f}x slower than carafe's bfloat16"
                if peer
                else ""
            )
        )
    return (
        "Per dtype, forward / fwd+bwd, in rounds that call each dtype in turn (times as a "
        "multiple of float32's): " + "; ".join(parts) + "."
    )


def similarity_line(data):
    """One sentence: carafe.window_similarity (query s*H x s*W, key H x W of
    the size named) against its compiled and unfold peers, and its roofline."""
    parts = []
    for size, res in data["window_similarity"].items():
        ours = res["results"]["window_similarity"]
        peers = ", ".join(
            f"{name} {r['forward_time']:.1f}x / {r['forward_backward_time']:.1f}x slower"
            for name, r in res["ratios"].items()
        )
        roof = res.get("roofline")
        parts.append(
            f"{size}: forward {ours['forward_ms']:.2f} ms, fwd+bwd "
            f"{ours['forward_backward_ms']:.2f} ms ({peers})"
            + (
                f"; in rounds, forward {_shares(roof['forward'])}, fwd+bwd "
                f"{_shares(roof['forward_backward'])}"
                if roof
                else ""
            )
        )
    return (
        "`carafe.window_similarity` (a query of the output's size, a key of the input's; "
        "its FLOP as carafe's, its byte floor its own), forward / fwd+bwd, with the "
        "torch.compile'd pure-PyTorch spec and the eager unfold spec as peers: "
        + "; ".join(parts)
        + "."
    )


def update_docs(text, page=BENCH_PAGE):
    return write_section(page, (START, END), text)


update_readme = update_docs  # --update-readme's name for it


def load_export_results(folder=RESULTS, prefix="bench_export_"):
    return [
        (path, json.loads(path.read_text()))
        for path in sorted(folder.glob(f"{prefix}*.json"))
        if not json.loads(path.read_text()).get("quick")
    ]


def _run_line(path, data, software=""):
    """The line above a CPU run's table: machine, threads, software, the file
    and the commit it was measured at."""
    m = data["machine"]
    return (
        f"**CPU: {m['cpu']}, {data['threads']} threads**, torch {m['torch']}{software} "
        f"(`benchmarks/results/{path.name}`, commit {m.get('git_commit', '?')})\n"
    )


def load_convert_results(folder=RESULTS):
    return load_export_results(folder, "bench_convert_")


def render_convert(runs):
    """The before/after table of bench_convert.py's results."""
    parts = []
    for path, data in runs:
        parts.append(_run_line(path, data))
        parts.append(
            "| model | replaced (channels) | params | GFLOPs | latency ms | "
            "converted / original latency [range over rounds] | share of roofline |"
        )
        parts.append("|---|---|---:|---:|---:|---:|---:|")
        for r in data["results"]:
            replaced = ", ".join(
                f"`{x['name']}` ({'/'.join(str(c) for c in x['channels'])})" for x in r["replaced"]
            )
            ratios = r["latency_ratio_rounds"]
            roof = r["roofline"]
            parts.append(
                f"| {r['model']} {r['input'][-2]}x{r['input'][-1]} | {replaced} | "
                f"{r['params_before']:,} -> {r['params_after']:,} (+{r['params_added']:,}) | "
                f"{r['gflops_before']:.2f} -> {r['gflops_after']:.2f} "
                f"(+{r['gflops_added']:.2f}) | {r['ms_before']:.1f} -> {r['ms_after']:.1f} | "
                f"{r['latency_ratio']:.3f}x [{min(ratios):.3f}, {max(ratios):.3f}] | "
                f"{roof['original']['pct_of_roofline']:.0f}% -> "
                f"{roof['converted']['pct_of_roofline']:.0f}% |"
            )
        parts.append("")
    return "\n".join(parts).rstrip() + "\n"


def render_export(runs):
    """The ONNX Runtime vs PyTorch eager table of bench_export.py's results."""
    parts = []
    for path, data in runs:
        parts.append(
            _run_line(path, data, f", ONNX Runtime {data['machine'].get('onnxruntime', '?')}")
        )
        parts.append(
            "| model | PyTorch eager (our CPU op) ms | ONNX Runtime ms | "
            "ONNX Runtime / eager | max abs difference |"
        )
        parts.append("|---|---:|---:|---:|---:|")
        for r in data["results"]:
            parts.append(
                f"| {r['model']} | {r['pytorch_eager_ms']:.2f} | "
                f"{r['onnxruntime_ms']:.2f} | {r['onnxruntime_over_eager']:.2f}x | "
                f"{r['max_abs_diff']:.1e} |"
            )
        parts.append("")
    return "\n".join(parts).rstrip() + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--update-docs",
        "--update-readme",
        dest="update_docs",
        action="store_true",
        help="write the tables into docs/kernels.md, docs/export.md and docs/convert.md",
    )
    args = parser.parse_args(argv)
    text = render(load_results())
    export = render_export(load_export_results())
    convert = render_convert(load_convert_results())
    print(text)
    print(export)
    print(convert)
    if args.update_docs:
        update_docs(text)
        write_section(EXPORT_PAGE, EXPORT_MARKERS, export)
        write_section(CONVERT_PAGE, CONVERT_MARKERS, convert)
        print(
            f"updated {BENCH_PAGE.relative_to(ROOT)}, {EXPORT_PAGE.relative_to(ROOT)} "
            f"and {CONVERT_PAGE.relative_to(ROOT)}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
