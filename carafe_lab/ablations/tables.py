"""The markdown of one study's results: the table each study folder keeps
(table.md) and the README / docs summary (report.py) are the same text.

Per variant: parameters and FLOPs of the upsamplers as they sit in the
trained model (the task's channels and number of upsamplers) beside the
C = 256 figure, the first metric's mean with its 95% confidence interval,
its median and every seed's value, the second metric's mean ± std. Then the study's
comparisons (studies.comparisons): difference of means with its 95%
interval, the test's p-value and the p-value Holm-corrected over the
comparisons of that table; a difference is shown in bold only when the
corrected p-value is below 0.05. Then, for variants whose runs scored
their kernels (seg CARAFE), the content-awareness score CA per step.
"""

import statistics

from ..stats import ALPHA, compare_seeds, holm, mean_ci
from . import paper
from .studies import comparisons


def _spec(results):
    from .harness import task_of

    return task_of(results["task"])


def _cell(cell, row):
    value = cell(row)
    return "-" if value is None else value


def trained_columns(results, row):
    """(parameters as trained, FLOPs per input pixel as trained, channels):
    from the row, or computed for results written before rows kept them."""
    if "params_trained" in row:
        channels = row.get("downsampler_channels") or row["upsampler_channels"]
        return row["params_trained"], row["flops_per_pixel_trained"], channels
    from .harness import sized_channels, trained_size

    params, flops = trained_size(
        results["task"], row["upsampler"], row["options"], results["setting"]
    )
    return params, flops, list(sized_channels(results["task"], row["options"], results["setting"]))


def _sized_header(row, channels):
    """The header words of the size columns: what the counts are of (the
    variants' downsamplers when the first row's are, else their upsamplers),
    and the channels of the slots."""
    if row.get("sized") == "downsampler":
        return "downsampler ", "output px", f"C={', '.join(map(str, channels))}"
    return "", "px", f"{len(channels)} x C={channels[0]}"


def values(results, row, metric):
    """The row's per-seed values of metric in the units the tables show."""
    spec = _spec(results)
    return [spec.shown(metric, s[metric]) for s in row["seeds"]]


def _fmt(x, digits):
    return "nan" if x != x else f"{x:.{digits}f}"


def comparison_rows(results):
    """[(a, b, compare_seeds result, Holm-corrected p)] for the study's
    comparisons on the first metric."""
    m0 = _spec(results).metrics[0]
    rows = {r["label"]: r for r in results["rows"]}
    out = []
    for a, b, paired in comparisons(results["study"], list(rows)):
        va, vb = values(results, rows[a], m0), values(results, rows[b], m0)
        if paired:  # the same seeds on both sides, in the same order
            sa = dict(zip((s["seed"] for s in rows[a]["seeds"]), va))
            sb = dict(zip((s["seed"] for s in rows[b]["seeds"]), vb))
            common = sorted(set(sa) & set(sb))
            va, vb = [sa[s] for s in common], [sb[s] for s in common]
        out.append((a, b, compare_seeds(va, vb, paired)))
    adjusted = holm([c["p"] if c else None for _, _, c in out])
    return [(a, b, c, p) for (a, b, c), p in zip(out, adjusted)]


def study_markdown(results, run_path=None):
    """Markdown for one results.json (see the module docstring)."""
    spec = _spec(results)
    m0, m1 = spec.metrics
    label = spec.label
    unit = " (%)" if m0 in spec.percent else ""
    d0, d1 = (1, 1) if m0 in spec.percent else (3, 4)
    study, task = results["study"], results["task"]
    published = paper.has_column(study, task)
    first = results["rows"][0]
    params0, _, channels = trained_columns(results, first)
    what, pixel, slots = _sized_header(first, channels)
    # a column whose cells are all None (results written before its metric
    # existed) is left out rather than shown empty
    columns = [
        (header, cell)
        for header, cell in spec.columns
        if any(cell(row) is not None for row in results["rows"])
    ]
    where = f"; `{run_path}`" if run_path else ""
    lines = [
        f"**{results['study']}** on `{results['task']}` (x{results['scale']}, "
        f"{results['setting']} setting, {results['seeds']} seeds{where})",
        "",
        f"| variant | {what}params as trained ({slots}) | "
        f"{what}params (C=256) | FLOPs/{pixel} (C={channels[0]}) | {label(results, m0)}{unit} "
        f"[95% CI] | median | {m1}{unit} | {label(results, m0)} per seed | "
        + "".join(f"{header} | " for header, _ in columns)
        + (f"{paper.column(task).header} |" if published else ""),
        "|---|---:|---:|---:|---:|---:|---:|---|"
        + "---:|" * len(columns)
        + ("---:|" if published else ""),
    ]
    for row in results["rows"]:
        params, flops, _ = trained_columns(results, row)
        v0 = values(results, row, m0)
        if not v0:
            continue
        mean, low, high = mean_ci(v0)
        v1 = values(results, row, m1)
        std1 = (
            (sum((x - sum(v1) / len(v1)) ** 2 for x in v1) / (len(v1) - 1)) ** 0.5
            if len(v1) > 1
            else 0.0
        )
        extra = spec.baseline_note(row) if spec.baseline_note and row is first else ""
        name = row["label"] + (
            " (evaluation of the trained carafe)" if row.get("evaluates") else ""
        )
        lines.append(
            f"| {name} | {params:,} | {row['params_c256_s2']:,} | {flops:,} | "
            f"{mean:.{d0}f} [{_fmt(low, d0)}, {_fmt(high, d0)}]{extra} | "
            f"{statistics.median(v0):.{d0}f} | "
            f"{sum(v1) / len(v1):.{d1}f} ± {std1:.{d1}f} | "
            + ", ".join(f"{x:.{d0}f}" for x in v0)
            + " | "
            + "".join(f"{_cell(cell, row)} | " for _, cell in columns)
            + (f"{paper.paper_cell(study, row['label'], task)} |" if published else "")
        )
    lines += [
        "",
        "95% CI: the t-interval of the mean over the seeds; median: of the seeds. "
        + (
            "Parameters as trained: all the downsamplers of the task's model (each "
            "stride-2 step's, at its channels; the upsamplers are the same in every "
            "row); FLOPs per output pixel of the first (2 x multiply-adds, weights only)."
            if what
            else "Parameters as trained: "
            "all the upsamplers of the task's model at its channels; FLOPs per input "
            "pixel of one of them (2 x multiply-adds, weights only)."
        ),
    ]
    if published:
        lines.append(
            f"Published column ({paper.column(task).note}): "
            + "; ".join(paper.sources(study, task))
            + "."
        )
    lines += ["", *comparisons_markdown(results)]
    kernels = kernel_markdown(results)
    if kernels:
        lines += ["", *kernels]
    return "\n".join(line.rstrip() for line in lines) + "\n"


