"""harness.analysis.stats: against scipy / statsmodels on the same arrays, hand-worked
cases, and invariants."""

import math

import numpy as np
import pytest
from scipy import stats as sps

from harness.analysis import stats

A = np.array([0.0031, 0.0029, 0.0033, 0.0030, 0.0032, 0.0028, 0.0034, 0.0031, 0.0030, 0.0032])
B = np.array([0.0101, 0.0098, 0.0104, 0.0099, 0.0102, 0.0097, 0.0100, 0.0103, 0.0099, 0.0101])
C = np.array([41.0, 38.0, 45.0, 50.0, 36.0, 44.0])  # unequal n and variance vs A-like groups
D = np.array([9.0, 8.0, 10.0, 9.0, 8.0, 11.0, 9.0, 10.0])


@pytest.mark.parametrize("a,b", [(A, B), (B, A), (C, D), (D, C), (A, A + 1e-4)])
@pytest.mark.parametrize("welch", [False, True])
def test_ttest_matches_scipy(a, b, welch):
    ours = stats.ttest(a, b, welch=welch)
    ref = sps.ttest_ind(a, b, equal_var=not welch)
    assert ours.t == pytest.approx(ref.statistic, rel=1e-10)
    assert ours.p == pytest.approx(ref.pvalue, rel=1e-8, abs=1e-300)
    assert ours.diff == pytest.approx(a.mean() - b.mean())
    greater = stats.ttest(a, b, welch=welch, alternative="greater")
    ref1 = sps.ttest_ind(a, b, equal_var=not welch, alternative="greater")
    assert greater.p == pytest.approx(ref1.pvalue, rel=1e-8, abs=1e-300)


def test_ttest_hand_worked():
    # a = [1, 2, 3], b = [4, 5, 6]: diff -3, both variances 1, pooled se^2 = 1 * (2/3),
    # t = -3 / sqrt(2/3) = -3.674235, df = 4.
    r = stats.ttest([1, 2, 3], [4, 5, 6])
    assert r.diff == -3 and r.df == 4
    assert r.t == pytest.approx(-3 / math.sqrt(2 / 3))
    assert r.p == pytest.approx(2 * sps.t.sf(3 / math.sqrt(2 / 3), 4))
    assert r.p == pytest.approx(0.021311641, rel=1e-6)


def test_ttest_degenerate_and_small():
    assert stats.ttest([5, 5, 5], [3, 3]).p == 0.0
    assert stats.ttest([5, 5, 5], [5, 5]).p == 1.0
    assert stats.ttest([3, 3], [5, 5, 5], alternative="greater").p == 1.0
    small = stats.ttest([1.0], [2.0, 3.0])
    assert math.isnan(small.p) and small.diff == -1.5


def test_t_interval_hand_worked_and_contains_mean():
    mean, lo, hi = stats.t_interval([1, 2, 3])
    half = sps.t.ppf(0.975, 2) * 1 / math.sqrt(3)  # sd = 1
    assert (mean, lo, hi) == pytest.approx((2, 2 - half, 2 + half))
    for x in (A, B, C, D):
        m, lo, hi = stats.t_interval(x)
        assert lo <= m <= hi
        ref = sps.t.interval(0.95, len(x) - 1, loc=x.mean(), scale=sps.sem(x))
        assert (lo, hi) == pytest.approx(ref)
    m, lo, hi = stats.t_interval([4.0])
    assert m == 4.0 and math.isnan(lo) and math.isnan(hi)


def test_hedges_g_hand_worked():
    # d = -3 / 1 = -3; J = 1 - 3 / (4 * 4 - 1) = 0.8; g = -2.4
    g, lo, hi = stats.hedges_g([1, 2, 3], [4, 5, 6])
    assert g == pytest.approx(-2.4)
    se = math.sqrt(6 / 9 + 2.4**2 / 12)
    assert (lo, hi) == pytest.approx((-2.4 - 1.959964 * se, -2.4 + 1.959964 * se), rel=1e-6)
    g2, lo2, hi2 = stats.hedges_g([4, 5, 6], [1, 2, 3])
    assert (g2, lo2, hi2) == pytest.approx((-g, -hi, -lo))


def test_power_and_mde_match_statsmodels():
    from statsmodels.stats.power import TTestIndPower

    sm = TTestIndPower()
    for n1, n2, alpha, alt in [(10, 10, 0.01, "two-sided"), (10, 7, 0.05, "two-sided"),
                               (10, 10, 0.05, "larger"), (5, 5, 0.05, "two-sided")]:
        ours_alt = "greater" if alt == "larger" else alt
        d = stats.min_detectable_effect(n1, n2, alpha, 0.8, ours_alt)
        ref = sm.solve_power(effect_size=None, nobs1=n1, ratio=n2 / n1, alpha=alpha,
                             power=0.8, alternative=alt)
        assert d == pytest.approx(ref, rel=1e-4)
        assert stats.power(d, n1, n2, alpha, ours_alt) == pytest.approx(0.8, abs=1e-6)


