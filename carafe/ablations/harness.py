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
               "published_source": paper.SOURCE if paper.has_column(study) else None}
    if task == "sr":
        results["psnr_channel"] = "Y"  # results written before this key were RGB PSNR
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "table.md").write_text(table(results))
    figure(results, out / "figure.png")
    return out


def table(results):
    m0, m1 = metrics_of(results["task"])
    published = paper.has_column(results["study"])
    lines = [f"# {results['study']} on {results['task']} (x{results['scale']}, "
             f"{results['setting']} setting, {results['seeds']} seed(s), {results['device']})",
             "", f"| variant | params (C=256) | FLOPs/px (C=256) | latency ms | {m0} | {m1} |"
             + (f" {paper.COLUMN} |" if published else ""),
             "|---|---:|---:|---:|---:|---:|" + ("---:|" if published else "")]
    for r in results["rows"]:
        lines.append(
            f"| {r['label']} | {r['params_c256_s2']:,} | {r['flops_per_pixel_c256_s2']:,} | "
            f"{r['latency_ms_c64_64px']:.2f} | {r[f'{m0}_mean']:.3f} ± {r[f'{m0}_std']:.3f} | "
            f"{r[f'{m1}_mean']:.4f} ± {r[f'{m1}_std']:.4f} |"
            + (f" {paper.paper_cell(results['study'], r['label'])} |" if published else ""))
    lines += ["", f"Mean ± sample standard deviation over {results['seeds']} seed(s)."]
    if published:
        lines.append("Published column (not ours; COCO, R50-FPN): "
                     + "; ".join(paper.sources(results["study"])) + ".")
    return "\n".join(lines) + "\n"


def figure(results, path):
    """Dot plot of the first metric per variant (mean, error bars: ± one
    sample std over seeds; the seeds as small dots), against the first
    variant (the baseline) as a dashed line. Saved to path."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    m0 = metrics_of(results["task"])[0]
    rows = results["rows"]
    fig, ax = plt.subplots(figsize=(6.5, 0.45 * len(rows) + 1.4))
    for i, r in enumerate(rows):
        ax.scatter([s[m0] for s in r["seeds"]], [i] * len(r["seeds"]), s=8, color="0.6", zorder=1)
        ax.errorbar(r[f"{m0}_mean"], i, xerr=r[f"{m0}_std"], fmt="o", color="C0", capsize=3,
                    zorder=2)
    ax.axvline(rows[0][f"{m0}_mean"], color="0.3", ls="--", lw=1,
               label=f"{rows[0]['label']} (baseline) mean")
    ax.set_yticks(range(len(rows)), [r["label"] for r in rows])
    ax.invert_yaxis()
    unit = {"psnr": "PSNR, dB (Y channel)", "miou": "mIoU (fraction)",
            "bbox_mAP": "box AP (fraction)"}.get(m0, m0)
    ax.set(xlabel=f"{unit}: mean ± 1 std over {results['seeds']} seed(s), grey: seeds",
           title=f"{results['study']} ({results['task']}, x{results['scale']})")
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