def comparisons_markdown(results):
    spec = _spec(results)
    m0 = spec.metrics[0]
    d0 = 1 if m0 in spec.percent else 3
    rows = comparison_rows(results)
    if not rows:
        return []
    name = spec.label(results, m0) + (" (%)" if m0 in spec.percent else "")
    lines = [
        f"| comparison ({name}) | difference [95% CI] | test | p | p (Holm) |",
        "|---|---:|---|---:|---:|",
    ]
    for a, b, c, p_holm in rows:
        if c is None:
            lines.append(f"| {a} - {b} | - (fewer than 2 seeds) | | | |")
            continue
        cell = f"{c['diff']:+.{d0}f} [{c['low']:+.{d0}f}, {c['high']:+.{d0}f}]"
        if p_holm < ALPHA:
            cell = f"**{cell}**"
        lines.append(f"| {a} - {b} | {cell} | {c['test']} | {c['p']:.2g} | {p_holm:.2g} |")
    lines += [
        "",
        f"Bold: resolved, the Holm-corrected p-value over the {len(rows)} "
        f"comparisons of this table is below {ALPHA} (the two-sided test named; "
        "paired where both sides are the same trained models).",
    ]
    return lines


def kernel_markdown(results):
    """Per variant and decoder step, for runs that scored their kernels: CA
    (learned minus phase-mean same-segment mass on boundary pixels) with its
    95% interval over seeds and every seed's value, the same against the
    permuted kernels, the cosine of the content-decided shift with the
    direction into the own segment, entropy and the share of near one-hot
    kernels (means over seeds)."""
    lines = []
    for row in results["rows"]:
        runs = [s["kernels"] for s in row["seeds"] if isinstance(s.get("kernels"), dict)]
        if not runs:
            continue
        if not lines:
            lines = [
                "| variant | step | CA [95% CI] | p (Holm) | CA per seed | CA vs permuted | "
                "shift cosine | entropy (nats) | one-hot share | phase-mean weight "
                "on the source tap |",
                "|---|---|---:|---:|---|---:|---:|---:|---:|---:|",
            ]
        from .verdict import ca_by_level

        for level, c in ca_by_level(results, row["label"]).items():
            per = [r[level] for r in runs if level in r]

            def avg(key, sub=None, per=per):
                xs = [p[key][sub] if sub else p[key] for p in per]
                xs = [x for x in xs if x == x]
                return sum(xs) / len(xs) if xs else float("nan")

            ca = f"{c['mean']:+.3f} [{c['low']:+.3f}, {c['high']:+.3f}]"
            if c["p_holm"] < ALPHA:
                ca = f"**{ca}**"
            lines.append(
                f"| {row['label']} | {level} | {ca} | {c['p_holm']:.2g} | "
                + ", ".join(f"{x:+.3f}" for x in c["seeds"])
                + f" | {avg('ca_permuted'):+.3f} | {avg('direction', 'shift'):+.2f} | "
                f"{avg('entropy'):.2f} | {avg('one_hot_share'):.3f} | "
                f"{avg('centre_share'):.2f} |"
            )
    if lines:
        lines += [
            "",
            "CA: same-segment mass of the learned kernels minus that of their own "
            "phase-mean kernels (the content-agnostic twin with the same support and "
            "geometric offset), over the same boundary pixels of the held-out images; "
            "0 means no content adaptation that the segments can see. p (Holm): the "
            "one-sample t-test of CA = 0 over the seeds, Holm-corrected over the steps; "
            "bold where below 0.05. Shift cosine: "
            "cosine of the learned minus the phase-mean centre of mass with the "
            "direction into the pixel's own segment (+1: towards it).",
        ]
    return lines