def test_paired_power_and_seeds_needed_match_statsmodels():
    """seeds_needed is the smallest integer at or above statsmodels' real-valued solution."""
    from statsmodels.stats.power import TTestIndPower, TTestPower

    for effect, alpha, target in [(0.3, 0.01, 0.8), (1.0, 0.05, 0.9), (2.5, 0.01, 0.8), (0.05, 0.05, 0.8)]:
        unpaired = TTestIndPower().solve_power(effect_size=effect, alpha=alpha, power=target)
        paired = TTestPower().solve_power(effect_size=effect, alpha=alpha, power=target)
        assert stats.seeds_needed(effect, alpha, target) == max(2, math.ceil(unpaired - 1e-6))
        assert stats.seeds_needed(-effect, alpha, target, paired=True) == max(2, math.ceil(paired - 1e-6))
    for n, alpha in [(10, 0.01), (4, 0.05)]:
        d = stats.min_detectable_paired(n, alpha, 0.8)
        assert d == pytest.approx(TTestPower().solve_power(nobs=n, alpha=alpha, power=0.8), rel=1e-4)
        assert stats.paired_power(d, n, alpha) == pytest.approx(0.8, abs=1e-6)
    assert stats.seeds_needed(0.0, 0.01) == math.inf and stats.seeds_needed(1e-4, 0.01) == math.inf
    assert stats.seeds_needed(math.inf, 0.01) == 2 and math.isnan(stats.seeds_needed(math.nan, 0.01))
    assert math.isnan(stats.min_detectable_paired(1, 0.01))
    assert stats.min_detectable_paired(5, 0.05, target=0.05) == 0.0  # power α needs no effect: no root to find


def test_mde_small_n_is_large_but_finite():
    # statsmodels' solve_power stops at 10.0 here; the noncentral t gives about 13.1
    d = stats.min_detectable_effect(2, 2, 0.01)
    assert 12 < d < 14
    assert math.isnan(stats.min_detectable_effect(1, 5, 0.01))
    assert stats.min_detectable_effect(3, 3, 0.01) > stats.min_detectable_effect(10, 10, 0.01)


def test_adjust_holm_hand_worked_and_not_below_raw():
    p = np.array([0.01, 0.04, 0.03, np.nan])
    adj = stats.adjust(p, "holm")
    # sorted 0.01, 0.03, 0.04 → 0.03, 0.06, 0.06 (monotone)
    assert adj[:3] == pytest.approx([0.03, 0.06, 0.06])
    assert math.isnan(adj[3])
    from statsmodels.stats.multitest import multipletests

    rng = np.random.default_rng(0)
    for method in ("holm", "bonferroni", "fdr_bh", "hommel"):
        q = rng.uniform(size=21) ** 4
        q[3] = q[7]  # a tie
        adj = stats.adjust(q, method)
        assert np.all(adj >= q - 1e-15)
        np.testing.assert_allclose(adj, multipletests(q, method=method)[1], rtol=1e-12)
    assert stats.adjust(p, "none")[:3] == pytest.approx(p[:3])


def test_sign_and_stars():
    assert stats.sign(0.5, 0.001, 0.01) == "+"
    assert stats.sign(-0.5, 0.001, 0.01) == "-"
    assert stats.sign(-0.5, 0.02, 0.01) == ""
    assert stats.sign(0.5, float("nan"), 0.01) == ""
    assert [stats.stars(p) for p in (0.0004, 0.0035, 0.0155, 0.2, float("nan"))] == \
        ["***", "**", "*", "", ""]


@pytest.mark.parametrize("a,b", [(A, B), (B, A), (C, C[::-1] + 0.5), (A, A + np.linspace(0, 1e-5, 10))])
def test_paired_ttest_matches_scipy(a, b):
    ours, ref = stats.paired_ttest(a, b), sps.ttest_rel(a, b)
    assert ours.t == pytest.approx(ref.statistic, rel=1e-10)
    assert ours.p == pytest.approx(ref.pvalue, rel=1e-8, abs=1e-300)
    assert ours.df == len(a) - 1 and ours.diff == pytest.approx(np.mean(a - b))


