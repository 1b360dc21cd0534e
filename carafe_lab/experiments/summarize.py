"""Results of every run under experiments/runs/ as a table (markdown + CSV)
and plots (loss curves, box AP per config over seeds), in experiments/results/,
beside the published COCO numbers (clearly labelled as such, with sources).
Runs of one config with different seeds are one row: mean ± std, n; each
CARAFE config is compared with its nearest baseline.

    python -m carafe_lab.experiments summarize [--runs DIR] [--out DIR]
"""

import csv
import json
import statistics
from pathlib import Path

from .. import paths as lab_paths
from ..published import MMDET, PAPER_VIA, SAPA
from ..readme import write_section
from ..stats import difference

# Published COCO val2017 numbers, R50-FPN 1x (box AP / mask AP), for context,
# as ../shared/published-numbers.md gives them with their sources.
PUBLISHED = [
    {
        "model": "Faster R-CNN",
        "upsampler": "nearest",
        "box_ap": 37.4,
        "mask_ap": None,
        "source": SAPA,
    },
    {
        "model": "Faster R-CNN",
        "upsampler": "CARAFE",
        "box_ap": 38.6,
        "mask_ap": None,
        "source": SAPA,
    },
    {
        "model": "Faster R-CNN",
        "upsampler": "CARAFE",
        "box_ap": 38.6,
        "mask_ap": None,
        "source": MMDET,
    },
    {
        "model": "Mask R-CNN",
        "upsampler": "nearest",
        "box_ap": 37.4,
        "mask_ap": 34.2,
        "source": PAPER_VIA,
    },
    {
        "model": "Mask R-CNN",
        "upsampler": "CARAFE (FPN)",
        "box_ap": 38.6,
        "mask_ap": 35.2,
        "source": PAPER_VIA,
    },
    {
        "model": "Mask R-CNN",
        "upsampler": "CARAFE",
        "box_ap": 39.3,
        "mask_ap": 35.8,
        "source": MMDET,
    },
]

COLUMNS = [
    "config",
    "run",
    "seed",
    "model",
    "upsampler",
    "dataset",
    "iterations",
    "box_ap",
    "ap50",
    "ap_s",
    "ap_m",
    "ap_l",
    "mask_ap",
    "wall_minutes",
    "peak_memory_mib",
    "device",
]
AP_KEYS = {
    "box_ap": "coco/bbox_mAP",
    "ap50": "coco/bbox_mAP_50",
    "ap_s": "coco/bbox_mAP_s",
    "ap_m": "coco/bbox_mAP_m",
    "ap_l": "coco/bbox_mAP_l",
    "mask_ap": "coco/segm_mAP",
}


def _describe(config_name):
    model = "Mask R-CNN" if config_name.startswith("mask") else "Faster R-CNN"
    upsampler = (
        "CARAFE (ours)"
        if "carafe" in config_name
        else "nearest"
        if "nearest" in config_name
        else "other"
    )
    dataset = "offline shapes" if "offline" in config_name else "COCO"
    return model, upsampler, dataset


class Damaged(ValueError):
    """A run file that cannot be read as the JSON it should be."""


def _read_json(path, kind=dict):
    if not path.exists():
        return kind()
    try:
        value = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise Damaged(f"{path}: {err}") from None
    if not isinstance(value, kind):
        raise Damaged(f"{path}: expected a JSON {kind.__name__}, got {type(value).__name__}")
    return value


def _jsonl(path):
    """The rows of a JSON-lines file; a truncated last line (a run killed
    while writing) is dropped, damage anywhere else raises Damaged."""
    if not path.exists():
        return []
    lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    rows = []
    for i, line in enumerate(lines):
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            if i == len(lines) - 1:
                break
            raise Damaged(f"{path}, line {i + 1}: {err}") from None
        if isinstance(row, dict):
            rows.append(row)
    return rows


def _scalars(run_dir):
    """mmengine's scalar logs of every session of the run, in order."""
    rows = []
    for path in sorted(run_dir.glob("*/vis_data/scalars.json")):
        rows += _jsonl(path)
    return rows


