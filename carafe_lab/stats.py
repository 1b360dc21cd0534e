"""Comparing results over seeds, shared by the detection summary and the
ablation report.

A difference of two means over a few seeds is called resolved when Welch's
two-sided t-test rejects equal means at the 5% level. (An earlier rule,
"the difference exceeds twice its standard error", is a z-test: with 2 or 3
seeds per arm the t distribution's tails are far heavier -- the 5% critical
value is 12.7 standard errors at one degree of freedom, 4.3 at two -- so
that rule called differences resolved that the seeds do not support.)"""

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
    df = (va + vb) ** 2 / sum(v ** 2 / (n - 1) for v, n in ((va, a[2]), (vb, b[2])) if v > 0)
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
