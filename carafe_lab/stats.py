"""Comparing results over seeds, shared by the detection summary and the
ablation tables.

A difference of two means over a few seeds is called resolved when the t-test
(Welch's for independent trainings, paired for the same trained models)
rejects equal means at the 5% level after Holm's correction over the
comparisons of one table. A t-test, not "twice the standard error": with 2 or
3 seeds per arm the t distribution's tails are far heavier than the normal's
(the 5% critical value is 12.7 standard errors at one degree of freedom, 4.3
at two)."""

import math

ALPHA = 0.05


def welch_p(a, b):
    """Two-sided p-value of Welch's t-test for two (mean, std, n) (scipy's t
    distribution; the Welch-Satterthwaite degrees of freedom). A side with
    zero spread (e.g. a fixed kernel's score) is a constant: the test is then
    the one-sample t-test of the other side. Both spreads zero: 0.0 when the
    means differ, 1.0 when they are equal."""
    from scipy import stats

    va, vb = a[1] ** 2 / a[2], b[1] ** 2 / b[2]
    se = math.sqrt(va + vb)
    diff = a[0] - b[0]
    if se == 0:
        return 0.0 if diff != 0 else 1.0
    df = (va + vb) ** 2 / sum(v**2 / (n - 1) for v, n in ((va, a[2]), (vb, b[2])) if v > 0)
    return float(2 * stats.t.sf(abs(diff) / se, df))


def difference(a, b):
    """(mean_a - mean_b, its standard error, whether Welch's two-sided t-test
    rejects equal means at ALPHA, the test's p-value) for two (mean, std, n);
    None when either has fewer than two seeds."""
    if a is None or b is None or a[2] < 2 or b[2] < 2:
        return None
    diff = a[0] - b[0]
    se = math.sqrt(a[1] ** 2 / a[2] + b[1] ** 2 / b[2])
    p = welch_p(a, b)
    return diff, se, p < ALPHA, p


# --- confidence intervals and corrected comparisons (scipy.stats) -------------


def mean_ci(values, confidence=0.95):
    """(mean, low, high): the t-interval of the mean of values over seeds;
    low and high are NaN with fewer than two values."""
    import statistics

    from scipy import stats

    values = [float(v) for v in values]
    if not values:
        raise ValueError("values: expected at least one value, got none")
    mean = statistics.mean(values)
    if len(values) < 2:
        return mean, math.nan, math.nan
    if len(set(values)) == 1:
        return mean, mean, mean
    low, high = stats.t.interval(confidence, len(values) - 1, loc=mean, scale=stats.sem(values))
    return mean, float(low), float(high)


def compare_seeds(a, b, paired=False, confidence=0.95):
    """Mean difference of a - b over seeds with its confidence interval and
    two-sided p-value: Welch's t-test for independent trainings, the paired
    t-test when a[i] and b[i] come from the same trained model (paired=True,
    e.g. a model and its own phase-mean swap). Returns {"diff", "low",
    "high", "p", "n_a", "n_b", "test"}; None with fewer than two values per
    side. No spread (both sides constant, or constant paired differences):
    p is 1 when the means are equal and NaN (not resolved) when not, and the
    interval is the difference itself."""
    import statistics

    from scipy import stats

    a, b = [float(v) for v in a], [float(v) for v in b]
    if len(a) < 2 or len(b) < 2:
        return None
    if paired and len(a) != len(b):
        raise ValueError(
            f"paired: expected as many values on both sides, got {len(a)} and {len(b)}"
        )
    diff = statistics.mean(a) - statistics.mean(b)
    out = {"diff": diff, "n_a": len(a), "n_b": len(b), "test": "paired t" if paired else "Welch"}
    spread = [x - y for x, y in zip(a, b)] if paired else a + b
    if paired and len(set(spread)) == 1 or not paired and len(set(a)) == len(set(b)) == 1:
        # no spread to judge by: equal sides are not different, unequal ones unresolved
        out.update(low=diff, high=diff, p=1.0 if diff == 0 else math.nan)
        return out
    result = stats.ttest_rel(a, b) if paired else stats.ttest_ind(a, b, equal_var=False)
    ci = result.confidence_interval(confidence)
    out.update(low=float(ci.low), high=float(ci.high), p=float(result.pvalue))
    return out


def one_sample_p(values, mean=0.0):
    """Two-sided p-value of the one-sample t-test that values (over seeds)
    have the given mean; NaN with fewer than two values or no spread."""
    from scipy import stats

    values = [float(v) for v in values]
    if len(values) < 2 or len(set(values)) == 1:
        return math.nan
    return float(stats.ttest_1samp(values, mean).pvalue)


def holm(pvalues):
    """Holm's step-down adjustment of p-values for the comparisons of one
    table (family-wise error at the level they are compared with). NaN or
    None entries are left as they are and not counted. scipy.stats has no
    Holm adjustment (false_discovery_control is Benjamini-Hochberg, which
    controls a different error rate), and statsmodels would be a dependency
    for these few lines."""
    indexed = [(p, i) for i, p in enumerate(pvalues) if p is not None and not math.isnan(p)]
    m = len(indexed)
    adjusted = list(pvalues)
    running = 0.0
    for rank, (p, i) in enumerate(sorted(indexed)):
        running = max(running, min(1.0, (m - rank) * p))
        adjusted[i] = running
    return adjusted
