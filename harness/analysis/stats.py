"""Statistics on plain arrays: t-tests, t-intervals, Hedges' g, power, corrections.

Every function takes 1-D arrays of replication values (NaN already removed by the caller)
and returns floats; none reads the store or writes files. Groups with fewer than 2 values
give NaN statistics rather than an error, so the tables can mark them.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from scipy import optimize, stats

ALTERNATIVES = ("two-sided", "greater")


@dataclass(frozen=True)
class TTest:
    """Two-sample t-test of mean(a) - mean(b)."""

    diff: float  # mean(a) - mean(b), in metric units
    t: float
    df: float
    p: float


def _arr(x) -> np.ndarray:
    return np.asarray(x, dtype=float).ravel()


# "Constant" and "equal" are decided to within this many units in the last place of the
# values' magnitude: the mean of seven 0.1s differs from the mean of ten in the last bit,
# and their variance is 2e-34, not 0; tested as exact, that would be a "significant"
# difference of 1e-17 with p = 0.01.
ULPS = 8


def tolerance(*groups) -> float:
    """The rounding tolerance of values of these groups' magnitude (ULPS ulps of the largest)."""
    scale = max((float(np.abs(g).max()) for g in map(_arr, groups) if len(g)), default=0.0)
    return ULPS * float(np.finfo(float).eps) * scale


def constant(x, tol: float) -> bool:
    """Every value within ``tol`` of every other (an empty group counts as constant)."""
    x = _arr(x)
    return not len(x) or float(np.ptp(x)) <= tol


def ttest(a, b, *, welch: bool = False, alternative: str = "two-sided") -> TTest:
    """Student (pooled variance) or Welch two-sample t-test; ``alternative="greater"``
    tests H1: mean(a) > mean(b).

    Both groups constant (to rounding: ``constant``, ``tolerance``) is a degenerate case
    that scipy answers with NaN or, from rounding noise, a spurious p; here a nonzero
    difference gets p = 0 (every replication agrees) and no difference (within rounding)
    diff = 0 and p = 1.
    """
    if alternative not in ALTERNATIVES:
        raise ValueError(f"alternative must be one of {ALTERNATIVES}, got {alternative!r}")
    a, b = _arr(a), _arr(b)
    n1, n2 = len(a), len(b)
    diff = float(a.mean() - b.mean()) if n1 and n2 else float("nan")
    if min(n1, n2) < 2:
        return TTest(diff, float("nan"), float("nan"), float("nan"))
    tol = tolerance(a, b)
    if constant(a, tol) and constant(b, tol):
        v1 = v2 = 0.0
        diff = 0.0 if abs(diff) <= tol else diff
    else:
        v1, v2 = a.var(ddof=1), b.var(ddof=1)
    if welch:
        se2 = v1 / n1 + v2 / n2
        df = se2**2 / ((v1 / n1) ** 2 / (n1 - 1) + (v2 / n2) ** 2 / (n2 - 1)) if se2 > 0 else n1 + n2 - 2
    else:
        df = n1 + n2 - 2
        se2 = ((n1 - 1) * v1 + (n2 - 1) * v2) / df * (1 / n1 + 1 / n2)
    if se2 == 0:
        if diff == 0:
            return TTest(diff, float("nan"), float(df), 1.0)
        return TTest(diff, float(np.copysign(np.inf, diff)), float(df), 0.0 if alternative == "two-sided" or diff > 0 else 1.0)
    t = diff / np.sqrt(se2)
    p = 2 * stats.t.sf(abs(t), df) if alternative == "two-sided" else stats.t.sf(t, df)
    return TTest(diff, float(t), float(df), float(min(p, 1.0)))


def paired_ttest(a, b) -> TTest:
    """Paired t-test of mean(a - b), a[i] and b[i] one pair (two replications with the same
    seed); scipy's ttest_rel, with the degenerate case of ``ttest`` (every difference
    equal: p = 0 if nonzero, 1 if zero) instead of NaN."""
    a, b = _arr(a), _arr(b)
    d = a - b
    n = len(d)
    diff = float(d.mean()) if n else float("nan")
    if n < 2:
        return TTest(diff, float("nan"), float("nan"), float("nan"))
    tol = tolerance(a, b)
    sd = 0.0 if constant(d, tol) else float(d.std(ddof=1))
    diff = 0.0 if sd == 0 and abs(diff) <= tol else diff
    if sd == 0:
        if diff == 0:
            return TTest(diff, float("nan"), float(n - 1), 1.0)
        return TTest(diff, float(np.copysign(np.inf, diff)), float(n - 1), 0.0)
    t = diff / (sd / np.sqrt(n))
    return TTest(diff, float(t), float(n - 1), float(min(2 * stats.t.sf(abs(t), n - 1), 1.0)))


