"""Sentences computed from a study's saved numbers, for notebook 01, the
README and the docs: what the content-awareness score and the mechanism
study say, with their confidence intervals, whichever way they come out.
Nothing here is typed in advance; every word that carries a conclusion is
chosen by a test on the numbers."""

from ..stats import ALPHA, mean_ci
from .tables import comparison_rows, values


def ca_by_level(results, label="carafe"):
    """{step: {"mean", "low", "high", "seeds": [CA per seed], "p", "p_holm",
    "entropy", "one_hot_share", "centre_share"}} of a variant whose runs
    scored their kernels (CA: :func:`carafe_lab.viz.kernel_report`); {} when
    none did. p: the one-sample t-test of CA = 0 over the seeds; p_holm: p
    Holm-corrected over the steps (one family: the variant's CA at every
    step)."""
    from ..stats import holm, one_sample_p

    row = next((r for r in results["rows"] if r["label"] == label), None)
    runs = [
        s["kernels"] for s in (row or {}).get("seeds", []) if isinstance(s.get("kernels"), dict)
    ]
    out = {}
    for level in runs[0] if runs else {}:
        per = [r[level] for r in runs if level in r]
        ca = [p["ca"] for p in per]
        mean, low, high = mean_ci(ca)
        out[level] = {
            "mean": mean,
            "low": low,
            "high": high,
            "seeds": ca,
            "p": one_sample_p(ca),
            **{
                key: sum(p[key] for p in per) / len(per)
                for key in ("entropy", "one_hot_share", "centre_share")
            },
        }
    for c, p in zip(out.values(), holm([c["p"] for c in out.values()])):
        c["p_holm"] = p
    return out


def ca_word(c):
    """What a step's CA says: "adaptive" (above 0) or "anti" (below 0) when
    its Holm-corrected p-value is below ALPHA, else "unresolved"."""
    if not c["p_holm"] < ALPHA:  # NaN (a single seed) included
        return "unresolved"
    return "adaptive" if c["mean"] > 0 else "anti"


_CA_TEXT = {
    "adaptive": "the learned kernels keep more weight in the pixel's own segment than "
    "their own phase mean does: content adaptation, resolved",
    "anti": "the learned kernels keep less weight in the pixel's own segment than "
    "their own phase mean does, resolved",
    "unresolved": "no difference from the content-agnostic phase mean is resolved",
}


def ca_sentences(results, label="carafe"):
    """One sentence per step on CA with its 95% interval over the seeds and
    its p-value Holm-corrected over the steps."""
    out = []
    for level, c in ca_by_level(results, label).items():
        out.append(
            f"{results['task']} {level}: CA = {c['mean']:+.3f} "
            f"[95% CI {c['low']:+.3f}, {c['high']:+.3f}] over {len(c['seeds'])} seeds "
            f"({', '.join(f'{x:+.3f}' for x in c['seeds'])}; Holm-corrected p over the steps "
            f"{c['p_holm']:.2g}): {_CA_TEXT[ca_word(c)]}."
        )
    return out


def shift_sentences(results, label="carafe", threshold=0.5):
    """A sentence for each step whose phase-mean kernels put most of their
    weight (more than threshold, averaged over seeds) on the window's
    outer ring: a learned shift by whole input pixels, which no sub-pixel
    geometry (at most half an input pixel) accounts for."""
    from ..viz import weight_by_distance

    row = next((r for r in results["rows"] if r["label"] == label), None)
    runs = [
        s["kernels"] for s in (row or {}).get("seeds", []) if isinstance(s.get("kernels"), dict)
    ]
    out = []
    for level in runs[0] if runs else {}:
        shares = [weight_by_distance(r[level]["phase_mean_kernels"]) for r in runs if level in r]
        far = max(shares[0])
        values = [s[far] for s in shares]
        if min(values) > threshold:
            inner = [r[level]["masses"]["carafe"]["interior"] for r in runs if level in r]
            uniform = min(r[level]["masses"]["uniform"]["interior"] for r in runs if level in r)
            sentence = (
                f"{results['task']} {level}: the phase-mean kernels put "
                f"{min(values):.2f}-{max(values):.2f} of their weight {far} input pixels from the "
                f"source pixel in all {len(values)} seeds: a learned shift (a sub-pixel geometry "
                "mismatch moves a sample by at most half a pixel); the phase mean shares it, "
                "so CA does not count it."
            )
            if max(inner) < uniform:
                sentence += (
                    f" The interior same-segment mass ({min(inner):.3f}-{max(inner):.3f}) is "
                    f"below a uniform kernel's ({uniform:.3f}), as a kernel reading pixels "
                    f"{far} away would make it."
                )
            out.append(sentence)
    return out


def mechanism_sentences(results):
    """One sentence per comparison of the study's table (Holm-corrected over
    them), then the key one (CARAFE against static CARAFE) said again with
    whether more seeds are needed: its 95% interval wider than the
    difference itself means the seeds do not resolve it."""
    from .harness import task_of

    spec = task_of(results["task"])
    m0 = spec.metrics[0]
    unit = " points" if m0 in spec.percent else ""
    digits = 1 if m0 in spec.percent else 3
    name = spec.label(results, m0)
    out = []
    key = None
    for a, b, c, p_holm in comparison_rows(results):
        if c is None:
            out.append(f"{a} - {b}: fewer than two seeds, not compared.")
            continue
        resolved = p_holm < ALPHA
        out.append(
            f"{results['task']} {name}, {a} - {b}: {c['diff']:+.{digits}f}{unit} "
            f"[95% CI {c['low']:+.{digits}f}, {c['high']:+.{digits}f}] ({c['test']}, "
            f"Holm-corrected p = {p_holm:.2g}): " + ("resolved." if resolved else "not resolved.")
        )
        if (a, b) == ("carafe", "static_carafe"):
            key = c
    if key is not None:
        half = (key["high"] - key["low"]) / 2
        if half > abs(key["diff"]):
            out.append(
                f"The key difference (CARAFE - static CARAFE) has a 95% interval "
                f"(±{half:.{digits}f}) wider than itself ({key['diff']:+.{digits}f}): "
                f"these {key['n_a']} seeds do not resolve it; more seeds are needed "
                "(`python -m carafe_lab.ablations resume FOLDER --seeds N`)."
            )
    return out


def per_seed_line(results, label):
    """ "label: v0, v1, ..." of the first metric in the units shown."""
    from .harness import task_of

    spec = task_of(results["task"])
    row = next(r for r in results["rows"] if r["label"] == label)
    digits = 1 if spec.metrics[0] in spec.percent else 3
    return f"{label}: " + ", ".join(
        f"{v:.{digits}f}" for v in values(results, row, spec.metrics[0])
    )


__all__ = [
    "ca_by_level",
    "ca_word",
    "ca_sentences",
    "shift_sentences",
    "mechanism_sentences",
    "per_seed_line",
]
