"""Results of every run under experiments/runs/ as a table (markdown + CSV)
and plots (loss and AP curves), in experiments/results/, beside the paper's
and mmdetection's published COCO numbers (clearly labelled as such).

    python -m carafe.experiments summarize [--runs DIR] [--out DIR]
"""

import csv
import json
from pathlib import Path

from .._readme import write_section

REPO = Path(__file__).resolve().parents[2]
RUNS = REPO / "experiments" / "runs"
RESULTS = REPO / "experiments" / "results"

# Published COCO val2017 numbers, R50-FPN 1x (box AP / mask AP), for context.
PUBLISHED = [
    {"model": "Faster R-CNN", "upsampler": "CARAFE", "box_ap": 37.8, "mask_ap": None,
     "source": "CARAFE v1 release README (mmdetection v1)"},
    {"model": "Faster R-CNN", "upsampler": "CARAFE", "box_ap": 38.6, "mask_ap": None,
     "source": "mmdetection 3 configs/carafe README"},
    {"model": "Mask R-CNN", "upsampler": "CARAFE", "box_ap": 38.6, "mask_ap": 35.6,
     "source": "CARAFE v1 release README (mmdetection v1)"},
    {"model": "Mask R-CNN", "upsampler": "CARAFE", "box_ap": 39.3, "mask_ap": 35.8,
     "source": "mmdetection 3 configs/carafe README"},
]

COLUMNS = ["config", "run", "model", "upsampler", "dataset", "iterations", "box_ap", "mask_ap",
           "wall_minutes", "peak_memory_mib", "device"]


def _describe(config_name):
    model = "Mask R-CNN" if config_name.startswith("mask") else "Faster R-CNN"
    upsampler = ("CARAFE (ours)" if "carafe" in config_name else
                 "nearest" if "nearest" in config_name else "other")
    dataset = "offline shapes" if "offline" in config_name else "COCO"
    return model, upsampler, dataset


def _read_json(path):
    return json.loads(path.read_text()) if path.exists() else {}


def _scalars(run_dir):
    """mmengine's scalar logs of every session of the run, in order."""
    rows = []
    for path in sorted(run_dir.glob("*/vis_data/scalars.json")):
        rows += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return rows


def collect(runs=RUNS):
    rows = []
    for env_path in sorted(Path(runs).glob("*/*/env.json")):
        run_dir = env_path.parent
        env, metrics, run = (_read_json(env_path), _read_json(run_dir / "metrics.json"),
                             _read_json(run_dir / "run.json"))
        model, upsampler, dataset = _describe(run_dir.parent.name)

        def ap(key):
            value = metrics.get(key)
            return None if value is None or value < 0 else round(100 * value, 1)

        memory = run.get("peak_cuda_mib") or run.get("peak_rss_mib")
        rows.append({
            "config": run_dir.parent.name, "run": run_dir.name, "model": model,
            "upsampler": upsampler, "dataset": dataset, "iterations": run.get("iter"),
            "box_ap": ap("coco/bbox_mAP"), "mask_ap": ap("coco/segm_mAP"),
            "wall_minutes": (round(run["wall_seconds"] / 60, 1) if "wall_seconds" in run
                             else None),
            "peak_memory_mib": memory, "device": env.get("gpu") or env.get("device"),
            "_dir": run_dir,
        })
    return rows


def _fmt(value):
    return "-" if value is None else str(value)


def markdown(rows):
    lines = ["## Our runs", "",
             "| model | upsampler | dataset | iterations | box AP | mask AP | wall min | "
             "peak MiB | device | run |", "|---|---|---|---:|---:|---:|---:|---:|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['upsampler']} | {r['dataset']} | "
                     f"{_fmt(r['iterations'])} | {_fmt(r['box_ap'])} | {_fmt(r['mask_ap'])} | "
                     f"{_fmt(r['wall_minutes'])} | {_fmt(r['peak_memory_mib'])} | "
                     f"{_fmt(r['device'])} | `{r['config']}/{r['run']}` |")
    lines += ["", "Offline-shapes numbers come from short CPU runs from random initialisation "
              "on a tiny synthetic dataset: they show the pipeline works and compare "
              "upsamplers under equal conditions, not COCO accuracy. Single runs (one seed): "
              "differences of an AP point or two are within run-to-run noise here. Wall "
              "time is elapsed time on the run's machine, whatever else it was doing.", "",
              "## Published COCO numbers (not ours; R50-FPN, 1x schedule)", "",
              "| model | upsampler | box AP | mask AP | source |", "|---|---|---:|---:|---|"]
    for p in PUBLISHED:
        lines.append(f"| {p['model']} | {p['upsampler']} | {p['box_ap']} | "
                     f"{_fmt(p['mask_ap'])} | {p['source']} |")
    return "\n".join(lines) + "\n"


def plot(rows, out_dir):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    paths = []
    fig, ax = plt.subplots(figsize=(7, 4))
    for r in rows:
        train = [s for s in _scalars(r["_dir"]) if "loss" in s and "step" in s]
        if train:
            ax.plot([s["step"] for s in train], [s["loss"] for s in train],
                    label=f"{r['config']} ({r['run']})")
    ax.set(xlabel="iteration", ylabel="training loss", title="Loss")
    ax.legend(fontsize=7)
    fig.tight_layout()
    paths.append(out_dir / "loss_curves.png")
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 4))
    for r in rows:
        evals = [json.loads(line) for line in
                 (r["_dir"] / "metrics.jsonl").read_text().splitlines()
                 if line.strip()] if (r["_dir"] / "metrics.jsonl").exists() else []
        evals = [e for e in evals if e.get("split") == "val" and "coco/bbox_mAP" in e]
        for key, style in (("coco/bbox_mAP", "-o"), ("coco/segm_mAP", "--s")):
            points = [(e["epoch"], 100 * e[key]) for e in evals if key in e]
            if points:
                ax.plot(*zip(*points), style, label=f"{r['config']} {key.split('/')[1]}")
    ax.set(xlabel="epoch", ylabel="AP", title="Validation AP")
    ax.legend(fontsize=7)
    fig.tight_layout()
    paths.append(out_dir / "ap_curves.png")
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)
    return paths


README = REPO / "README.md"
README_MARKERS = ("<!-- det:start -->", "<!-- det:end -->")


def update_readme(table, readme=README):
    """Put the results table between the README's det markers."""
    write_section(readme, README_MARKERS, table)


def summarize(runs=None, out=None, plots=True, readme=False):
    """Write results.md, results.csv (and plots) for every run, and with
    readme=True the README's results section; returns the paths written."""
    runs, out = Path(runs or RUNS), Path(out or RESULTS)
    out.mkdir(parents=True, exist_ok=True)
    rows = collect(runs)
    table = markdown(rows).replace("## ", "#### ")
    (out / "results.md").write_text("# Detection results\n\n" + markdown(rows))
    if readme:
        update_readme(table)
    with open(out / "results.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    paths = [out / "results.md", out / "results.csv"]
    if plots:
        paths += plot(rows, out)
    return paths