def paired_tost(a, b, delta: float) -> float:
    """Equivalence of paired values: the TOST p-value (two one-sided paired t-tests,
    Schuirmann 1987) of H0: |mean(a - b)| >= delta against H1: |mean(a - b)| < delta, as
    statsmodels' ttost_paired(a, b, -delta, delta). p < α shows the two equivalent within
    ±delta, where a t-test's blank cell shows only that they were not shown different.
    Every difference equal (to rounding): p = 0 inside the margin, 1 outside; NaN for
    fewer than 2 pairs or a margin that is not positive."""
    a, b = _arr(a), _arr(b)
    d = a - b
    n = len(d)
    if n < 2 or not (delta > 0):
        return float("nan")
    mean = float(d.mean())
    tol = tolerance(a, b)
    if constant(d, tol):
        return 0.0 if abs(mean) < delta else 1.0
    se = float(d.std(ddof=1)) / np.sqrt(n)
    p_low = stats.t.sf((mean + delta) / se, n - 1)  # H0: mean <= -delta
    p_high = stats.t.cdf((mean - delta) / se, n - 1)  # H0: mean >= delta
    return float(max(p_low, p_high))


def tost(a, b, delta: float) -> float:
    """Equivalence of two independent groups: the TOST p-value (two one-sided pooled
    t-tests) of H0: |mean(a) - mean(b)| >= delta, as statsmodels' ttost_ind(a, b, -delta,
    delta). Both groups constant (to rounding): 0 inside the margin, 1 outside; NaN for
    fewer than 2 values in a group or a margin that is not positive."""
    a, b = _arr(a), _arr(b)
    n1, n2 = len(a), len(b)
    if min(n1, n2) < 2 or not (delta > 0):
        return float("nan")
    diff = float(a.mean() - b.mean())
    tol = tolerance(a, b)
    if constant(a, tol) and constant(b, tol):
        return 0.0 if abs(diff) < delta else 1.0
    df = n1 + n2 - 2
    se = np.sqrt(((n1 - 1) * a.var(ddof=1) + (n2 - 1) * b.var(ddof=1)) / df * (1 / n1 + 1 / n2))
    return float(max(stats.t.sf((diff + delta) / se, df), stats.t.cdf((diff - delta) / se, df)))


def t_interval(x, confidence: float = 0.95) -> tuple[float, float, float]:
    """(mean, lower, upper) of the t confidence interval of the mean; bounds NaN for n < 2."""
    x = _arr(x)
    n = len(x)
    if n == 0:
        return float("nan"), float("nan"), float("nan")
    mean = float(x.mean())
    if n < 2:
        return mean, float("nan"), float("nan")
    half = stats.t.ppf((1 + confidence) / 2, n - 1) * x.std(ddof=1) / np.sqrt(n)
    return mean, float(mean - half), float(mean + half)


def diff_upper_bound(a, b, alpha: float, *, welch: bool = False) -> float:
    """Upper one-sided (1 - alpha) confidence bound of mean(a) - mean(b), pooled or Welch
    as the t-test (statsmodels' t-interval); NaN for fewer than 2 in a group. Both groups
    constant (as ttest reads it) have no spread to bound: the bound is the difference itself,
    where Welch's degrees of freedom would be 0/0."""
    if min(len(a), len(b)) < 2:
        return float("nan")
    a, b = _arr(a), _arr(b)
    tol = tolerance(a, b)
    if constant(a, tol) and constant(b, tol):
        diff = float(a.mean() - b.mean())
        return 0.0 if abs(diff) <= tol else diff
    from statsmodels.stats.weightstats import CompareMeans, DescrStatsW

    compare = CompareMeans(DescrStatsW(a), DescrStatsW(b))
    return float(compare.tconfint_diff(alpha, alternative="smaller", usevar="unequal" if welch else "pooled")[1])


