"""The paper's significance tables (Fig. 3b-6b): every pair of levels tested, the sign
tables, their equivalence verdicts, and the comparison with the published signs."""

from __future__ import annotations

import numpy as np
import pandas as pd

from harness.analysis import nonparametric, paper, stats
from harness.analysis.grouping import UNTESTABLE, level_label, sort_key, sorted_levels


# The equivalence margin of a comparison, as a fraction of the compared means (paired: of
# the baseline's): two levels "equivalent" differ by less than this, shown by TOST. 5%
# unless the metric has its own (a stopping epoch moves in whole epochs: 10%).
EQUIVALENCE = {"stop_epoch": 0.10, "best_epoch": 0.10}
EQUIVALENCE_DEFAULT = 0.05
# A rate bounded by 1 where higher is better (an accuracy, an IoU) takes its margin as a
# fraction of its error, 1 − mean: 5% of an accuracy of 0.99 is 5 points, more than any
# gain Table 1 reports, and would call equivalent what differs seed by seed in every pair;
# 5% of its error is 0.05 points.
OF_ERROR = frozenset({"train_acc", "val_acc", "test_acc", "train_iou", "val_iou"})


def margin(metric: str) -> float:
    """The equivalence margin of ``metric``, a fraction of the compared means (of their
    error, for a metric in OF_ERROR)."""
    return EQUIVALENCE.get(metric, EQUIVALENCE_DEFAULT)


def margin_delta(metric: str | None, fraction: float, mean: float) -> float:
    """The margin in metric units: ``fraction`` of |mean|, or of 1 − mean for a rate in OF_ERROR
    (floored at float64's resolution, so that two perfect accuracies are equivalent, not
    untestable for a margin of 0)."""
    if metric in OF_ERROR:
        return fraction * max(abs(1.0 - mean), np.finfo(float).eps)
    return fraction * abs(mean)


def margin_words(metric: str | None, fraction: float, whose: str) -> str:
    """'±5% of the pair's mean', or '±5% of the pair's error (1 − mean)' for a rate in OF_ERROR."""
    return f"±{100 * fraction:g}% of {whose} " + ("error (1 − mean)" if metric in OF_ERROR else "mean")



def pairwise(groups_: dict, *, alpha: float = 0.01, test: str = "student",
             correction: str = "holm", power: float = 0.8, equivalence: float | None = None,
             metric: str | None = None, rank: bool = False, survival: dict | None = None) -> pd.DataFrame:
    """Two-sided t-test of every ordered pair (row ≠ col) of levels; long form.

    The correction family is the unordered pairs (each test once); the mirrored cell gets
    the same p with the difference's sign flipped. ``mde`` is the smallest |difference|
    (metric units) detectable with probability ``power`` at ``alpha`` (raw) with these n.
    ``p_equiv``: the pooled TOST within ±``equivalence`` (default: ``metric``'s margin)
    × the mean of the two groups' means (its error, for a rate: margin_delta); ``verdict3``: differs (uncorrected sign) / equivalent / inconclusive.
    ``rank`` adds ``p_rank``, the Mann-Whitney U test (a discrete metric with ties);
    ``survival`` ({level: (times, events)}) adds ``p_logrank``, the log-rank test of the
    two levels (a metric censored at a cap). Both uncorrected, beside ``p``.
    """
    levels = list(groups_)
    fraction = margin(metric or "") if equivalence is None else equivalence
    tests, extra = {}, {}
    for i, a in enumerate(levels):
        for b in levels[i + 1:]:
            x, y = groups_[a], groups_[b]
            tt = stats.ttest(x, y, welch=test == "welch")
            g = stats.hedges_g(x, y)
            mde_sd = stats.min_detectable_effect(len(x), len(y), alpha, power)
            delta = margin_delta(metric, fraction, float(np.mean([x.mean(), y.mean()]))) if len(x) and len(y) else np.nan
            tests[a, b] = (tt, g, mde_sd, mde_sd * stats.pooled_sd(x, y), stats.tost(x, y, delta))
            if rank:
                extra[a, b] = {"p_rank": nonparametric.mann_whitney(x, y)}
            if survival is not None:
                (ta, ea), (tb, eb) = survival[a], survival[b]
                extra.setdefault((a, b), {})["p_logrank"] = nonparametric.logrank(
                    np.concatenate([ta, tb]), np.concatenate([ea, eb]), np.repeat([0, 1], [len(ta), len(tb)]))[1]
    keys = list(tests)
    adjusted = dict(zip(keys, stats.adjust([tests[k][0].p for k in keys], correction)))
    rows = []
    for a in levels:
        for b in levels:
            if a == b:
                continue
            flip = (a, b) not in tests
            tt, g, mde_sd, mde, p_equiv = tests[(b, a) if flip else (a, b)]
            s = -1.0 if flip else 1.0
            g_lo, g_hi = (-g[2], -g[1]) if flip else (g[1], g[2])
            p_adj = adjusted[(b, a) if flip else (a, b)]
            x, y = groups_[a], groups_[b]
            rows.append(dict(
                row=a, col=b, n_row=len(x), n_col=len(y),
                mean_row=x.mean() if len(x) else np.nan, mean_col=y.mean() if len(y) else np.nan,
                diff=s * tt.diff, t=s * tt.t, df=tt.df, p=tt.p, p_adj=p_adj,
                sign=sign_cell(s * tt.diff, tt.p, alpha, len(x), len(y)),
                sign_adj=sign_cell(s * tt.diff, p_adj, alpha, len(x), len(y)),
                g=s * g[0], g_lo=g_lo, g_hi=g_hi, mde_sd=mde_sd, mde=mde,
                verdict=_verdict(tt.p, alpha, len(x), len(y), mde, power), p_equiv=p_equiv,
                verdict3=verdict(sign_cell(s * tt.diff, tt.p, alpha, len(x), len(y)), p_equiv, alpha),
                **extra.get((b, a) if flip else (a, b), {})))
    return pd.DataFrame(rows, columns=[
        "row", "col", "n_row", "n_col", "mean_row", "mean_col", "diff", "t", "df", "p", "p_adj",
        "sign", "sign_adj", "g", "g_lo", "g_hi", "mde_sd", "mde", "verdict", "p_equiv", "verdict3"]
        + ["p_rank"] * rank + ["p_logrank"] * (survival is not None))


