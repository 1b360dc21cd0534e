"""Reading ablation results back: every results.json under a root, the latest
run of each (study, task, setting), the README summary table and the
speed / parameters vs quality trade-off figure.

    python -m carafe_lab.ablations report [--root DIR] [--update-readme]
"""

import json
import statistics
import sys
from pathlib import Path

from .. import paths
from ..readme import write_section
from ..stats import difference
from . import paper
from .harness import task_of

README_MARKERS = ("<!-- abl:start -->", "<!-- abl:end -->")


def _warn(message):
    print(message, file=sys.stderr)


def load_results(root=None, warn=_warn):
    """Every complete results.json under root (default: the lab's
    experiments/ablations), oldest first; each dict gets
    "_dir". A damaged file, or a study still running or interrupted
    ("complete": false), is skipped with a one-line warning naming it."""
    out = []
    root = Path(root) if root is not None else paths.ablations()
    for path in sorted(root.glob("*/*/*/results.json")):
        try:
            results = json.loads(path.read_text())
            if not isinstance(results, dict):
                raise ValueError(f"expected a JSON object, got {type(results).__name__}")
            for key in ("study", "task", "setting", "rows"):
                if key not in results:
                    raise ValueError(f"no {key!r} entry")
        except (OSError, ValueError) as e:
            warn(f"report: skipping {path}: {type(e).__name__}: {e}")
            continue
        if results.get("complete") is False:
            warn(f"report: skipping {path}: the study is incomplete (resume it with "
                 f"python -m carafe_lab.ablations resume {path.parent})")
            continue
        results["_dir"] = path.parent
        out.append(results)
    return out


def latest(results, setting="default"):
    """{(study, task): the latest results at that setting}."""
    chosen = {}
    for r in results:  # oldest first, so later runs replace earlier ones
        if r["setting"] == setting:
            chosen[(r["study"], r["task"])] = r
    return chosen


def best_label(results):
    m0 = task_of(results["task"]).metrics[0]
    return max(results["rows"], key=lambda row: row[f"{m0}_mean"])["label"]


def versus_baseline(results, row, metric):
    """(difference of row's mean from the first row's, its standard error,
    whether Welch's t-test resolves it, p) of metric over seeds, in the units
    shown (stats.difference); None for the baseline itself or single-seed rows."""
    spec = task_of(results["task"])
    base = results["rows"][0]
    if row is base:
        return None

    def stat(r):
        values = [spec.shown(metric, s[metric]) for s in r["seeds"]]
        std = statistics.stdev(values) if len(values) > 1 else 0.0
        return statistics.mean(values), std, len(values)
    return difference(stat(row), stat(base))


def summary_markdown(root=None):
    """The README section: one table per (study, task) at the default setting,
    each variant against the first (the baseline): the difference of means,
    its standard error, and whether Welch's t-test resolves it at 5%."""
    chosen = latest(load_results(root))
    if not chosen:
        return "No default-setting ablation results yet.\n"
    lines = []
    for (study, task), r in sorted(chosen.items()):
        spec = task_of(task)
        m0, m1 = spec.metrics
        shown, label = spec.shown, spec.label
        run = paths.relative(r["_dir"])
        published = paper.has_column(study, task)
        unit = " (%)" if m0 in spec.percent else ""
        base = r["rows"][0]["label"]
        lines += [f"**{study}** on `{task}` (x{r['scale']}, {r['seeds']} seeds, mean ± std; "
                  f"`{run}`)", "",
                  (f"| variant | params (C=256) | FLOPs/px (C=256) | {label(r, m0)}{unit} | "
                   f"{m1}{unit} | Δ {label(r, m0)} vs {base} | "
                   + "".join(f"{header} | " for header, _ in spec.columns)
                   + (f"{paper.COLUMN} |" if published else "")).rstrip(),
                  "|---|---:|---:|---:|---:|---:|" + "---:|" * len(spec.columns)
                  + ("---:|" if published else "")]
        best = best_label(r)
        digits0, digits1 = (1, 1) if m0 in spec.percent else (3, 4)
        for row in r["rows"]:
            name = f"**{row['label']}**" if row["label"] == best else row["label"]
            extra = ""
            if spec.baseline_note is not None and row is r["rows"][0]:
                extra = spec.baseline_note(row)
            d = versus_baseline(r, row, m0)
            delta = "-" if d is None else (f"{d[0]:+.{digits0}f} ± {d[1]:.{digits0}f}"
                                            + (" (p < 0.05)" if d[2] else ""))
            lines.append(
                f"| {name} | {row['params_c256_s2']:,} | {row['flops_per_pixel_c256_s2']:,} | "
                f"{shown(m0, row[f'{m0}_mean']):.{digits0}f} ± "
                f"{shown(m0, row[f'{m0}_std']):.{digits0}f}{extra} | "
                f"{shown(m1, row[f'{m1}_mean']):.{digits1}f} ± "
                f"{shown(m1, row[f'{m1}_std']):.{digits1}f} | {delta} | "
                + "".join(f"{cell(row)} | " for _, cell in spec.columns)
                + (f"{paper.paper_cell(study, row['label'])} |" if published else ""))
        lines += ["", f"Δ: difference of means from {base}, ± its standard error over the "
                  f"seeds; \"p < 0.05\": Welch's two-sided t-test over the {r['seeds']} seeds "
                  "per variant rejects equal means at 5% (unmarked: not resolved)."]
        if published:
            lines += ["", "Published column (not ours): " + "; ".join(paper.sources(study)) + "."]
        lines.append("")
    return "\n".join(lines)


def update_readme(text, readme=None):
    write_section(readme or paths.readme(), README_MARKERS, text)


def tradeoff_figure(results, path=None, x="latency_ms_c64_64px"):
    """Quality (the task's first metric, mean ± std over seeds) against x
    (latency, params or FLOPs) for each variant of one results dict; saved to
    path when given. Returns the Figure."""
    import matplotlib
    if path is not None:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    spec = task_of(results["task"])
    m0 = spec.metrics[0]
    labels = {"latency_ms_c64_64px": "CPU latency, ms (C=64, 64x64 input)",
              "params_c256_s2": "parameters (C=256)",
              "flops_per_pixel_c256_s2": "FLOPs per input pixel (C=256)"}
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for row in results["rows"]:
        ax.errorbar(row[x], row[f"{m0}_mean"], yerr=row[f"{m0}_std"], fmt="o", capsize=3)
        ax.annotate(row["label"], (row[x], row[f"{m0}_mean"]), textcoords="offset points",
                    xytext=(4, 4), fontsize=8)
    if x != "latency_ms_c64_64px":
        ax.set_xscale("symlog", linthresh=1)
    unit = spec.axis_label(results, m0)
    ax.set(xlabel=labels.get(x, x), ylabel=f"{unit}\nmean ± 1 std over seeds",
           title=f"{results['study']} on {results['task']} ({results['seeds']} seed(s), "
                 f"{results['setting']})")
    fig.tight_layout()
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=120)
    return fig
