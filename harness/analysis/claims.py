"""The paper's headline claims (paper.CLAIMS) checked cell by cell, each on its interval.

A claim is a range that a quantity of one cell should fall in: a mean ("stopping epoch
8-10"), the ratio of a base level's mean to the cell's ("up to 4× fewer epochs"), or a
contrast between two groups of levels ("val MSE ≈ 0.003 at low λ vs ≈ 0.010 at high λ":
their ratio). Each cell gets the quantity's 95% interval, and the verdict reads the
interval, not the point: "holds" when the interval lies inside the published range, "no"
when it lies outside it, "inconclusive" when it straddles a bound (the seeds cannot tell),
"?" when fewer than 2 replications leave no interval.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from harness.analysis import stats
from harness.analysis.grouping import DONE, UNTESTABLE, matches, select, slices, sort_key
from harness.analysis.by_seed import seed_pairs

INCONCLUSIVE = "inconclusive"


def interval_verdict(lo: float, hi: float, low, high) -> str:
    """'holds' ([lo, hi] inside [low, high]; None is unbounded), 'no' (outside), else
    'inconclusive'; '?' without an interval."""
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return UNTESTABLE
    if low is None and high is None:
        return ""
    above = low is None or lo >= low
    below = high is None or hi <= high
    if above and below:
        return "holds"
    if (high is not None and lo > high) or (low is not None and hi < low):
        return "no"
    return INCONCLUSIVE


def _in_where(value, cond) -> bool:
    if isinstance(cond, dict):
        return float(value) > float(cond["above"])
    return any(matches(pd.Series([value]), c).iloc[0] for c in cond)


def _range_text(low, high) -> str:
    if low is not None and high is not None:
        return f"{low:g} to {high:g}"
    return f"> {low:g}" if low is not None else (f"< {high:g}" if high is not None else "(shown)")


def _finite(frame: pd.DataFrame, metric: str) -> np.ndarray:
    values = frame[metric].to_numpy(dtype=float)
    return values[np.isfinite(values)]


def _ratio_to(done: pd.DataFrame, at: dict, metric: str, ratio_to) -> tuple[int, float, float, float]:
    """(pairs, ratio, lo, hi): mean at the base level over the cell's mean. Over the seeds
    both cells have where there is a seed: a run cut short has more seeds at some levels,
    and unpaired means would show their spread as a ratio."""
    factor, level = ratio_to
    if "seed" in done.columns:
        rest = {c: v for c, v in at.items() if c != factor}
        base, values = seed_pairs(select(done, rest), metric, factor, level, at[factor])
        return (len(values), *stats.ratio_interval(base, values, paired=True))
    base, values = _finite(select(done, {**at, factor: level}), metric), _finite(select(done, at), metric)
    return (len(values), *stats.ratio_interval(base, values))


def _contrast(done: pd.DataFrame, at: dict, metric: str, contrast) -> tuple[int, int, float, float, float]:
    """(n, n_vs, ratio, lo, hi): the mean over the numerator levels over the mean over the
    denominator levels, unpaired (each group pools several levels)."""
    factor, num_levels, den_levels = contrast
    cell = select(done, at)
    num = _finite(cell[cell[factor].map(lambda v: _in_where(v, num_levels))], metric)
    den = _finite(cell[cell[factor].map(lambda v: _in_where(v, den_levels))], metric)
    return (len(num), len(den), *stats.ratio_interval(num, den))


def claim_cells(frame: pd.DataFrame, claim: dict, factors: list[str]) -> pd.DataFrame:
    """One row per cell a claim (paper.CLAIMS) speaks of, and per value of the study's
    other factors: n, the mean (ratio) with its 95% t-interval (delta-method interval of
    the log ratio), the published range, and the interval's verdict."""
    where = dict(claim["where"])
    for col in where:
        if col not in frame.columns:
            raise KeyError(f"no column {col!r} in the study's results")
    metric, low, high = claim["metric"], claim.get("low"), claim.get("high")
    ratio_to, contrast = claim.get("ratio_to"), claim.get("contrast")
    if contrast is not None and contrast[0] not in frame.columns:
        raise KeyError(f"no column {contrast[0]!r} in the study's results")
    exclude = tuple(where) + ((contrast[0],) if contrast else ())
    rows = []
    for labels, sub in slices(frame, None, factors, exclude=exclude):
        done = sub[sub["status"] == DONE]
        cells = sub[list(where)].drop_duplicates()
        cells = sorted(cells.itertuples(index=False, name=None), key=lambda t: tuple(sort_key(v) for v in t))
        for cell in cells:
            if not all(_in_where(v, where[c]) for c, v in zip(where, cell)):
                continue
            at = dict(zip(where, cell))
            row = {**labels, **at}
            if contrast is not None:
                n, n_vs, value, lo, hi = _contrast(done, at, metric, contrast)
                row.update(n=n, n_vs=n_vs, ratio=value)
                n = min(n, n_vs)
            elif ratio_to is not None:
                n, value, lo, hi = _ratio_to(done, at, metric, ratio_to)
                row.update(n=n, ratio=value)
            else:
                values = _finite(select(done, at), metric)
                n, (value, lo, hi) = len(values), stats.t_interval(values)
                row.update(n=n, mean=value)
            row.update(ci_lo=lo, ci_hi=hi, published=_range_text(low, high))
            row["verdict"] = (UNTESTABLE if n < 2 or not np.isfinite(value) else
                              interval_verdict(lo, hi, low, high))
            rows.append(row)
    return pd.DataFrame(rows)


def largest_verdict(claim: dict, cells: pd.DataFrame) -> tuple[pd.Series, str]:
    """An "up to r" ratio claim: the cell with the largest ratio, and 'holds' / 'no' /
    'inconclusive'. No cell can reach r when every upper bound is below the range; the
    largest exceeds it when its lower bound is above."""
    ratios = cells["ratio"].astype(float)
    top = cells.loc[ratios.idxmax()]
    lo, hi = claim["largest"]
    if (cells["ci_hi"].astype(float) < lo).all() or float(top["ci_lo"]) >= hi:
        return top, "no"
    if lo <= float(top["ci_lo"]) and float(top["ci_hi"]) < hi:
        return top, "holds"
    return top, INCONCLUSIVE


def claim_sentence(claim: dict, cells: pd.DataFrame) -> str:
    """'holds in 3 of 4 cells (1 inconclusive)' or, for an "up to" ratio claim, its
    largest ratio with its interval against the published value."""
    if not len(cells):
        return "no replications in the cells it speaks of"
    if "largest" in claim:
        ratios = cells["ratio"].astype(float)
        if not np.isfinite(ratios).any():
            return "not testable (no base replications)"
        top, word = largest_verdict(claim, cells)
        verdict = {"holds": "agrees with", "no": "does not agree with"}.get(
            word, "cannot tell (inconclusive) whether it agrees with")
        return (f"largest ratio {float(top['ratio']):.2f} [{float(top['ci_lo']):.2f}, {float(top['ci_hi']):.2f}], "
                f"smallest {float(ratios.min()):.2f}: {verdict} the published value")
    tested = cells[cells["verdict"] != UNTESTABLE]
    held = int((tested["verdict"] == "holds").sum())
    unsure = int((tested["verdict"] == INCONCLUSIVE).sum())
    notes = [f"{unsure} inconclusive"] * bool(unsure)
    if len(tested) < len(cells):
        notes.append(f"{len(cells) - len(tested)} untestable")
    return f"holds in {held} of {len(tested)} cells" + (f" ({', '.join(notes)})" if notes else "")
