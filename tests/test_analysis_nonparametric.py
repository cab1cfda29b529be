"""Rank, survival, ratio and omnibus statistics: against scipy / statsmodels on ordinary
data, against hand-worked values, and each degenerate case by name."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps
from statsmodels.stats.anova import AnovaRM

from harness.analysis import nonparametric as npt
from harness.analysis import omnibus, stats


def test_ratio_interval_by_hand():
    # y = x / 2 exactly, paired: log(x) - log(y) has no spread, the interval is the point
    assert stats.ratio_interval([2, 4, 6], [1, 2, 3], paired=True) == pytest.approx((2.0, 2.0, 2.0))
    # unpaired: var(log ratio) = (4 / (3·16)) + (1 / (3·4)) = 1/6, Welch df = (1/6)² / (2 (1/12)² / 2) = 4
    half = sps.t.ppf(0.975, 4) * np.sqrt(1 / 6)
    assert stats.ratio_interval([2, 4, 6], [1, 2, 3]) == pytest.approx((2.0, 2 * np.exp(-half), 2 * np.exp(half)))
    assert np.isnan(stats.ratio_interval([1, 2], [-1, -2])[1])  # a mean that is not positive
    assert stats.ratio_interval(np.full(10, 0.1), np.full(7, 0.05)) == pytest.approx((2.0, 2.0, 2.0))


def test_ratio_interval_covers_the_true_ratio_95_percent_of_the_time():
    rng = np.random.default_rng(0)
    hits = 0
    for _ in range(2000):
        x, y = rng.normal(3.3, 0.3, 30), rng.normal(1.0, 0.1, 40)
        _, lo, hi = stats.ratio_interval(x, y)
        hits += lo <= 3.3 <= hi
    assert 0.93 <= hits / 2000 <= 0.97


def test_rank_tests_match_scipy_on_ordinary_data():
    rng = np.random.default_rng(1)
    a, b = rng.integers(5, 20, 10).astype(float), rng.integers(7, 22, 10).astype(float)
    assert npt.wilcoxon(a, b) == pytest.approx(sps.wilcoxon(a, b).pvalue)
    assert npt.mann_whitney(a, b) == pytest.approx(sps.mannwhitneyu(a, b, alternative="two-sided").pvalue)
    c = rng.integers(9, 24, 10).astype(float)
    assert npt.kruskal([a, b, c]) == pytest.approx(sps.kruskal(a, b, c).pvalue)
    assert npt.friedman(np.column_stack([a, b, c])) == pytest.approx(sps.friedmanchisquare(a, b, c).pvalue)


def test_wilcoxon_drops_zero_differences_like_wilcoxon():
    """42 of 60 stopping epochs identical: the test runs on the pairs that differ. Five
    differences +1..+5 and five zeros: the exact two-sided p of 5 positive ranks is 2/32."""
    a = np.array([10, 11, 12, 13, 14, 20, 20, 20, 20, 20], float)
    b = a - np.array([1, 2, 3, 4, 5, 0, 0, 0, 0, 0])
    assert npt.wilcoxon(a, b) == pytest.approx(2 / 32)


def test_degenerate_rank_tests_say_no_difference():
    same = np.full(10, 0.1)
    assert npt.wilcoxon(same, same) == 1.0  # every difference zero: scipy would warn and return NaN
    assert npt.wilcoxon(same, same + 1e-17) == 1.0  # rounding noise is no difference
    assert npt.mann_whitney(np.full(10, 0.1), np.full(7, 0.1)) == 1.0
    assert npt.kruskal([np.full(5, 3.0), np.full(5, 3.0)]) == 1.0
    assert npt.friedman(np.full((4, 3), 7.0)) == 1.0
    assert np.isnan(npt.friedman(np.ones((4, 2))))  # Friedman needs 3 levels
    assert np.isnan(npt.wilcoxon([1.0], [2.0]))


def test_logrank_matches_a_hand_computed_two_group_test():
    """Group A stops at 2, 3, 4; group B at 3, 5 and one censored at 5. At each event time
    O - E and the hypergeometric variance, summed (Mantel-Haenszel)."""
    times = np.array([2, 3, 4, 3, 5, 5], float)
    events = np.array([1, 1, 1, 1, 1, 0])
    group = np.array(["a", "a", "a", "b", "b", "b"])
    o_minus_e, var = 0.0, 0.0
    for t in np.unique(times[events == 1]):
        at_risk = times >= t
        n, na = at_risk.sum(), (at_risk & (group == "a")).sum()
        d = ((times == t) & (events == 1)).sum()
        da = ((times == t) & (events == 1) & (group == "a")).sum()
        o_minus_e += da - d * na / n
        var += d * (na / n) * (1 - na / n) * (n - d) / max(n - 1, 1)
    chisq, p = npt.logrank(times, events, group)
    assert chisq == pytest.approx(o_minus_e**2 / var)
    assert p == pytest.approx(sps.chi2.sf(o_minus_e**2 / var, 1))
    assert npt.logrank([5, 5, 5, 5], [1, 1, 1, 1], ["a", "a", "b", "b"]) == (0.0, 1.0)


def seed_frame(effect: float = 0.0, seeds: int = 8) -> pd.DataFrame:
    rng = np.random.default_rng(2)
    rows = []
    for seed in range(seeds):
        block = rng.normal(0, 5)  # the seed's own level: what blocking removes
        for k, lam in enumerate([0.0, 0.01, 1.0]):
            rows.append(dict(status="done", seed=seed, lam=lam, y=50 + block + effect * k + rng.normal(0, 1)))
    return pd.DataFrame(rows)


def test_omnibus_blocks_on_the_seed():
    frame = seed_frame(effect=1.0)
    table = omnibus.omnibus(frame, "y", "lam").set_index("test")
    groups = [g["y"].to_numpy() for _, g in frame.groupby("lam")]
    assert table.loc["one-way ANOVA", "p"] == pytest.approx(sps.f_oneway(*groups).pvalue)
    assert table.loc["Kruskal-Wallis (ranks)", "p"] == pytest.approx(sps.kruskal(*groups).pvalue)
    rm = AnovaRM(frame.assign(lam=frame["lam"].astype(str)), "y", "seed", within=["lam"]).fit().anova_table
    assert table.loc["repeated-measures ANOVA (seed as block)", "p"] == pytest.approx(rm["Pr > F"].iloc[0])
    wide = frame.pivot(index="seed", columns="lam", values="y")
    assert table.loc["Friedman (seed as block, ranks)", "p"] == pytest.approx(
        sps.friedmanchisquare(*wide.to_numpy().T).pvalue)
    # the seed-to-seed spread hides the effect from the unpaired test, not from the blocked one
    assert table.loc["repeated-measures ANOVA (seed as block)", "p"] < 0.01 < table.loc["one-way ANOVA", "p"]
    assert "log-rank (censored at the cap)" not in table.index


def test_omnibus_uses_only_complete_seeds_and_adds_log_rank_where_censored():
    frame = seed_frame().rename(columns={"y": "stop_epoch"})
    frame["hit_max_epochs"] = (frame["stop_epoch"] > 55).astype(int)
    frame = frame.iloc[1:]  # seed 0 lacks a level
    table = omnibus.omnibus(frame, "stop_epoch", "lam").set_index("test")
    assert table.loc["repeated-measures ANOVA (seed as block)", "n"] == 7
    times, events = frame["stop_epoch"].to_numpy(), 1 - frame["hit_max_epochs"].to_numpy()
    assert table.loc["log-rank (censored at the cap)", "p"] == pytest.approx(
        npt.logrank(times, events, frame["lam"].astype(str).to_numpy())[1])


def test_omnibus_on_constant_data_finds_nothing():
    frame = seed_frame().assign(y=0.1)
    assert (omnibus.omnibus(frame, "y", "lam")["p"] == 1.0).all()