def _seed(run_dir):
    """The run's seed, from its config (the dump in its folder, or its
    group's config with its overrides: compact.rebuild)."""
    from .compact import rebuild

    try:
        return rebuild(run_dir).get("randomness", {}).get("seed")
    except FileNotFoundError:
        return None


def collect(runs=None, warn=print):
    """One row per run folder under runs/<config>/<run>/ (default: the lab's
    experiments/runs); a folder whose
    files are damaged is skipped with a one-line warning naming the file."""
    rows = []
    runs = Path(runs) if runs is not None else lab_paths.runs()
    for env_path in sorted(runs.glob("*/*/env.json")):
        run_dir = env_path.parent
        try:
            env, metrics, run = (
                _read_json(env_path),
                _read_json(run_dir / "metrics.json"),
                _read_json(run_dir / "run.json"),
            )
        except Damaged as err:
            warn(f"summarize: skipping {run_dir.name}: {err}")
            continue
        model, upsampler, dataset = _describe(run_dir.parent.name)

        def ap(key):
            value = metrics.get(key)
            return (
                None if not isinstance(value, (int, float)) or value < 0 else round(100 * value, 1)
            )

        memory = run.get("peak_cuda_mib") or run.get("peak_rss_mib")
        wall = run.get("wall_seconds")
        rows.append(
            {
                "config": run_dir.parent.name,
                "run": run_dir.name,
                "seed": _seed(run_dir),
                "model": model,
                "upsampler": upsampler,
                "dataset": dataset,
                "iterations": run.get("iter"),
                **{name: ap(key) for name, key in AP_KEYS.items()},
                "wall_minutes": round(wall / 60, 1) if isinstance(wall, (int, float)) else None,
                "peak_memory_mib": memory,
                "device": env.get("gpu") or env.get("device"),
                "_dir": run_dir,
            }
        )
    return rows


def _fmt(value):
    return "-" if value is None else str(value)


