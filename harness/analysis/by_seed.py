"""The same comparison seed by seed: a replication's initial weights and data order
come from its seed, so two levels can be compared on the seeds both have, without the
seed-to-seed spread the unpaired tests keep; and how many seeds a comparison needs."""

from __future__ import annotations

import numpy as np
import pandas as pd

from harness.analysis import nonparametric, stats
from harness.analysis.grouping import DONE, check_metric, groups, level_label, matches, slices, sorted_levels
from harness.analysis.significance import add_signs, margin, margin_delta, margin_words, verdict


def seed_pairs(frame: pd.DataFrame, metric: str, factor: str, a, b) -> tuple[np.ndarray, np.ndarray]:
    """``metric`` at ``factor`` = a and = b for each seed with one done replication and a
    finite value at both, aligned and in seed order. The harness derives a replication's
    initial weights and data order from its seed alone (``study.derive_seed``), so two
    such replications differ only in ``factor`` (within a slice where the rest is fixed)."""
    done = frame[(frame["status"] == DONE) & np.isfinite(frame[metric].astype(float))]

    def by_seed(level) -> pd.Series:
        at = done[matches(done[factor], level)]
        once = at["seed"].map(at["seed"].value_counts()) == 1  # a seed seen twice is no pair
        return at.loc[once].set_index("seed")[metric].astype(float)

    x, y = by_seed(a), by_seed(b)
    seeds = sorted(set(x.index) & set(y.index))
    return x.loc[seeds].to_numpy(), y.loc[seeds].to_numpy()


def paired_by_seed(frame: pd.DataFrame, metric: str, factor: str, *, baseline=None, alpha: float = 0.01,
                   correction: str = "holm", confidence: float = 0.95, equivalence: float | None = None,
                   rank: bool = False) -> pd.DataFrame:
    """Each level of ``factor`` against ``baseline`` (default: its lowest level), seed by
    seed: per level the pairs, how many are identical / higher / lower, the mean paired
    difference (level − baseline) with its t-interval and paired t-test (corrected across
    the levels), and ``seed_r``, the correlation of the two over seeds (near 1: the seed,
    not the level, sets the value). Removes the seed-to-seed spread that the unpaired
    tests of the paper keep. ``delta`` = ``equivalence`` (default EQUIVALENCE) times the
    baseline's mean (its error, for a rate: margin_delta); ``p_equiv`` its paired TOST; ``verdict`` differs / equivalent /
    inconclusive (uncorrected, as ``sign``). ``rank`` adds ``p_rank``, the Wilcoxon
    signed-rank test of the pairs that differ (a discrete metric with many identical
    pairs). Empty when no level has a pair."""
    columns = [factor, "vs", "n_pairs", "identical", "higher", "lower", "mean_diff", "ci_lo", "ci_hi",
               "rel_diff", "p", "p_adj", "sign", "sign_adj", "seed_r", "delta", "p_equiv", "verdict"] + ["p_rank"] * rank
    margin_ = margin(metric) if equivalence is None else equivalence
    if "seed" not in frame.columns:
        return pd.DataFrame(columns=columns)
    levels = sorted_levels(frame[factor])
    if baseline is None and levels:
        baseline = levels[0]
    rows = []
    for level in levels:
        if matches(pd.Series([level]), baseline).iloc[0]:
            continue
        x, y = seed_pairs(frame, metric, factor, level, baseline)
        if not len(x):
            continue
        d = x - y
        mean, lo, hi = stats.t_interval(d, confidence)
        test = stats.paired_ttest(x, y)
        r = float(np.corrcoef(x, y)[0, 1]) if len(x) > 2 and x.std() > 0 and y.std() > 0 else np.nan
        rows.append({factor: level, "vs": baseline, "n_pairs": len(d), "identical": int((d == 0).sum()),
                     "higher": int((d > 0).sum()), "lower": int((d < 0).sum()), "mean_diff": mean,
                     "ci_lo": lo, "ci_hi": hi, "rel_diff": mean / y.mean() if y.mean() else np.nan,
                     "p": test.p, "seed_r": r, "delta": margin_delta(metric, margin_, float(y.mean())),
                     "p_equiv": stats.paired_tost(x, y, margin_delta(metric, margin_, float(y.mean()))),
                     **({"p_rank": nonparametric.wilcoxon(x, y)} if rank else {})})
    out = pd.DataFrame(rows, columns=columns)
    if len(out):
        add_signs(out, "mean_diff", "n_pairs", "n_pairs", alpha=alpha, correction=correction)
        out["verdict"] = [verdict(sg, pe, alpha) for sg, pe in zip(out["sign"], out["p_equiv"])]
    return out


