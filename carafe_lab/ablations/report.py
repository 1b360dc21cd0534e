"""Reading ablation results back: every results.json under a root, the latest
run of each (study, task, setting), the summary tables of the docs'
ablations page and the speed / parameters vs quality trade-off figure.

    python -m carafe_lab.ablations report [--root DIR] [--update-docs]
"""

import json
import sys
from pathlib import Path

from .. import paths
from ..readme import write_section
from .harness import task_of

MARKERS = ("<!-- abl:start -->", "<!-- abl:end -->")
README_MARKERS = MARKERS  # the name callers of the README writer use
#: The docs page (docs/<name>.md under the lab root) holding the tables.
DOCS_PAGE = "ablations"


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
            warn(
                f"report: skipping {path}: the study is incomplete (resume it with "
                f"python -m carafe_lab.ablations resume {path.parent})"
            )
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


def summary_markdown(root=None):
    """The docs section: the latest default-setting results of each
    (study, task), each as :func:`carafe_lab.ablations.tables.study_markdown`
    renders it (the same text as the study folder's table.md)."""
    from .tables import study_markdown

    chosen = latest(load_results(root))
    if not chosen:
        return "No default-setting ablation results yet.\n"
    return "\n".join(
        study_markdown(r, paths.relative(r["_dir"])) for _, r in sorted(chosen.items())
    )


def update_docs(text, page=None):
    """Write text between the abl markers of page (default: the lab root's
    docs/ablations.md)."""
    write_section(page or paths.docs_page(DOCS_PAGE), MARKERS, text)


update_readme = update_docs  # --update-readme's name for it

#: The markers of the mechanism verdict, in the README and docs/ablations.md.
VERDICT_MARKERS = ("<!-- mechanism:start -->", "<!-- mechanism:end -->")


def verdict_markdown(root=None, kernel_lr=True):
    """The mechanism study's verdict as bullet points, every sentence
    computed from the latest complete default-setting results
    (:mod:`carafe_lab.ablations.verdict`): per task, CA per step with its
    95% interval and the Holm-corrected comparisons; with kernel_lr, the
    kernel_lr study's CA and mIoU per learning-rate factor (the docs page has
    them, the README not)."""
    from .studies import STUDY_TASKS
    from .tables import values
    from .verdict import ca_sentences, mechanism_sentences, shift_sentences

    chosen = latest(load_results(root, warn=lambda message: None))
    lines = []
    for task in STUDY_TASKS["mechanism"]:
        results = chosen.get(("mechanism", task))
        if results is None:
            lines.append(f"- `mechanism` on `{task}`: no complete results yet.")
            continue
        where = paths.relative(results["_dir"])
        lines.append(f"- `mechanism` on `{task}` ({results['seeds']} seeds, `{where}`):")
        lines += [
            f"  - {s}"
            for s in ca_sentences(results) + shift_sentences(results) + mechanism_sentences(results)
        ]
    results = chosen.get(("kernel_lr", "seg")) if kernel_lr else None
    if results is not None:
        from ..stats import mean_ci
        from .verdict import ca_by_level

        lines.append(
            f"- `kernel_lr` on `seg` ({results['seeds']} seeds, "
            f"`{paths.relative(results['_dir'])}`):"
        )
        for row in results["rows"]:
            miou, low, high = mean_ci(values(results, row, "miou"))
            ca = ca_by_level(results, row["label"])
            lines.append(
                f"  - {row['label']}: mIoU {miou:.3f} [95% CI {low:.3f}, {high:.3f}]; "
                + "; ".join(
                    f"{lv}: CA {c['mean']:+.3f} [{c['low']:+.3f}, {c['high']:+.3f}], "
                    f"entropy {c['entropy']:.2f} nats, one-hot share "
                    f"{c['one_hot_share']:.3f}"
                    for lv, c in ca.items()
                )
                + "."
            )
    return "\n".join(lines) + "\n"


#: The markers of the cross-task summary, in the README and docs/ablations.md.
TASKS_MARKERS = ("<!-- tasks:start -->", "<!-- tasks:end -->")
#: The tasks in the order the summary gives them.
TASK_ORDER = ("det", "ins", "seg", "inpaint", "sr")


