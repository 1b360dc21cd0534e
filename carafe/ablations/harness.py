"""Runs a study on a task over seeds and writes
experiments/ablations/<study>/<task>/<timestamp>/{results.json, table.md, figure.png}."""

import json
import platform
import statistics
import time
from pathlib import Path

import torch

from ..timing import median_seconds
from ..upsamplers import build_upsampler, count_parameters
from . import paper
from .studies import STUDIES

REPO = Path(__file__).resolve().parents[2]
OUT = REPO / "experiments" / "ablations"
# task -> (module under carafe.ablations, its two headline metrics)
TASKS = {"sr": ("sr", ("psnr", "ssim")),
         "seg": ("seg", ("miou", "boundary_f")),
         "det": ("det", ("bbox_mAP", "bbox_mAP_50"))}


def task_module(task):
    import importlib
    return importlib.import_module(f"{__package__}.{TASKS[task][0]}")


def metrics_of(task):
    return TASKS[task][1]


def latency_ms(name, options, channels=64, size=64, device="cpu", repeat=10):
    """Median forward time of the upsampler alone on (1, channels, size, size)."""
    m = build_upsampler(name, channels, 2, **options).to(device).eval()
    x = torch.randn(1, channels, size, size, device=device)
    with torch.no_grad():
        return 1e3 * median_seconds(lambda: m(x), device, repeat)


def run_study(study, task="sr", quick=False, seeds=1, device="cpu", scale=2, out_root=None,
              steps=None, log=print):
    if study not in STUDIES:
        raise ValueError(f"unknown study {study!r}; choose from {sorted(STUDIES)}")
    if task not in TASKS:
        raise ValueError(f"task {task!r} is not available; available: {sorted(TASKS)}")
    out = Path(out_root or OUT) / study / task / time.strftime("%Y%m%d_%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    setting = "quick" if quick else "default"
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device: 'cuda' was asked for but torch.cuda.is_available() is False")
    metrics = metrics_of(task)
    runner = task_module(task)
    rows = []
    variants = STUDIES[study]
    started = time.perf_counter()
    for i, (label, name, options) in enumerate(variants):
        module = build_upsampler(name, 256, 2, **options)
        row = {"label": label, "upsampler": name, "options": options,
               "params_c256_s2": count_parameters(module),
               "flops_per_pixel_c256_s2": module.flops_per_pixel(),
               "latency_ms_c64_64px": latency_ms(name, options, device=device), "seeds": []}
        for seed in range(seeds):
            # det runs keep their mmengine folders (logs, config) beside the results
            extra = ({"work_dir": out / "runs" / f"{i:02d}_{label}_seed{seed}"}
                     if task == "det" else {})
            result = runner.run(name, options, scale=scale, seed=seed, setting=setting,
                                device=device, steps=steps, **extra)
            row["seeds"].append({"seed": seed, **result})
            log(f"[{study}/{task}] {i + 1}/{len(variants)} {label} seed {seed}: "
                + ", ".join(f"{m} {result[m]:.4f}" for m in metrics)
                + f" ({time.perf_counter() - started:.0f} s so far)")
        for m in metrics:
            values = [s[m] for s in row["seeds"]]
            row[f"{m}_mean"] = statistics.mean(values)
            row[f"{m}_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
        rows.append(row)
    results = {"study": study, "task": task, "setting": setting, "scale": scale,
               "seeds": seeds, "device": device, "torch": torch.__version__,
               "machine": platform.platform(), "rows": rows,
               "paper_source": paper.SOURCE}
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "table.md").write_text(table(results))
    figure(results, out / "figure.png")
    return out


def table(results):
    m0, m1 = metrics_of(results["task"])
    lines = [f"# {results['study']} on {results['task']} (x{results['scale']}, "
             f"{results['setting']} setting, {results['seeds']} seed(s), {results['device']})",
             "", f"| variant | params (C=256) | FLOPs/px (C=256) | latency ms | {m0} | {m1} | "
             "paper: Faster R-CNN box AP |", "|---|---:|---:|---:|---:|---:|---|"]
    for r in results["rows"]:
        lines.append(
            f"| {r['label']} | {r['params_c256_s2']:,} | {r['flops_per_pixel_c256_s2']:,} | "
            f"{r['latency_ms_c64_64px']:.2f} | {r[f'{m0}_mean']:.3f} ± {r[f'{m0}_std']:.3f} | "
            f"{r[f'{m1}_mean']:.4f} ± {r[f'{m1}_std']:.4f} | "
            f"{paper.paper_cell(results['study'], r['label'])} |")
    lines += ["", f"Paper column: {results['paper_source']}; entries marked "
              "'not verified' could not be checked against the paper here."]
    return "\n".join(lines) + "\n"


def figure(results, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    m0 = metrics_of(results["task"])[0]
    rows = results["rows"]
    fig, ax = plt.subplots(figsize=(max(5, 0.9 * len(rows)), 3.5))
    ax.bar(range(len(rows)), [r[f"{m0}_mean"] for r in rows],
           yerr=[r[f"{m0}_std"] for r in rows], capsize=3)
    ax.set_xticks(range(len(rows)), [r["label"] for r in rows], rotation=30, ha="right")
    lo = min(r[f"{m0}_mean"] - r[f"{m0}_std"] for r in rows)
    hi = max(r[f"{m0}_mean"] + r[f"{m0}_std"] for r in rows)
    ax.set_ylim(lo - 0.1 * (hi - lo + 1e-6), hi + 0.1 * (hi - lo + 1e-6))
    ax.set(ylabel=m0.upper(), title=f"{results['study']} ({results['task']}, x{results['scale']})")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