def ratio_interval(x, y, confidence: float = 0.95, *, paired: bool = False) -> tuple[float, float, float]:
    """(ratio, lower, upper): mean(x) / mean(y) and the delta-method t-interval of its
    logarithm, back-transformed (so the interval stays positive and a ratio and its inverse
    get mirrored intervals). var(log ratio) = s_x² / (n m_x²) + s_y² / (n m_y²), less
    2 cov / (n m_x m_y) when ``paired`` (x[i], y[i] one seed; df n - 1); unpaired, each
    group with its own n and Welch-Satterthwaite df. Both means must be positive (else
    NaN); no spread at all (to rounding) gives the ratio as both bounds."""
    x, y = _arr(x), _arr(y)
    nx, ny = len(x), len(y)
    if paired and nx != ny:
        raise ValueError(f"paired values need equal lengths, got {nx} and {ny}")
    if min(nx, ny) < 2:
        return float("nan"), float("nan"), float("nan")
    mx, my = float(x.mean()), float(y.mean())
    if not (mx > 0 and my > 0):
        return float("nan"), float("nan"), float("nan")
    ratio = mx / my
    tol = tolerance(x, y)
    vx = 0.0 if constant(x, tol) else float(x.var(ddof=1)) / (nx * mx**2)
    vy = 0.0 if constant(y, tol) else float(y.var(ddof=1)) / (ny * my**2)
    if paired:
        cov = float(np.cov(x, y, ddof=1)[0, 1]) / (nx * mx * my) if vx and vy else 0.0
        var, df = max(vx + vy - 2 * cov, 0.0), nx - 1
    else:
        var = vx + vy
        df = var**2 / (vx**2 / (nx - 1) + vy**2 / (ny - 1)) if var > 0 else nx + ny - 2
    if var == 0:
        return ratio, ratio, ratio
    half = stats.t.ppf((1 + confidence) / 2, df) * np.sqrt(var)
    return ratio, float(ratio * np.exp(-half)), float(ratio * np.exp(half))


def pooled_sd(a, b) -> float:
    """Pooled standard deviation of two groups (NaN when either has fewer than 2 values)."""
    a, b = _arr(a), _arr(b)
    n1, n2 = len(a), len(b)
    if min(n1, n2) < 2:
        return float("nan")
    return float(np.sqrt(((n1 - 1) * a.var(ddof=1) + (n2 - 1) * b.var(ddof=1)) / (n1 + n2 - 2)))


def hedges_g(a, b, confidence: float = 0.95) -> tuple[float, float, float]:
    """Hedges' g of a - b with its normal-approximation CI (Hedges & Olkin 1985):
    g = J d, d = diff / pooled sd, J = 1 - 3 / (4 df - 1),
    se = sqrt((n1 + n2) / (n1 n2) + g^2 / (2 (n1 + n2)))."""
    a, b = _arr(a), _arr(b)
    n1, n2 = len(a), len(b)
    sd = pooled_sd(a, b)
    if not np.isfinite(sd):
        return float("nan"), float("nan"), float("nan")
    diff = a.mean() - b.mean()
    tol = tolerance(a, b)
    if constant(a, tol) and constant(b, tol):
        sd, diff = 0.0, (0.0 if abs(diff) <= tol else diff)
    if sd == 0:
        g = float(np.copysign(np.inf, diff)) if diff else float("nan")
        return g, float("nan"), float("nan")
    g = (1 - 3 / (4 * (n1 + n2 - 2) - 1)) * diff / sd
    se = np.sqrt((n1 + n2) / (n1 * n2) + g**2 / (2 * (n1 + n2)))
    z = stats.norm.ppf((1 + confidence) / 2)
    return float(g), float(g - z * se), float(g + z * se)


def power(effect: float, n1: int, n2: int, alpha: float, alternative: str = "two-sided") -> float:
    """Power of the pooled two-sample t-test to detect a standardized effect (in sd units),
    from the noncentral t distribution (same as statsmodels' TTestIndPower.power, but with
    the lower tail written as an upper tail: scipy's nct.cdf returns NaN far in the tail)."""
    return _t_power(n1 + n2 - 2, effect * np.sqrt(n1 * n2 / (n1 + n2)), alpha, alternative)


def paired_power(effect: float, n: int, alpha: float, alternative: str = "two-sided") -> float:
    """Power of the paired t-test on n pairs to detect a mean difference of ``effect`` sd of
    the differences (statsmodels' TTestPower.power, the one-sample test)."""
    return _t_power(n - 1, effect * np.sqrt(n), alpha, alternative)


def _t_power(df: float, nc: float, alpha: float, alternative: str) -> float:
    if alternative == "two-sided":
        crit = stats.t.ppf(1 - alpha / 2, df)
        tails = [stats.nct.sf(crit, df, nc), stats.nct.sf(crit, df, -nc)]
    else:
        tails = [stats.nct.sf(stats.t.ppf(1 - alpha, df), df, nc)]
    return float(sum(np.nan_to_num(t, nan=0.0) for t in tails))