def verdict_counts(long: pd.DataFrame) -> str:
    """'a differ, b equivalent, c inconclusive' over the unordered pairs of a pairwise table."""
    once = long[[sort_key(r) < sort_key(c) for r, c in zip(long["row"], long["col"])]]
    counts = once["verdict3"].value_counts()
    text = ", ".join(f"{int(counts.get(v, 0))} {w}" for v, w in
                     (("differs", "differ"), ("equivalent", "equivalent"), ("inconclusive", "inconclusive")))
    return text + (f", {int(counts[UNTESTABLE])} untestable" if UNTESTABLE in counts else "")


def sign_cell(diff, p, alpha, n1, n2) -> str:
    return UNTESTABLE if min(n1, n2) < 2 else stats.sign(diff, p, alpha)


def _verdict(p, alpha, n1, n2, mde, power) -> str:
    if min(n1, n2) < 2:
        return f"untestable: n={n1} vs {n2} (fewer than 2)"
    if np.isfinite(p) and p < alpha:
        return "significant"
    return f"not significant; a true difference >= {mde:.3g} would be found with power {power:g}"


def sign_matrix(long: pd.DataFrame, column: str = "sign") -> pd.DataFrame:
    """Square matrix of ``column`` (row level × col level), labelled, diagonal blank."""
    return _square(long, column, "")


def value_matrix(long: pd.DataFrame, column: str) -> pd.DataFrame:
    """Square matrix of a numeric column of the long table (NaN on the diagonal)."""
    return _square(long, column, np.nan)


def _square(long: pd.DataFrame, column: str, diagonal) -> pd.DataFrame:
    levels = sorted_levels(list(long["row"]) + list(long["col"]))
    labels = [level_label(v) for v in levels]
    cells = {(level_label(r), level_label(c)): v for r, c, v in zip(long["row"], long["col"], long[column])}
    return pd.DataFrame([[cells.get((a, b), diagonal) for b in labels] for a in labels],
                        index=labels, columns=labels)


def published_signs(key: str) -> pd.DataFrame:
    """The paper's sign matrix ``paper.SIGN_TABLES[key]`` as a labelled DataFrame."""
    labels = [level_label(v) for v in paper.SIGN_TABLES[key]["levels"]]
    return pd.DataFrame(paper.sign_rows(key), index=labels, columns=labels)


def compare_signs(ours: pd.DataFrame, theirs: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
    """Cell-by-cell agreement of two sign matrices over their common levels (off-diagonal).

    Returns the matrix (``✓`` agree, ``ours≠theirs`` with ``·`` for blank, ``?`` untestable)
    and counts {"agree", "compared", "untestable", "missing_levels"}.
    """
    common = [l for l in ours.index if l in theirs.index]
    m = pd.DataFrame("", index=common, columns=common)
    agree = compared = untestable = 0
    for r in common:
        for c in common:
            if r == c:
                continue
            a, b = ours.loc[r, c], theirs.loc[r, c]
            if a == UNTESTABLE:
                untestable += 1
                m.loc[r, c] = UNTESTABLE
                continue
            compared += 1
            agree += a == b
            m.loc[r, c] = "✓" if a == b else f"{a or '·'}≠{b or '·'}"
    missing = [l for l in theirs.index if l not in ours.index]
    return m, dict(agree=agree, compared=compared, untestable=untestable, missing_levels=missing)


def agreement_sentence(counts: dict, what: str = "cells") -> str:
    """'31 of 42 cells agree' plus what could not be compared."""
    return f"{counts['agree']} of {counts['compared']} {what} agree{caveats(counts)}"


def caveats(counts: dict) -> str:
    """'; 6 untestable (...); levels not run: 10' or ''."""
    s = ""
    if counts.get("untestable"):
        s += f"; {counts['untestable']} untestable (fewer than 2 replications)"
    if counts.get("missing_levels"):
        s += f"; levels not run: {', '.join(counts['missing_levels'])}"
    return s


def verdict(sign: str, p_equiv: float, alpha: float) -> str:
    """'differs' (the t-test's sign), 'equivalent' (TOST), or 'inconclusive' (neither)."""
    if sign in ("+", "-"):
        return "differs"
    if np.isfinite(p_equiv) and p_equiv < alpha:
        return "equivalent"
    return UNTESTABLE if sign == UNTESTABLE else "inconclusive"


def add_signs(table: pd.DataFrame, diff: str, n_a: str, n_b: str, *, alpha: float, correction: str) -> None:
    """Fill ``p_adj`` (``correction`` across the table's rows), and the cells ``sign`` and
    ``sign_adj`` of each row's test (``p``) from its ``diff`` and group sizes, in place."""
    table["p_adj"] = stats.adjust(table["p"], correction)
    for sign, p in (("sign", "p"), ("sign_adj", "p_adj")):
        table[sign] = [sign_cell(d, q, alpha, a, b) for d, q, a, b in zip(table[diff], table[p], table[n_a], table[n_b])]