def _mean_std(values):
    values = [v for v in values if v is not None]
    if not values:
        return None
    mean = statistics.mean(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return mean, std, len(values)


def _ms(stat, digits=1):
    if stat is None:
        return "-"
    mean, std, n = stat
    return f"{mean:.{digits}f} ± {std:.{digits}f}" if n > 1 else f"{mean:.{digits}f}"


def group(rows):
    """{config: {"rows": [...], metric: (mean, std, n) or None}} over seeds."""
    out = {}
    for r in rows:
        out.setdefault(r["config"], {"rows": []})["rows"].append(r)
    for g in out.values():
        for key in list(AP_KEYS) + ["wall_minutes"]:
            g[key] = _mean_std([r[key] for r in g["rows"]])
    return out


def baseline_of(config):
    """The nearest-upsampling baseline config of a CARAFE config name."""
    return config.replace("fpn-carafe", "fpn-nearest") if "fpn-carafe" in config else None


def markdown(rows):
    groups = group(rows)
    lines = [
        "## Our runs (mean ± sample std over seeds)",
        "",
        "| model | upsampler | dataset | seeds | iterations | box AP | AP50 | APs | APm | "
        "APl | mask AP | wall min |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for g in groups.values():
        r0 = g["rows"][0]
        seeds = sorted(r["seed"] for r in g["rows"] if r["seed"] is not None)
        lines.append(
            f"| {r0['model']} | {r0['upsampler']} | {r0['dataset']} | "
            f"{len(g['rows'])} ({', '.join(map(str, seeds))}) | "
            f"{_fmt(r0['iterations'])} | {_ms(g['box_ap'])} | {_ms(g['ap50'])} | "
            f"{_ms(g['ap_s'])} | {_ms(g['ap_m'])} | {_ms(g['ap_l'])} | "
            f"{_ms(g['mask_ap'])} | {_ms(g['wall_minutes'])} |"
        )
    verdicts = []
    for config, g in groups.items():
        base = baseline_of(config)
        if base in groups:
            d = difference(g["box_ap"], groups[base]["box_ap"])
            if d is not None:
                diff, se, clear, p = d
                verdicts.append(
                    f"- {config} vs {base}: box AP {diff:+.1f} (standard error of the difference "
                    f"{se:.1f}, n = {g['box_ap'][2]} and {groups[base]['box_ap'][2]}; Welch's "
                    f"t-test p = {p:.2g}): "
                    + (
                        "resolved by these seeds (p < 0.05)."
                        if clear
                        else "not resolved by these seeds (p >= 0.05)."
                    )
                )
    if verdicts:
        lines += ["", *verdicts]
    lines += [
        "",
        "Offline-shapes numbers are short CPU runs from random initialisation on a "
        "small synthetic dataset (COCO's AP definitions; APl is '-' when the split has no "
        "large object): they compare upsamplers under equal conditions, not COCO "
        "accuracy. Wall time is elapsed time on the run's machine, whatever else it was "
        "doing.",
        "",
        "Every run:",
        "",
        "| config | seed | box AP | APs | APm | wall min | device | run |",
        "|---|---:|---:|---:|---:|---:|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['config']} | {_fmt(r['seed'])} | {_fmt(r['box_ap'])} | "
            f"{_fmt(r['ap_s'])} | {_fmt(r['ap_m'])} | {_fmt(r['wall_minutes'])} | "
            f"{_fmt(r['device'])} | `{r['run']}` |"
        )
    kernel = kernel_scores_markdown(rows)
    if kernel:
        lines += ["", "## CARAFE's FPN kernels against the ground truth", "", kernel]
    lines += [
        "",
        "## Published COCO numbers (not ours; R50-FPN, 1x schedule)",
        "",
        "| model | upsampler | box AP | mask AP | source |",
        "|---|---|---:|---:|---|",
    ]
    for p in PUBLISHED:
        lines.append(
            f"| {p['model']} | {p['upsampler']} | {p['box_ap']} | "
            f"{_fmt(p['mask_ap'])} | {p['source']} |"
        )
    return "\n".join(lines) + "\n"


def _ca_lines(runs, levels):
    """CA (carafe minus its phase mean, boundary mass) per level over runs:
    mean, 95% interval, the one-sample t-test of CA = 0 Holm-corrected over
    the levels (each run's two scores come from the same kernels: paired)."""
    from ..stats import ALPHA, holm, mean_ci, one_sample_p

    per = {
        lv: [r[lv]["carafe"]["boundary"] - r[lv]["phase_mean"]["boundary"] for r in runs if lv in r]
        for lv in levels
    }
    adjusted = holm([one_sample_p(v) for v in per.values()])
    lines = []
    for (lv, values), p in zip(per.items(), adjusted):
        mean, low, high = mean_ci(values)
        word = "resolved" if p < ALPHA else "not resolved"
        lines.append(
            f"{lv}: CA {mean:+.3f} [95% CI {low:+.3f}, {high:+.3f}] over "
            f"{len(values)} runs (Holm-corrected p {p:.2g}): {word}"
        )
    return lines


def kernel_scores_markdown(rows, warn=print):
    """Same-segment mass of the CARAFE FPN kernels (kernel_scores.json of
    each run, written by CarafeKernelScoreHook) over the runs of each config,
    beside nearest's and bilinear's: a markdown table, or "" when no run has
    scores."""
    from ..viz import aggregate_scores, compare, scores_markdown

    by_config = {}
    for r in rows:
        try:
            scores = _read_json(r["_dir"] / "kernel_scores.json")
        except Damaged as err:
            warn(f"summarize: skipping kernel scores of {r['run']}: {err}")
            continue
        if isinstance(scores.get("levels"), dict) and scores["levels"]:
            by_config.setdefault(r["config"], []).append(scores["levels"])
    out = []
    for config, runs in by_config.items():
        agg = aggregate_scores(runs)
        out += [
            f"`{config}`: share of each kernel's weight drawn from the output pixel's own "
            "object (or background), at output pixels within one pixel of an object "
            "boundary and elsewhere, on 32 held-out images; mean ± std over runs.",
            "",
            scores_markdown(agg).rstrip(),
            "",
        ]
        twin = [lv for lv in agg if "phase_mean" in agg[lv]]
        out += [f"- {line}" for line in _ca_lines(runs, twin)]
        out += [f"- {compare(agg, level)}" for level in agg if level not in twin]
        if not any("phase_mean" in agg[level] for level in agg):
            out += [
                "",
                "These runs scored their kernels before the content-agnostic "
                "controls existed: a difference from bilinear's fixed weights mixes the "
                "kernels' width with their dependence on the content, so it does not "
                "measure content adaptation. The `mechanism` study scores the same FPN's "
                "kernels against their own phase mean (CA; docs/ablations.md).",
            ]
        out.append("")
    return "\n".join(out).rstrip()


def plot(rows, out_dir):
    """loss_curves.png (training loss of every run, one colour per config)
    and ap_seeds.png (box AP per config: each seed a dot, mean ± std)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    groups = group(rows)
    colours = {config: f"C{i}" for i, config in enumerate(groups)}
    fig, ax = plt.subplots(figsize=(7, 4))
    for r in rows:
        train = [s for s in _scalars(r["_dir"]) if "loss" in s and "step" in s]
        if train:
            first = r is groups[r["config"]]["rows"][0]
            ax.plot(
                [s["step"] for s in train],
                [s["loss"] for s in train],
                lw=1,
                color=colours[r["config"]],
                alpha=0.8,
                label=r["config"] if first else None,
            )
    ax.set(
        xlabel="iteration",
        ylabel="training loss (sum of the detector's losses)",
        title="Training loss, every seed",
    )
    ax.legend(fontsize=7)
    fig.tight_layout()
    paths.append(out_dir / "loss_curves.png")
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 0.6 * max(len(groups), 1) + 1.4))
    for i, (config, g) in enumerate(groups.items()):
        aps = [r["box_ap"] for r in g["rows"] if r["box_ap"] is not None]
        ax.scatter(aps, [i] * len(aps), s=12, color="0.6", zorder=1)
        if g["box_ap"]:
            ax.errorbar(
                g["box_ap"][0],
                i,
                xerr=g["box_ap"][1],
                fmt="o",
                capsize=3,
                color=colours[config],
                zorder=2,
            )
    ax.set_yticks(range(len(groups)), list(groups))
    ax.invert_yaxis()
    ax.set(
        xlabel="box AP (COCO metric, %): mean ± 1 sample std over seeds; grey: seeds",
        title="Offline detection: box AP per config",
    )
    fig.tight_layout()
    paths.append(out_dir / "ap_seeds.png")
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)
    return paths


MARKERS = ("<!-- det:start -->", "<!-- det:end -->")
README_MARKERS = MARKERS  # the name callers of the README writer use
#: The docs page (docs/<name>.md under the lab root) holding the section.
DOCS_PAGE = "detection"


def docs_section(rows):
    """results.md's tables for the docs page, their headings one level below
    the page's "## Results"."""
    return markdown(rows).replace("## ", "### ")


def update_docs(table, page=None):
    """Put the results section between the det markers of page (default: the
    lab root's docs/detection.md)."""
    write_section(page or lab_paths.docs_page(DOCS_PAGE), MARKERS, table)


update_readme = update_docs  # --update-readme's name for it


def summarize(runs=None, out=None, plots=True, docs=False, readme=False):
    """Write results.md, results.csv (and plots) for every run, and with
    docs=True (or readme=True, the same) the docs page's results section;
    returns the paths written."""
    runs, out = Path(runs or lab_paths.runs()), Path(out or lab_paths.results())
    out.mkdir(parents=True, exist_ok=True)
    rows = collect(runs)
    (out / "results.md").write_text("# Detection results\n\n" + markdown(rows))
    if docs or readme:
        update_docs(docs_section(rows))
    with open(out / "results.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    paths = [out / "results.md", out / "results.csv"]
    if plots:
        paths += plot(rows, out)
    return paths