def standardized(effect: float, sd: float) -> float:
    """effect / sd, with an sd of 0 giving inf (any nonzero effect is certain) and 0 / 0 = 0;
    NaN where either is unknown."""
    if not np.isfinite(sd) or not np.isfinite(effect):
        return np.nan
    if sd == 0:
        return np.inf if effect else 0.0
    return effect / sd


def seeds_needed(effect: float, alpha: float, target: float = 0.8, *, paired: bool = False,
                 alternative: str = "two-sided", limit: int = 100_000) -> float:
    """Fewest seeds per level (at least 2) at which the t-test detects a standardized effect
    (|difference| / sd) with probability ``target``: two groups of n each (pooled two-sample
    test) or, ``paired``, n pairs (sd of the differences). inf when the effect is 0 or more
    than ``limit`` seeds would be needed, 2 when it is infinite (an sd of 0); NaN when it is
    unknown (an sd from fewer than 2 values)."""
    effect = abs(effect)
    if np.isnan(effect):
        return float("nan")
    if np.isinf(effect):  # no spread at all: two values a level tell the means apart
        return 2.0

    def enough(n: int) -> bool:
        got = paired_power(effect, n, alpha, alternative) if paired else power(effect, n, n, alpha, alternative)
        return got >= target

    if effect == 0 or not enough(limit):
        return float("inf")
    low, high = 1, 2  # enough(high), never enough(low): the fewest is in (low, high]
    while not enough(high):
        low, high = high, min(2 * high, limit)
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (low, mid) if enough(mid) else (mid, high)
    return float(high)


@functools.lru_cache(maxsize=4096)  # a table asks for the same (n1, n2) many times
def min_detectable_effect(n1: int, n2: int, alpha: float, target: float = 0.8,
                          alternative: str = "two-sided") -> float:
    """Smallest standardized effect (|diff| / pooled sd) that the test detects with
    probability ``target``; NaN for fewer than 2 per group, inf if none up to 1000 sd.
    Multiply by the pooled sd for metric units. For Welch tests it is the pooled-test value,
    a close approximation when the group sizes are equal."""
    if min(n1, n2) < 2:
        return float("nan")
    return _solve_effect(lambda d: power(d, n1, n2, alpha, alternative), target)


@functools.lru_cache(maxsize=4096)
def min_detectable_paired(n: int, alpha: float, target: float = 0.8, alternative: str = "two-sided") -> float:
    """min_detectable_effect of the paired t-test on n pairs, in sd of the differences."""
    if n < 2:
        return float("nan")
    return _solve_effect(lambda d: paired_power(d, n, alpha, alternative), target)


def _solve_effect(power_of, target: float) -> float:
    if power_of(1e-9) >= target:  # a target at or below α: met with no effect at all
        return 0.0
    hi = 1e3
    if power_of(hi) < target:
        return float("inf")
    return float(optimize.brentq(lambda d: power_of(d) - target, 1e-9, hi, xtol=1e-10))


def adjust(pvalues, method: str = "holm") -> np.ndarray:
    """Multiple-comparison adjusted p-values over the finite entries; NaN entries stay NaN
    and are not counted in the family. Holm and Bonferroni are computed here (statsmodels'
    Holm runs a full ``gc.collect()`` per call, seconds in a report with figures alive);
    other methods go to statsmodels ``multipletests``."""
    p = _arr(pvalues)
    out = p.copy()
    ok = np.isfinite(p)
    if method == "none" or not ok.any():
        return out
    q = p[ok]
    m = len(q)
    if method == "holm":
        order = np.argsort(q, kind="stable")
        adj = np.maximum.accumulate(q[order] * np.arange(m, 0, -1))
        q = np.empty(m)
        q[order] = np.minimum(adj, 1.0)
    elif method == "bonferroni":
        q = np.minimum(q * m, 1.0)
    else:
        from statsmodels.stats.multitest import multipletests

        q = multipletests(q, method=method)[1]
    out[ok] = q
    return out


def sign(diff: float, p: float, alpha: float) -> str:
    """The paper's cell: "+" row mean significantly higher, "-" lower, "" otherwise."""
    if not (np.isfinite(p) and p < alpha):
        return ""
    return "+" if diff > 0 else "-"


def stars(p: float) -> str:
    """Table 1's marks: * p<0.05, ** p<0.01, *** p<0.001."""
    if not np.isfinite(p):
        return ""
    return "***" if p < 0.001 else "**" if p < 0.01 else "*" if p < 0.05 else ""
