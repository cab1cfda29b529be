"""Omnibus tests of a factor over its levels, on the replication frame.

Per significance table: does ``factor`` matter at all? The unpaired one-way ANOVA treats
every replication as independent; a replication's initial weights and data order come
from its seed, so the seed is a block, and the repeated-measures ANOVA (and its rank
version, Friedman) take the seed-to-seed spread out. The rank tests (Kruskal-Wallis,
Friedman) suit a discrete, tied metric such as a stopping epoch; where some stopping
epochs are censored at ``train.max_epochs``, the log-rank test compares the levels as
times to stop. Also the two-way ANOVAs that put a method's effect (λ) and a protocol's
(what early stopping monitors) on one scale. Plain data in, plain data out.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats as sps

from harness.analysis import nonparametric, stats
from harness.analysis.grouping import DONE, groups, level_label

RM_COLUMNS = ["effect", "F", "df", "df_error", "p", "partial_eta_sq"]
OMNIBUS_COLUMNS = ["test", "unit", "n", "statistic", "df", "p"]

# Metrics that are counts with many ties (their tables add rank tests beside the
# t-tests), and those censored at the training cap, with the frame column marking which.
DISCRETE = ("stop_epoch", "best_epoch")
CENSORED = {"stop_epoch": "hit_max_epochs"}


def _blocked(frame: pd.DataFrame, metric: str, within: list[str], subject: str) -> pd.DataFrame:
    """Long data (y, the within factors as labels, s) of the done replications, kept only
    for subjects that have every cell of the within factors exactly once."""
    done = frame[frame["status"] == DONE]
    data = pd.DataFrame({"y": done[metric].astype(float), "s": done[subject].map(level_label),
                         **{f"w{i}": done[w].map(level_label) for i, w in enumerate(within)}}).dropna()
    data = data[np.isfinite(data["y"])]
    keys = [f"w{i}" for i in range(len(within))]
    cells = int(np.prod([data[k].nunique() for k in keys]))
    complete = data.groupby("s")[keys].apply(lambda g: len(g.drop_duplicates()) == len(g) == cells)
    return data[data["s"].isin(complete[complete].index)]


def repeated_measures_anova(frame: pd.DataFrame, metric: str, a: str, b: str | None = None,
                            subject: str = "seed") -> pd.DataFrame:
    """One- or two-way repeated-measures ANOVA of ``metric`` (statsmodels AnovaRM),
    ``subject`` the unit measured in every cell: the seed, whose initial weights and data
    order every level shares; and with ``b`` the λ × monitor design, whose monitor arms
    of a (λ, seed) share one trained model (harness.training.stopping.STOPPING_RULE), so that an
    unpaired ANOVA would count each training twice. Per effect: F, its df and error df,
    p, and partial η² = F·df / (F·df + df_error). Only subjects with every cell are used;
    empty when fewer than 2 remain."""
    within = [a] if b is None else [a, b]
    if subject not in frame.columns:
        return pd.DataFrame(columns=RM_COLUMNS)
    return _rm_anova(_blocked(frame, metric, within, subject), {"w0": a, "w1": b, "w0:w1": f"{a} × {b}"})


def _rm_anova(data: pd.DataFrame, names: dict) -> pd.DataFrame:
    """repeated_measures_anova on ``_blocked`` data, its effects named by ``names``."""
    from statsmodels.stats.anova import AnovaRM

    keys = [k for k in ("w0", "w1") if k in data.columns]
    if any(data[k].nunique() < 2 for k in keys) or data["s"].nunique() < 2:
        return pd.DataFrame(columns=RM_COLUMNS)
    with np.errstate(divide="ignore", invalid="ignore"):
        table = AnovaRM(data, "y", "s", within=keys).fit().anova_table
    effect_ss = _cell_effects(data, keys)
    tol = stats.tolerance(data["y"]) ** 2 * len(data)
    rows = []
    for key, row in table.iterrows():
        f, df, df_err = float(row["F Value"]), float(row["Num DF"]), float(row["Den DF"])
        if effect_ss[key] <= tol:  # no effect but rounding: AnovaRM divides noise by noise
            row, f = {**row, "Pr > F": 1.0}, 0.0
        elif not np.isfinite(f) or f < 0:  # an error term of 0 (every subject agrees): rounding made it <= 0
            row, f = {**row, "Pr > F": 0.0}, float("inf")
        rows.append({"effect": names.get(key, key), "F": f, "df": df, "df_error": df_err, "p": float(row["Pr > F"]),
                     "partial_eta_sq": f * df / (f * df + df_err) if np.isfinite(f) else 1.0})
    return pd.DataFrame(rows, columns=RM_COLUMNS)


def _cell_effects(data: pd.DataFrame, keys: list[str]) -> dict:
    """Sums of squares of each effect from the cell means of a complete design."""
    grand = data["y"].mean()
    means = {k: data.groupby(k)["y"].transform("mean") for k in keys}
    out = {k: float(((m - grand) ** 2).sum()) for k, m in means.items()}
    if len(keys) == 2:
        a, b = keys
        mab = data.groupby(keys)["y"].transform("mean")
        out[f"{a}:{b}"] = float(((mab - means[a] - means[b] + grand) ** 2).sum())
    return out


def two_way_anova(frame: pd.DataFrame, metric: str, a: str, b: str) -> pd.DataFrame:
    """Type II two-way ANOVA of ``metric`` on factors ``a`` × ``b`` (statsmodels OLS with
    categorical factors) over the done replications: per effect (a, b, interaction) its
    sum of squares, df, F, p and partial η² = SS / (SS + SS_residual), the share of the
    variance it explains. Puts a method's effect (λ) and a protocol's (what early stopping
    monitors) on one scale. Empty when either factor has a single level."""
    import statsmodels.formula.api as smf
    from statsmodels.stats.anova import anova_lm

    done = frame[frame["status"] == DONE]
    data = pd.DataFrame({"y": done[metric].astype(float), "a": done[a].map(level_label),
                         "b": done[b].map(level_label)}).dropna()
    data = data[np.isfinite(data["y"])]
    columns = ["effect", "sum_sq", "df", "F", "p", "partial_eta_sq"]
    if data["a"].nunique() < 2 or data["b"].nunique() < 2 or len(data) <= data["a"].nunique() * data["b"].nunique():
        return pd.DataFrame(columns=columns)
    fit = smf.ols("y ~ C(a) * C(b)", data=data).fit()
    table = anova_lm(fit, typ=2)
    resid = float(table.loc["Residual", "sum_sq"])
    names = {"C(a)": a, "C(b)": b, "C(a):C(b)": f"{a} × {b}", "Residual": "residual"}
    scale = float(table["sum_sq"].sum())
    rows = []
    for key, row in table.iterrows():
        ss, f, p = float(row["sum_sq"]), float(row["F"]), float(row["PR(>F)"])
        if key != "Residual" and abs(ss) <= 1e-12 * scale:  # rounding noise of an exact zero
            ss, f, p = 0.0, 0.0, 1.0
        rows.append({"effect": names.get(key, key), "sum_sq": ss, "df": float(row["df"]),
                     "F": f, "p": p,
                     "partial_eta_sq": ss / (ss + resid) if key != "Residual" and ss + resid > 0 else float("nan")})
    return pd.DataFrame(rows, columns=columns)


def oneway_anova(groups_: list) -> tuple[float, float]:
    """(F, p) of the unpaired one-way ANOVA (scipy's f_oneway) over groups of 2 or more.
    Every group constant (to rounding): no spread to test against, so equal means give
    (0, 1) and different ones (inf, 0), where scipy returns NaN."""
    groups_ = [np.asarray(g, dtype=float) for g in groups_ if len(g) >= 2]
    if len(groups_) < 2:
        return float("nan"), float("nan")
    tol = stats.tolerance(*groups_)
    if all(stats.constant(g, tol) for g in groups_):
        means = np.array([g.mean() for g in groups_])
        return (0.0, 1.0) if np.ptp(means) <= tol else (float("inf"), 0.0)
    res = sps.f_oneway(*groups_)
    return float(res.statistic), float(res.pvalue)


def survival(frame: pd.DataFrame, metric: str, factor: str, flag: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(times, events, levels) of the done replications with a finite ``metric``: an event
    where training stopped by its rule, censored (0) where ``flag`` marks the cap."""
    done = frame[(frame["status"] == DONE) & np.isfinite(frame[metric].astype(float))]
    events = 1 - done[flag].fillna(0).astype(int).to_numpy() if flag in done.columns else np.ones(len(done), int)
    return done[metric].to_numpy(dtype=float), events, done[factor].map(level_label).to_numpy()


def censored(frame: pd.DataFrame, metric: str) -> int:
    """How many done replications have ``metric`` censored at the training cap."""
    flag = CENSORED.get(metric)
    if flag is None or flag not in frame.columns:
        return 0
    return int(frame.loc[frame["status"] == DONE, flag].fillna(0).astype(int).sum())


def omnibus(frame: pd.DataFrame, metric: str, factor: str, subject: str = "seed") -> pd.DataFrame:
    """Whether ``factor`` matters at all, four ways: the unpaired one-way ANOVA and
    Kruskal-Wallis (every replication a unit), the repeated-measures ANOVA and Friedman
    (the seed a block: only seeds with every level, once each, enter), and where
    ``metric`` is censored in some replication, the log-rank test. One row per test:
    its unit, n units, statistic, df, p."""
    grp = groups(frame, metric, factor)
    values = [v for v in grp.values() if len(v) >= 2]
    n = sum(len(v) for v in values)
    rows = []
    f, p = oneway_anova(values)
    rows.append({"test": "one-way ANOVA", "unit": "replication", "n": n, "statistic": f,
                 "df": f"{len(values) - 1}, {n - len(values)}", "p": p})
    rows.append({"test": "Kruskal-Wallis (ranks)", "unit": "replication", "n": n, "statistic": np.nan,
                 "df": f"{len(values) - 1}", "p": nonparametric.kruskal(values)})
    if subject in frame.columns:
        data = _blocked(frame, metric, [factor], subject)  # read once for both blocked tests
        rm = _rm_anova(data, {"w0": factor})
        seeds = data["s"].nunique()
        if len(rm):
            r = rm.iloc[0]
            rows.append({"test": f"repeated-measures ANOVA ({subject} as block)", "unit": subject, "n": seeds,
                         "statistic": r["F"], "df": f"{r['df']:g}, {r['df_error']:g}", "p": r["p"]})
        if seeds >= 2:
            table = data.pivot(index="s", columns="w0", values="y")
            rows.append({"test": f"Friedman ({subject} as block, ranks)", "unit": subject, "n": seeds,
                         "statistic": np.nan, "df": f"{table.shape[1] - 1}", "p": nonparametric.friedman(table.to_numpy())})
    if censored(frame, metric):
        times, events, levels = survival(frame, metric, factor, CENSORED[metric])
        chisq, p = nonparametric.logrank(times, events, levels)
        rows.append({"test": "log-rank (censored at the cap)", "unit": "replication", "n": len(times),
                     "statistic": chisq, "df": f"{len(set(levels.tolist())) - 1}", "p": p})
    return pd.DataFrame(rows, columns=OMNIBUS_COLUMNS)