def tasks_markdown(root=None, a="carafe", b="nearest"):
    """CARAFE against nearest on every task with complete default-setting
    `upsamplers` results, one bullet each: the difference of the task's first
    metric with its 95% interval (Welch over the seeds, Holm-corrected over
    the tasks, a family of comparisons), each seed's value, and the gain the
    CARAFE paper's abstract states for that task (paper.PAPER_GAINS: another
    network, data and scale, beside ours, not a target; source:
    carafe_lab.published.CARAFE_ABSTRACT)."""
    from ..stats import ALPHA, compare_seeds, holm
    from .paper import PAPER_GAINS
    from .tables import values

    chosen = latest(load_results(root, warn=lambda message: None))
    found = []
    for task in TASK_ORDER:
        results = chosen.get(("upsamplers", task))
        rows = {r["label"]: r for r in results["rows"]} if results else {}
        if a not in rows or b not in rows:
            continue
        spec = task_of(task)
        m0 = spec.metrics[0]
        va, vb = (values(results, rows[x], m0) for x in (a, b))
        found.append((task, results, spec, m0, va, vb, compare_seeds(va, vb)))
    if not found:
        return f"- No complete `upsamplers` results with {a} and {b} yet.\n"
    adjusted = holm([c["p"] if c else None for *_, c in found])
    lines = []
    for (task, results, spec, m0, va, vb, c), p_holm in zip(found, adjusted):
        digits = 1 if m0 in spec.percent else 3
        name = spec.label(results, m0)
        unit = " points" if m0 in spec.percent else ""
        where = paths.relative(results["_dir"])
        seeds = lambda v: ", ".join(f"{x:.{digits}f}" for x in v)  # noqa: E731
        line = f"- `{task}` {name} (`{where}`): {a} - {b} "
        if c is None:
            line += "not compared (fewer than two seeds)"
        else:
            line += (
                f"{c['diff']:+.{digits}f}{unit} [95% CI {c['low']:+.{digits}f}, "
                f"{c['high']:+.{digits}f}] (Welch, Holm-corrected over the tasks p = "
                f"{p_holm:.2g}: " + ("resolved" if p_holm < ALPHA else "not resolved") + ")"
            )
        line += f"; {a} {seeds(va)}; {b} {seeds(vb)}."
        gain = PAPER_GAINS.get(task)
        line += f" The paper's abstract: {gain[1]}." if gain else " The paper has no such task."
        lines.append(line)
    return "\n".join(lines) + "\n"


def update_tasks(text, pages=None):
    """Write text between the tasks markers of the README and
    docs/ablations.md (or of pages)."""
    for page in pages or (paths.readme(), paths.docs_page(DOCS_PAGE)):
        write_section(page, TASKS_MARKERS, text)


def update_verdict(text, pages=None, readme_text=None):
    """Write text between the mechanism markers of docs/ablations.md and
    readme_text (default: text) between those of the README (or text into
    every page of pages)."""
    if pages is not None:
        for page in pages:
            write_section(page, VERDICT_MARKERS, text)
        return
    write_section(paths.docs_page(DOCS_PAGE), VERDICT_MARKERS, text)
    write_section(paths.readme(), VERDICT_MARKERS, text if readme_text is None else readme_text)


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
    labels = {
        "latency_ms_c64_64px": "CPU latency, ms (C=64, 64x64 input)",
        "params_c256_s2": "parameters (C=256)",
        "flops_per_pixel_c256_s2": "FLOPs per input pixel (C=256)",
    }
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for row in results["rows"]:
        ax.errorbar(row[x], row[f"{m0}_mean"], yerr=row[f"{m0}_std"], fmt="o", capsize=3)
        ax.annotate(
            row["label"],
            (row[x], row[f"{m0}_mean"]),
            textcoords="offset points",
            xytext=(4, 4),
            fontsize=8,
        )
    if x != "latency_ms_c64_64px":
        ax.set_xscale("symlog", linthresh=1)
    unit = spec.axis_label(results, m0)
    ax.set(
        xlabel=labels.get(x, x),
        ylabel=f"{unit}\nmean ± 1 std over seeds",
        title=f"{results['study']} on {results['task']} ({results['seeds']} seed(s), "
        f"{results['setting']})",
    )
    fig.tight_layout()
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=120)
    return fig
