"""Rank and survival tests on plain arrays, for metrics the t-tests fit badly.

A stopping epoch is an integer with many ties (most seeds stop at the same epoch at two λ
levels) and is censored where a replication reached ``train.max_epochs``. The rank tests
(Wilcoxon signed-rank, Mann-Whitney U, Friedman, Kruskal-Wallis) assume no normality; the
log-rank test takes the censoring into account. scipy and statsmodels compute each one;
this module decides the degenerate cases as ``stats`` does: values within rounding
(``stats.tolerance``) of each other are ties, and no difference at all gives p = 1 where
scipy would return NaN or divide by zero. Fewer values than a test needs give NaN.
"""

from __future__ import annotations

import numpy as np
from scipy import stats as sps

from harness.analysis.stats import _arr, constant, tolerance


def _snap(x: np.ndarray, tol: float) -> np.ndarray:
    """Values within ``tol`` of each other made equal (ranked as ties, not by rounding noise)."""
    if tol <= 0 or not len(x):
        return x
    return np.round(x / tol) * tol


def wilcoxon(a, b) -> float:
    """Two-sided Wilcoxon signed-rank p of the paired differences a[i] - b[i] (scipy's
    ``wilcoxon``, zero differences dropped as Wilcoxon did: ``zero_method="wilcox"``).
    Every difference zero (to rounding): 1; fewer than 2 pairs: NaN."""
    a, b = _arr(a), _arr(b)
    if len(a) < 2:
        return float("nan")
    d = a - b
    d[np.abs(d) <= tolerance(a, b)] = 0.0
    if not d.any():
        return 1.0
    return float(sps.wilcoxon(d, zero_method="wilcox", alternative="two-sided").pvalue)


def mann_whitney(a, b) -> float:
    """Two-sided Mann-Whitney U p of two independent groups (scipy's ``mannwhitneyu``,
    exact without ties, the normal approximation with its tie correction otherwise). Both
    groups one and the same constant (to rounding): 1; fewer than 2 in a group: NaN."""
    a, b = _arr(a), _arr(b)
    if min(len(a), len(b)) < 2:
        return float("nan")
    tol = tolerance(a, b)
    if constant(np.concatenate([a, b]), tol):
        return 1.0
    return float(sps.mannwhitneyu(_snap(a, tol), _snap(b, tol), alternative="two-sided").pvalue)


def kruskal(groups: list) -> float:
    """Kruskal-Wallis H p over independent groups (the rank one-way ANOVA; scipy's
    ``kruskal``). Every value the same (to rounding): 1; fewer than 2 groups of 2: NaN."""
    groups = [_arr(g) for g in groups if len(g) >= 2]
    if len(groups) < 2:
        return float("nan")
    tol = tolerance(*groups)
    if constant(np.concatenate(groups), tol):
        return 1.0
    return float(sps.kruskal(*(_snap(g, tol) for g in groups)).pvalue)


def friedman(blocks) -> float:
    """Friedman χ² p of a blocks × treatments table (one row per seed, one column per
    level; scipy's ``friedmanchisquare``, which wants 3 levels or more). Every block
    constant (to rounding): 1; fewer than 2 blocks or 3 levels: NaN."""
    x = np.asarray(blocks, dtype=float)
    if x.ndim != 2 or x.shape[0] < 2 or x.shape[1] < 3:
        return float("nan")
    tol = tolerance(x)
    if all(constant(row, tol) for row in x):
        return 1.0
    x = _snap(x, tol)
    return float(sps.friedmanchisquare(*x.T).pvalue)


def logrank(times, events, groups) -> tuple[float, float]:
    """(χ², p) of the log-rank test that every group's time-to-event distribution is the
    same (statsmodels' ``survdiff``; df = groups - 1). ``events`` is 1 where the event
    happened (training stopped by its rule) and 0 where the time is censored (training
    ended at the cap). Fewer than 2 groups: NaN; no events, or every time the same: no
    difference, (0, 1)."""
    from statsmodels.duration.survfunc import survdiff

    t, e = _arr(times), _arr(events).astype(int)
    g = np.asarray(groups).ravel()
    if len(set(g.tolist())) < 2 or len(t) < 2:
        return float("nan"), float("nan")
    if not e.any() or constant(t, tolerance(t)):
        return 0.0, 1.0
    chisq, p = survdiff(t, e, g)
    return float(chisq), float(p)