def test_paired_ttest_hand_worked_and_degenerate():
    # differences [1, 2, 3]: mean 2, sd 1, t = 2 / (1 / sqrt 3) = 3.4641, df = 2
    r = stats.paired_ttest([2, 4, 6], [1, 2, 3])
    assert r.t == pytest.approx(2 * math.sqrt(3)) and r.df == 2
    assert r.p == pytest.approx(2 * sps.t.sf(2 * math.sqrt(3), 2))
    # the unpaired test cannot see a shift that every pair shows; the paired test can
    a = np.array([1.0, 5.0, 9.0, 13.0])
    assert stats.ttest(a + 0.01 * np.array([1, 1.1, 0.9, 1]), a).p > 0.9
    assert stats.paired_ttest(a + 0.01 * np.array([1, 1.1, 0.9, 1]), a).p < 1e-3
    assert stats.paired_ttest([5, 6, 7], [5, 6, 7]).p == 1.0  # identical pairs
    assert stats.paired_ttest([6, 7, 8], [5, 6, 7]).p == 0.0  # the same shift in every pair
    assert math.isnan(stats.paired_ttest([1.0], [2.0]).p)


def test_constant_groups_are_not_significant_from_rounding():
    """Defect: the mean of seven 0.1s differs from the mean of ten in the last bit, their
    variance was 2e-34, and the test gave p = 0.0095 ("+" in a sign table)."""
    a, b = np.full(10, 0.1), np.full(7, 0.1)
    assert a.mean() != b.mean()  # the rounding the tests must not read as an effect
    for welch in (False, True):
        tt = stats.ttest(a, b, welch=welch)
        assert (tt.diff, tt.p) == (0.0, 1.0)
        assert stats.sign(tt.diff, tt.p, 0.01) == ""
    assert stats.ttest(a, b, alternative="greater").p == 1.0
    assert math.isnan(stats.hedges_g(a, b)[0])
    # a paired difference that is rounding alone: 0.1 * 3 is 0.30000000000000004
    paired = stats.paired_ttest(np.full(7, 0.1) * 3, np.full(7, 0.3))
    assert (paired.diff, paired.p) == (0.0, 1.0)
    # a real difference between constant groups still counts, and a small spread is not rounding
    assert stats.ttest(np.full(5, 0.2), np.full(5, 0.1)).p == 0.0
    spread = np.full(10, 0.1) + np.r_[1e-9, np.zeros(9)]
    assert stats.ttest(spread, b).p == pytest.approx(sps.ttest_ind(spread, b).pvalue)


def test_paired_tost_matches_statsmodels_and_its_degenerate_cases():
    from statsmodels.stats.weightstats import ttost_paired

    rng = np.random.default_rng(3)
    a = rng.normal(10, 1, 10)
    for shift, delta in ((0.1, 0.5), (0.4, 0.5), (1.0, 0.5), (-0.2, 0.3)):
        b = a + shift + rng.normal(0, 0.3, 10)
        assert stats.paired_tost(a, b, delta) == pytest.approx(ttost_paired(a, b, -delta, delta)[0], rel=1e-10)
    assert stats.paired_tost(a, a + 0.1, 0.5) == 0.0 and stats.paired_tost(a, a + 1.0, 0.5) == 1.0
    assert math.isnan(stats.paired_tost(a[:1], a[:1], 0.5)) and math.isnan(stats.paired_tost(a, a, 0.0))


def test_tost_matches_statsmodels_and_its_degenerate_cases():
    from statsmodels.stats.weightstats import ttost_ind

    for a, b, delta in ((A, A + 1e-5, 2e-4), (A, B, 1e-3), (C, D, 40.0), (A, A * 1.02, 1e-4)):
        assert stats.tost(a, b, delta) == pytest.approx(ttost_ind(a, b, -delta, delta)[0], rel=1e-10)
    assert stats.tost(np.full(10, 0.1), np.full(7, 0.1), 1e-3) == 0.0
    assert stats.tost(np.full(5, 0.2), np.full(5, 0.1), 1e-3) == 1.0
    assert math.isnan(stats.tost(A[:1], B, 1.0)) and math.isnan(stats.tost(A, B, 0.0))


def test_the_bound_of_a_difference_between_constant_groups_is_the_difference():
    """Defect: Welch's degrees of freedom are 0/0 when neither group varies; the bound was
    NaN, and Table 1 read "undecided" where every replication was 0.1 below the base."""
    a, b = [0.6] * 5, [0.7] * 5
    for welch in (False, True):
        assert stats.diff_upper_bound(a, b, 0.05, welch=welch) == pytest.approx(-0.1)
        assert stats.diff_upper_bound(b, b, 0.05, welch=welch) == 0.0