def seed_plan(frame: pd.DataFrame, metric: str, factor: str, factors: list[str], *, at=None,
              effect: float | None = None, rel_effect: float | None = None, alpha: float = 0.01,
              power: float = 0.8) -> pd.DataFrame:
    """How many seeds a comparison needs, from the spread the recorded replications show:
    per slice (the other varying factors) every level of ``factor`` against its lowest.
    ``mde``: the smallest difference (metric units) found with probability ``power`` at
    ``alpha`` (two-sided) with the seeds recorded now; ``seeds``: the seeds per level that
    find a difference of ``effect`` (metric units) or of ``rel_effect`` × |the lowest
    level's mean|. Both for the unpaired two-sample t-test (the paper's) and the paired
    one (the same seed at both levels: sd of the differences). The sd is an estimate from
    the seeds at hand, as rough as they are few."""
    if effect is not None and rel_effect is not None:
        raise ValueError("give an effect in metric units or a relative one, not both")
    check_metric(frame, metric)
    rows = []
    for labels, sub in slices(frame, at, factors, exclude=(factor,)):
        grp = groups(sub, metric, factor)
        levels = list(grp)
        if len(levels) < 2:
            continue
        base = levels[0]
        y = grp[base]
        target = effect
        if rel_effect is not None:
            target = rel_effect * abs(y.mean()) if len(y) else np.nan
        for level in levels[1:]:
            x = grp[level]
            sd = stats.pooled_sd(x, y)
            xp, yp = seed_pairs(sub, metric, factor, level, base) if "seed" in sub.columns else ([], [])
            sd_diff = float(np.std(np.subtract(xp, yp), ddof=1)) if len(xp) > 1 else np.nan
            row = {**{k: level_label(v) for k, v in labels.items()}, factor: level, "vs": base,
                   "n": len(x), "n_vs": len(y), "diff": x.mean() - y.mean() if len(x) and len(y) else np.nan,
                   "sd": sd, "mde": stats.min_detectable_effect(len(x), len(y), alpha, power) * sd,
                   "n_pairs": len(xp), "sd_diff": sd_diff,
                   "mde_paired": stats.min_detectable_paired(len(xp), alpha, power) * sd_diff}
            if target is not None:
                row["effect"] = target
                row["seeds"] = stats.seeds_needed(stats.standardized(target, sd), alpha, power)
                row["seeds_paired"] = stats.seeds_needed(stats.standardized(target, sd_diff), alpha, power, paired=True)
            rows.append(row)
    return pd.DataFrame(rows)


def paired_sentence(paired: pd.DataFrame, metric: str, factor: str, alpha: float,
                    equivalence: float | None = None, words: tuple[str, str] | None = None) -> str:
    """One line on a paired_by_seed table: how many levels differ from the baseline, the
    largest mean paired difference, and how many pairs are identical. ``words``: the
    metric and the factor as the text names them ("validation MSE", "λ1"; default the
    column names)."""
    said_metric, said_factor = words or (metric, factor)
    base = level_label(paired["vs"].iloc[0])
    tested = paired[paired["n_pairs"] >= 2]
    differ = tested[tested["sign"].isin(["+", "-"])]
    equivalent = tested[tested["verdict"] == "equivalent"] if "verdict" in tested.columns else tested.iloc[:0]
    within = " within " + margin_words(metric, margin(metric) if equivalence is None else equivalence, "its")
    text = (f"{len(differ)} of {len(tested)} {said_factor} levels differ from {said_factor} = {base} "
            f"(paired t, α = {alpha:g}, uncorrected), {len(equivalent)} are shown equivalent to it{within} "
            f"(paired TOST, α = {alpha:g}), {len(tested) - len(differ) - len(equivalent)} inconclusive")
    if len(tested):
        big = tested.loc[tested["mean_diff"].abs().idxmax()]
        rel = f", {100 * float(big['rel_diff']):+.3g}% of the mean at {base}" if np.isfinite(big["rel_diff"]) else ""
        text += (f"; the largest mean paired difference in {said_metric} is {float(big['mean_diff']):.3g} "
                 f"[{float(big['ci_lo']):.3g}, {float(big['ci_hi']):.3g}] at {level_label(big[factor])}{rel}")
    n, same = int(paired["n_pairs"].sum()), int(paired["identical"].sum())
    return text + f"; {same} of {n} pairs are identical"
