"""Report tables as DataFrames, from the store's replication frame (one row per replication).

Only rows with status "done" and a finite metric enter a statistic, but every level present
in the frame keeps its row or cell: a group with fewer than 2 values is marked ``?`` /
noted, never dropped. Nothing here writes files.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from harness.analysis import nonparametric, paper, stats

UNTESTABLE = "?"  # sign-table cell where a group has fewer than 2 replications
DONE = "done"


# ---------------------------------------------------------------- levels and slicing

def level_label(value) -> str:
    """Short stable label of a factor level: 0.0001 → "0.0001", 80 → "80", 10.0 → "10".
    Two different numbers never share a label: where the short form would lose digits
    (1.0000001e-4 prints "0.0001" with :g), the shortest exact form is used."""
    if isinstance(value, (float, np.floating)):
        short = f"{float(value):g}"
        return short if float(short) == float(value) else repr(float(value))
    if isinstance(value, (np.integer,)):
        return str(int(value))
    return str(value)


def sort_key(value):
    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
        return (0, float(value), "")
    parts = str(value).replace(",", "-").split("-")
    if all(p.isdigit() for p in parts):  # architectures "32-64", placements "1,5"
        return (1, len(parts), tuple(int(p) for p in parts))
    return (2, 0, str(value))


def sorted_levels(values) -> list:
    """Distinct values, numbers numerically, "32-64"-style architectures by depth then widths."""
    return sorted(pd.unique(pd.Series(list(values))), key=sort_key)


def matches(column: pd.Series, value) -> pd.Series:
    if pd.api.types.is_numeric_dtype(column) and not isinstance(value, str):
        return pd.Series(np.isclose(column.astype(float), float(value), rtol=1e-9, atol=0),
                         index=column.index)
    return column.astype(str) == str(value)


def select(frame: pd.DataFrame, at) -> pd.DataFrame:
    """Rows matching every (column, value) of ``at`` (a mapping or pairs; None = all)."""
    pairs = dict(at or {})
    mask = pd.Series(True, index=frame.index)
    for key, value in pairs.items():
        if key not in frame.columns:
            raise KeyError(f"no column {key!r} in the study's results")
        mask &= matches(frame[key], value)
    return frame[mask]


def slices(frame: pd.DataFrame, at, factors: list[str], exclude: tuple = ()) -> list:
    """[(labels dict, sub-frame)]: ``frame`` restricted to ``at``, then split by every
    varying factor that is neither in ``at`` nor in ``exclude``."""
    fixed = dict(at or {})
    sub = select(frame, fixed)
    keys = [k for k in factors if k not in fixed and k not in exclude and k in sub.columns
            and sub[k].nunique(dropna=False) > 1]
    if not keys:
        return [(fixed, sub)]
    out = []
    combos = sub[keys].drop_duplicates()
    combos = sorted(combos.itertuples(index=False, name=None),
                    key=lambda t: tuple(sort_key(v) for v in t))
    for combo in combos:
        labels = dict(fixed, **dict(zip(keys, combo)))
        out.append((labels, select(sub, dict(zip(keys, combo)))))
    return out


def check_metric(frame: pd.DataFrame, metric: str) -> None:
    """KeyError (shown as a skipped analysis) when no done replication has a value."""
    if metric not in frame.columns:
        raise KeyError(f"no metric {metric!r} in the study's results")
    done = frame.loc[frame["status"] == DONE, metric].astype(float)
    if len(frame) and not np.isfinite(done).any():
        raise KeyError(f"metric {metric!r} has no values in the done replications")


def groups(frame: pd.DataFrame, metric: str, factor: str) -> dict:
    """{level: finite metric values of the done replications}, every level of the frame kept."""
    if metric not in frame.columns:
        raise KeyError(f"no metric {metric!r} in the study's results")
    done = frame[frame["status"] == DONE]
    out = {}
    for level in sorted_levels(frame[factor]):
        values = done.loc[matches(done[factor], level), metric].to_numpy(dtype=float)
        out[level] = values[np.isfinite(values)]
    return out


def left_out(frame: pd.DataFrame, metric: str, factor: str) -> dict:
    """{level: "k reasons"} for every level where replications recorded for it do not
    enter its statistics: done but with a non-finite ``metric`` (NaN, inf), or not done
    (diverged, failed). Levels with none left out are absent."""
    out = {}
    for level in sorted_levels(frame[factor]):
        sub = frame[matches(frame[factor], level)]
        done = sub["status"] == DONE
        values = sub[metric].astype(float) if metric in sub.columns else pd.Series(np.nan, index=sub.index)
        reasons = []
        bad = int((done & ~np.isfinite(values)).sum())
        if bad:
            reasons.append(f"{bad} done with {metric} not finite")
        for status, n in sub.loc[~done, "status"].value_counts().sort_index().items():
            reasons.append(f"{int(n)} {status}")
        if reasons:
            out[level] = ", ".join(reasons)
    return out


def left_out_sentence(frame: pd.DataFrame, metric: str, factor: str) -> str | None:
    """'Left out of the statistics: at lam = 10, 1 done with val_mse not finite.' or None."""
    gone = left_out(frame, metric, factor)
    if not gone:
        return None
    return ("Left out of the statistics: " + "; ".join(f"at {factor} = {level_label(l)}, {why}" for l, why in gone.items())
            + ".")


# ---------------------------------------------------------------- significance tables

# The equivalence margin of a comparison, as a fraction of the compared means (paired: of
# the baseline's): two levels "equivalent" differ by less than this, shown by TOST. 5%
# unless the metric has its own (a stopping epoch moves in whole epochs: 10%).
EQUIVALENCE = {"stop_epoch": 0.10, "best_epoch": 0.10}
EQUIVALENCE_DEFAULT = 0.05


def margin(metric: str) -> float:
    """The equivalence margin of ``metric``, a fraction of the compared means."""
    return EQUIVALENCE.get(metric, EQUIVALENCE_DEFAULT)



def pairwise(groups_: dict, *, alpha: float = 0.01, test: str = "student",
             correction: str = "holm", power: float = 0.8, equivalence: float = EQUIVALENCE_DEFAULT,
             rank: bool = False, survival: dict | None = None) -> pd.DataFrame:
    """Two-sided t-test of every ordered pair (row ≠ col) of levels; long form.

    The correction family is the unordered pairs (each test once); the mirrored cell gets
    the same p with the difference's sign flipped. ``mde`` is the smallest |difference|
    (metric units) detectable with probability ``power`` at ``alpha`` (raw) with these n.
    ``p_equiv``: the pooled TOST within ±``equivalence`` × the mean of the two groups'
    means; ``verdict3``: differs (uncorrected sign) / equivalent / inconclusive.
    ``rank`` adds ``p_rank``, the Mann-Whitney U test (a discrete metric with ties);
    ``survival`` ({level: (times, events)}) adds ``p_logrank``, the log-rank test of the
    two levels (a metric censored at a cap). Both uncorrected, beside ``p``.
    """
    levels = list(groups_)
    tests, extra = {}, {}
    for i, a in enumerate(levels):
        for b in levels[i + 1:]:
            x, y = groups_[a], groups_[b]
            tt = stats.ttest(x, y, welch=test == "welch")
            g = stats.hedges_g(x, y)
            mde_sd = stats.min_detectable_effect(len(x), len(y), alpha, power)
            delta = equivalence * abs(float(np.mean([x.mean(), y.mean()]))) if len(x) and len(y) else np.nan
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
                sign=_cell(s * tt.diff, tt.p, alpha, len(x), len(y)),
                sign_adj=_cell(s * tt.diff, p_adj, alpha, len(x), len(y)),
                g=s * g[0], g_lo=g_lo, g_hi=g_hi, mde_sd=mde_sd, mde=mde,
                verdict=_verdict(tt.p, alpha, len(x), len(y), mde, power), p_equiv=p_equiv,
                verdict3=verdict(_cell(s * tt.diff, tt.p, alpha, len(x), len(y)), p_equiv, alpha),
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


def _cell(diff, p, alpha, n1, n2) -> str:
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


# ---------------------------------------------------------------- intervals and summaries

def ci_table(frame: pd.DataFrame, metric: str, x: str, hue: str,
             confidence: float = 0.95) -> pd.DataFrame:
    """Mean and t-interval of ``metric`` for every (hue, x) cell present in the frame."""
    rows = []
    for h, values in groups(frame, metric, hue).items():
        sub = frame[matches(frame[hue], h)]
        for xv, vals in groups(sub, metric, x).items():
            mean, lo, hi = stats.t_interval(vals, confidence)
            rows.append({hue: h, x: xv, "n": len(vals), "mean": mean,
                         "sd": vals.std(ddof=1) if len(vals) > 1 else np.nan, "lo": lo, "hi": hi})
    return pd.DataFrame(rows, columns=[hue, x, "n", "mean", "sd", "lo", "hi"])


def curve_table(frame: pd.DataFrame, history: pd.DataFrame, metric: str, hue: str,
                confidence: float = 0.95) -> pd.DataFrame:
    """Per ``hue`` level and epoch, the mean and t-interval of the per-epoch ``metric`` over
    the done replications of ``frame`` that trained that epoch: n of them, out of the
    level's ``of`` (``history``: Store.history rows, id and epoch)."""
    if metric not in history.columns or not np.isfinite(history[metric].to_numpy(dtype=float)).any():
        raise KeyError(f"no per-epoch {metric!r} recorded")
    done = frame.loc[frame["status"] == DONE, ["id", hue]]
    per_epoch = history[["id", "epoch", metric]].astype({"id": str}).merge(done.astype({"id": str}), on="id")
    rows = []
    for level in sorted_levels(done[hue]):
        at_level = per_epoch[matches(per_epoch[hue], level)]
        of = int(matches(done[hue], level).sum())
        for epoch, values in at_level.groupby("epoch", sort=True)[metric]:
            values = values.to_numpy(dtype=float)
            values = values[np.isfinite(values)]
            mean, lo, hi = stats.t_interval(values, confidence)
            rows.append({hue: level, "epoch": int(epoch), "n": len(values), "of": of,
                         "mean": mean, "lo": lo, "hi": hi})
    return pd.DataFrame(rows, columns=[hue, "epoch", "n", "of", "mean", "lo", "hi"])


def summary_table(frame: pd.DataFrame, metrics, factor: str,
                  confidence: float = 0.95) -> pd.DataFrame:
    """Per level of ``factor``: n and mean / t-interval of each metric (wide)."""
    rows = []
    for level in sorted_levels(frame[factor]):
        row = {factor: level}
        for metric in metrics:
            vals = groups(frame, metric, factor)[level]
            mean, lo, hi = stats.t_interval(vals, confidence)
            row.update({f"{metric}_n": len(vals), f"{metric}_mean": mean,
                        f"{metric}_lo": lo, f"{metric}_hi": hi})
        rows.append(row)
    return pd.DataFrame(rows)


def compare_summary(ours: pd.DataFrame, key: str) -> tuple[pd.DataFrame, dict]:
    """Published Table 3-style values beside our means; 'agree' = inside our t-interval."""
    pub = paper.SUMMARY_TABLES[key]
    factor = pub["factor"]
    rows, agree, compared = [], 0, 0
    for level, values in pub["rows"].items():
        mine = ours[np.isclose(ours[factor].astype(float), level)] if len(ours) else ours
        row = {factor: level}
        for metric, value in zip(pub["columns"], values):
            row[f"{metric}_paper"] = value
            if len(mine) and f"{metric}_mean" in mine:
                m = mine.iloc[0]
                row[f"{metric}_ours"] = m[f"{metric}_mean"]
                inside = m[f"{metric}_lo"] <= value <= m[f"{metric}_hi"]
                if np.isfinite(m[f"{metric}_lo"]):
                    compared += 1
                    agree += bool(inside)
                    row[f"{metric}_in_ci"] = "yes" if inside else "no"
                else:
                    row[f"{metric}_in_ci"] = UNTESTABLE
            else:
                row[f"{metric}_ours"] = np.nan
                row[f"{metric}_in_ci"] = ""
        rows.append(row)
    return pd.DataFrame(rows), dict(agree=agree, compared=compared)


def diagnostics(frame: pd.DataFrame, factor: str,
                metrics=("grad_ratio", "term_led", "logdet_mean", "log_c11_mean", "entropy_loss")) -> pd.DataFrame:
    """Per level of ``factor``: n, mean and sd of each entropy diagnostic that has data."""
    done = frame[frame["status"] == DONE]
    present = [m for m in metrics if m in frame.columns and np.isfinite(done[m].astype(float)).any()]
    rows = []
    for level in sorted_levels(frame[factor]):
        row = {factor: level}
        for m in present:
            vals = groups(frame, m, factor)[level]
            row.update({f"{m}_n": len(vals), f"{m}_mean": vals.mean() if len(vals) else np.nan,
                        f"{m}_sd": vals.std(ddof=1) if len(vals) > 1 else np.nan})
        rows.append(row)
    return pd.DataFrame(rows) if present else pd.DataFrame()


def guidance_sentence(frame: pd.DataFrame, factor: str = "lam") -> str | None:
    """Did the guidance term change training? Two readings of the done replications:
    the size of its gradient against the task's (grad_ratio, a norm ratio on the guided
    weights), and its effect on what it targets: the final log|det W| (dense) or log|c11|
    (conv) at each λ > 0 against λ = 0 (Welch t-test at 0.01). A small norm ratio alone
    does not mean no effect: Adam scales each weight's step by that weight's own gradient
    history, so where the task gradient is zero (weights on inputs that are always 0,
    such as MNIST's blank border pixels) a tiny guidance gradient still moves the weight a
    full step. None without the data."""
    if factor not in frame.columns:
        return None
    done = frame[frame["status"] == DONE]
    parts = _gradient_parts(done, factor) + _target_parts(done, factor)
    return "Guidance term: " + "; ".join(parts) if parts else None


def _gradient_parts(done: pd.DataFrame, factor: str) -> list[str]:
    """The guidance gradient's size (grad_ratio) and reach (term_led), largest mean over λ > 0."""
    guided = done[done[factor].astype(float) > 0]
    parts = []
    for metric in ("grad_ratio", "term_led"):
        if metric not in guided.columns:
            continue
        values = guided[metric].astype(float)
        infinite = guided[np.isinf(values)]
        # a replication whose ratio is inf (the task gradient was 0 in a measured batch) is
        # left out of its level's mean, not the level: the others' mean still tells
        means = guided[np.isfinite(values)].groupby(factor)[metric].mean().dropna()
        if not len(means) and not len(infinite):
            continue
        where = f"({metric}, mean at {factor} = {level_label(means.idxmax())})" if len(means) else ""
        if metric == "grad_ratio":
            if len(infinite):
                levels = sorted_levels(infinite[factor])
                parts.append(f"in some measured batches it was the only gradient on the weights it guides (the task "
                             f"gradient there was 0: grad_ratio = inf in {len(infinite)} replication(s), at {factor} = "
                             f"{', '.join(level_label(l) for l in levels)}; left out of the means below)")
            if len(means):
                parts.append(f"its gradient is at most {float(means.max()):.3g} of the task gradient in norm {where}")
        else:
            parts.append(f"it outweighs the task gradient on up to {float(means.max()):.0%} of the weights it "
                         f"acts on {where}, and Adam moves those weights a full step")
    return parts


def _target_parts(done: pd.DataFrame, factor: str) -> list[str]:
    """Whether the final log|det W| (or log|c11|) at some λ > 0 differs from λ = 0 (Welch, 0.01)."""
    target = next((m for m in ("logdet_mean", "log_c11_mean") if m in done.columns
                   and np.isfinite(done[m].astype(float)).any()), None)
    if target is None:
        return []
    grp = groups(done, target, factor)
    base = next((v for level, v in grp.items() if float(level) == 0.0), None)
    if base is None or not len(base):
        return []
    moved = [(level, float(np.mean(v))) for level, v in grp.items()
             if float(level) > 0 and len(base) > 1 and len(v) > 1 and stats.ttest(v, base, welch=True).p < 0.01]
    name = "log|det W|" if target == "logdet_mean" else "log|c11|"
    if not moved:
        return [f"the final {name} at no {factor} > 0 differs from {factor} = 0 ({float(np.mean(base)):.3g}) at α = 0.01"]
    shown = ", ".join(f"{mean:.3g} at {level_label(level)}" for level, mean in moved)
    others = [(level, v) for level, v in grp.items() if float(level) > 0 and level not in dict(moved)]
    tested = [level_label(level) for level, v in others if len(v) > 1]
    untestable = [level_label(level) for level, v in others if len(v) < 2]
    notes = (f"; not at {', '.join(tested)}" if tested else "") + (
        f"; untestable at {', '.join(untestable)} (n < 2)" if untestable else "")
    return [f"the final {name} moves from {float(np.mean(base)):.3g} at {factor} = 0 to {shown} "
            f"(Welch t-test, α = 0.01{notes}): the guidance changed the weights it targets"]


def status_counts(frame: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Replications per grid cell by status (done / diverged / failed), every cell kept."""
    keys = [k for k in keys if k in frame.columns]
    statuses = ["done", "diverged", "failed"]
    statuses += sorted(set(frame["status"]) - set(statuses))
    if keys:
        table = frame.groupby(keys, dropna=False)["status"].value_counts().unstack(fill_value=0)
    else:
        table = frame["status"].value_counts().to_frame().T
    table = table.reindex(columns=statuses, fill_value=0).reset_index(drop=not keys)
    if keys:
        order = sorted(range(len(table)),
                       key=lambda i: tuple(sort_key(table.loc[i, k]) for k in keys))
        table = table.loc[order].reset_index(drop=True)
    table["total"] = table[statuses].sum(axis=1)
    if "hit_max_epochs" in frame.columns:  # stopping epoch censored at the cap
        done = frame[frame["status"] == DONE]
        done = done.assign(hit_max_epochs=done["hit_max_epochs"].fillna(0))
        if keys:
            hits = done.groupby(keys, dropna=False)["hit_max_epochs"].sum().reset_index()
            table = table.merge(hits, on=keys, how="left")
            table["hit_max_epochs"] = table["hit_max_epochs"].fillna(0).astype(int)
        else:
            table["hit_max_epochs"] = int(done["hit_max_epochs"].sum())
    table.columns.name = None
    return table


def open_choices(settings: dict, frame: pd.DataFrame) -> pd.DataFrame:
    """PAPER.md §4 choices with the value(s) these replications used (from the frame when
    the column is there, else from the study's settings)."""
    rows = []
    choices = dict(paper.OPEN_CHOICES)
    if "dataset" in frame.columns and frame["dataset"].isin(paper.LARGE_DATASETS).any():
        choices.update(paper.OPEN_CHOICES_LARGE)
    for key, (item, what) in choices.items():
        if key in frame.columns:
            vals = [level_label(v) for v in sorted_levels(frame[key].dropna())]
            value = ", ".join(vals) if vals else "n/a"
        elif key in settings:
            value = level_label(settings[key])
        else:
            value = "not recorded"
        rows.append({"key": key, "paper_section_4": item, "value": value, "what": what})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------- Table 1

def table1(frame: pd.DataFrame, *, metric_train: str = "train_acc", metric_val: str = "val_acc",
           factor: str = "lam", by: str = "arch", test: str = "student",
           correction: str = "holm", alpha: float = 0.05) -> pd.DataFrame:
    """One row per ``by`` value: base means at factor = 0; Δ (mean - base mean) of train and
    val at the level > 0 with the highest mean val; one-tailed t-tests (H1: Δ > 0), raw and
    corrected over all levels > 0 (the best level is chosen after looking at the data);
    ``mde_val``: smallest Δ val detectable with power 0.8 at ``alpha`` one-tailed."""
    rows = []
    for key in sorted_levels(frame[by]):
        sub = frame[matches(frame[by], key)]
        tr, va = groups(sub, metric_train, factor), groups(sub, metric_val, factor)
        base = [l for l in tr if float(l) == 0.0]
        cands = [l for l in tr if float(l) > 0 and len(va[l])]
        row = dict(by=key, n_base=len(va[base[0]]) if base else 0,
                   base_train=_mean(tr[base[0]]) if base else np.nan,
                   base_val=_mean(va[base[0]]) if base else np.nan, n_levels=len(cands))
        if not base or not cands:
            row["note"] = "no base (factor = 0)" if not base else "no level > 0"
            rows.append(row)
            continue
        b = base[0]
        p_tr = [stats.ttest(tr[l], tr[b], welch=test == "welch", alternative="greater").p for l in cands]
        p_va = [stats.ttest(va[l], va[b], welch=test == "welch", alternative="greater").p for l in cands]
        best = max(cands, key=lambda l: (_mean(va[l]), -float(l)))
        i = cands.index(best)
        p_tr_adj, p_va_adj = stats.adjust(p_tr, correction)[i], stats.adjust(p_va, correction)[i]
        n_best = len(va[best])
        small = min(row["n_base"], n_best, len(tr[best]), len(tr[b])) < 2
        mde = stats.min_detectable_effect(n_best, row["n_base"], alpha, 0.8, "greater")
        row.update(
            best=best, n_best=n_best,
            d_train=_mean(tr[best]) - row["base_train"], p_train=p_tr[i],
            stars_train=stats.stars(p_tr[i]), p_train_adj=p_tr_adj, stars_train_adj=stats.stars(p_tr_adj),
            d_val=_mean(va[best]) - row["base_val"], p_val=p_va[i],
            stars_val=stats.stars(p_va[i]), p_val_adj=p_va_adj, stars_val_adj=stats.stars(p_va_adj),
            mde_val=mde * stats.pooled_sd(va[best], va[b]),
            note="untestable: fewer than 2 replications" if small else "")
        rows.append(row)
    cols = ["by", "n_base", "base_train", "base_val", "n_levels", "best", "n_best", "d_train",
            "p_train", "stars_train", "p_train_adj", "stars_train_adj", "d_val", "p_val",
            "stars_val", "p_val_adj", "stars_val_adj", "mde_val", "note"]
    return pd.DataFrame(rows).reindex(columns=cols).rename(columns={"by": by})


def _mean(x) -> float:
    return float(np.mean(x)) if len(x) else float("nan")


def compare_table1(ours: pd.DataFrame, rows: dict, by: str = "arch",
                   alpha: float = 0.05) -> tuple[pd.DataFrame, dict]:
    """Published Table 1 rows ({arch: paper.TABLE1_COLUMNS values}) beside ours; a cell
    agrees when both or neither are significant (one-tailed, ``alpha``) for train and val."""
    out, agree, compared = [], 0, 0
    mine = {level_label(k): r for k, r in zip(ours[by], ours.to_dict("records"))} if len(ours) else {}
    for arch, values in rows.items():
        pub = dict(zip(paper.TABLE1_COLUMNS, values))
        m = mine.get(arch, {})
        row = {by: arch}
        for part in ("train", "val"):
            p_pub, p_ours = pub[f"p_{part}"], m.get(f"p_{part}", np.nan)
            sig_pub = p_pub is not None and p_pub < alpha
            row.update({f"d_{part}_paper": pub[f"d_{part}"], f"p_{part}_paper": p_pub,
                        f"d_{part}_ours": m.get(f"d_{part}", np.nan), f"p_{part}_ours": p_ours})
            if m and np.isfinite(p_ours):
                same = sig_pub == (p_ours < alpha)
                compared += 1
                agree += same
                row[f"{part}_agree"] = "yes" if same else "no"
            else:
                row[f"{part}_agree"] = UNTESTABLE if m else "not run"
        out.append(row)
    return pd.DataFrame(out), dict(agree=agree, compared=compared)


# ---------------------------------------------------------------- paired by seed

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


def verdict(sign: str, p_equiv: float, alpha: float) -> str:
    """'differs' (the t-test's sign), 'equivalent' (TOST), or 'inconclusive' (neither)."""
    if sign in ("+", "-"):
        return "differs"
    if np.isfinite(p_equiv) and p_equiv < alpha:
        return "equivalent"
    return UNTESTABLE if sign == UNTESTABLE else "inconclusive"


def paired_by_seed(frame: pd.DataFrame, metric: str, factor: str, *, baseline=None, alpha: float = 0.01,
                   correction: str = "holm", confidence: float = 0.95, equivalence: float | None = None,
                   rank: bool = False) -> pd.DataFrame:
    """Each level of ``factor`` against ``baseline`` (default: its lowest level), seed by
    seed: per level the pairs, how many are identical / higher / lower, the mean paired
    difference (level − baseline) with its t-interval and paired t-test (corrected across
    the levels), and ``seed_r``, the correlation of the two over seeds (near 1: the seed,
    not the level, sets the value). Removes the seed-to-seed spread that the unpaired
    tests of the paper keep. ``delta`` = ``equivalence`` (default EQUIVALENCE) times the
    baseline's mean; ``p_equiv`` its paired TOST; ``verdict`` differs / equivalent /
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
                     "p": test.p, "seed_r": r, "delta": margin_ * abs(float(y.mean())),
                     "p_equiv": stats.paired_tost(x, y, margin_ * abs(float(y.mean()))),
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
                row["seeds"] = stats.seeds_needed(_ratio(target, sd), alpha, power)
                row["seeds_paired"] = stats.seeds_needed(_ratio(target, sd_diff), alpha, power, paired=True)
            rows.append(row)
    return pd.DataFrame(rows)


def _ratio(effect: float, sd: float) -> float:
    """effect / sd, with an sd of 0 giving inf (any nonzero effect is certain) and 0 / 0 = 0."""
    if not np.isfinite(sd) or not np.isfinite(effect):
        return np.nan
    if sd == 0:
        return np.inf if effect else 0.0
    return effect / sd


def add_signs(table: pd.DataFrame, diff: str, n_a: str, n_b: str, *, alpha: float, correction: str) -> None:
    """Fill ``p_adj`` (``correction`` across the table's rows), and the cells ``sign`` and
    ``sign_adj`` of each row's test (``p``) from its ``diff`` and group sizes, in place."""
    table["p_adj"] = stats.adjust(table["p"], correction)
    for sign, p in (("sign", "p"), ("sign_adj", "p_adj")):
        table[sign] = [_cell(d, q, alpha, a, b) for d, q, a, b in zip(table[diff], table[p], table[n_a], table[n_b])]


def paired_sentence(paired: pd.DataFrame, metric: str, factor: str, alpha: float,
                    equivalence: float | None = None) -> str:
    """One line on a paired_by_seed table: how many levels differ from the baseline, the
    largest mean paired difference, and how many pairs are identical."""
    base = level_label(paired["vs"].iloc[0])
    tested = paired[paired["n_pairs"] >= 2]
    differ = tested[tested["sign"].isin(["+", "-"])]
    equivalent = tested[tested["verdict"] == "equivalent"] if "verdict" in tested.columns else tested.iloc[:0]
    within = f" within ±{100 * (margin(metric) if equivalence is None else equivalence):g}% of its mean"
    text = (f"{len(differ)} of {len(tested)} {factor} levels differ from {factor} = {base} "
            f"(paired t, α = {alpha:g}, uncorrected), {len(equivalent)} are shown equivalent to it{within} "
            f"(paired TOST, α = {alpha:g}), {len(tested) - len(differ) - len(equivalent)} inconclusive")
    if len(tested):
        big = tested.loc[tested["mean_diff"].abs().idxmax()]
        rel = f", {100 * float(big['rel_diff']):+.3g}% of the mean at {base}" if np.isfinite(big["rel_diff"]) else ""
        text += (f"; the largest mean paired difference in {metric} is {float(big['mean_diff']):.3g} "
                 f"[{float(big['ci_lo']):.3g}, {float(big['ci_hi']):.3g}] at {level_label(big[factor])}{rel}")
    n, same = int(paired["n_pairs"].sum()), int(paired["identical"].sum())
    return text + f"; {same} of {n} pairs are identical"


# ---------------------------------------------------------------- protocol effect

def protocol_effect(frame: pd.DataFrame, metric: str, protocol: str, factor: str, *,
                    alpha: float = 0.01, test: str = "student",
                    correction: str = "holm") -> pd.DataFrame:
    """For each level of ``factor``: every pair of ``protocol`` values compared (two-sided),
    corrected across the whole table."""
    rows = []
    for level in sorted_levels(frame[factor]):
        sub = frame[matches(frame[factor], level)]
        long = pairwise(groups(sub, metric, protocol), alpha=alpha, test=test, correction="none")
        long = long[[sort_key(r) < sort_key(c) for r, c in zip(long["row"], long["col"])]]
        for r in long.itertuples(index=False):
            rows.append({factor: level, "a": r.row, "b": r.col, "n_a": r.n_row, "n_b": r.n_col,
                         "mean_a": r.mean_row, "mean_b": r.mean_col, "diff": r.diff, "p": r.p,
                         "g": r.g, "mde": r.mde})
    out = pd.DataFrame(rows, columns=[factor, "a", "b", "n_a", "n_b", "mean_a", "mean_b",
                                      "diff", "p", "p_adj", "sign", "sign_adj", "g", "mde"])
    if len(out):
        add_signs(out, "diff", "n_a", "n_b", alpha=alpha, correction=correction)
    return out


def profile_summary(profiles: pd.DataFrame) -> pd.DataFrame:
    """Per stage and layer: n filters and the box-plot statistics of the entropy change."""
    cols = ["stage", "layer", "name", "kind", "n", "mean", "sd", "min", "q1", "median", "q3", "max"]
    if profiles is None or not len(profiles):
        return pd.DataFrame(columns=cols)
    rows = []
    stages = sorted(set(profiles["stage"]), key=lambda s: (s != "init", s))
    for stage in stages:
        st = profiles[profiles["stage"] == stage]
        for layer in sorted(set(st["layer"])):
            lay = st[st["layer"] == layer]
            v = lay["value"].to_numpy(dtype=float)
            v = v[np.isfinite(v)]
            q = np.percentile(v, [0, 25, 50, 75, 100]) if len(v) else [np.nan] * 5
            rows.append(dict(stage=stage, layer=int(layer), name=str(lay["name"].iloc[0]),
                             kind=str(lay["kind"].iloc[0]), n=len(v),
                             mean=v.mean() if len(v) else np.nan,
                             sd=v.std(ddof=1) if len(v) > 1 else np.nan,
                             min=q[0], q1=q[1], median=q[2], q3=q[3], max=q[4]))
    return pd.DataFrame(rows, columns=cols)


# ---------------------------------------------------------------- Table 2

_PRETTY = {"model": {"vgg16": "VGG-16", "resnet50": "ResNet-50"}}
_HEADERS = {"model": "Model", "data.augment": "A", "net.dropout": "D", "placement": "Entropy loss layers"}


def placement_label(value) -> str:
    """Table 2's label of a placement: "1,2" → "[1,2]", "first" → "[1]", "pre-skip" → "Pre-skip"."""
    text = str(value).strip().lower()
    if text == "first":
        return "[1]"
    if text.replace(",", "").isdigit():
        return f"[{text}]"
    return text.capitalize()


def _row_label(key: str, value) -> str:
    if key == "data.augment":
        return "✓" if str(value) != "none" else ""
    if key == "net.dropout":
        return "✓" if float(value) > 0 else ""
    if key == "placement":
        return placement_label(value)
    return _PRETTY.get(key, {}).get(str(value), level_label(value))


_FIRST = {"model": ("vgg16",), "data.augment": ("none",), "placement": ("first",)}
_LAST = {"placement": ("pre-skip", "empirical")}  # the paper's row order


def _row_sort(key: str, value):
    text = str(value)
    if text in _FIRST.get(key, ()):
        return (0, 0, sort_key(value))
    if text in _LAST.get(key, ()):
        return (2, _LAST[key].index(text), sort_key(value))
    return (1, 0, sort_key(value))


def table2(frame: pd.DataFrame, metric: str = "val_acc", factor: str = "lam",
           rows=("model", "data.augment", "net.dropout", "placement"), *, alpha: float = 0.05,
           test: str = "student", correction: str = "holm", confidence: float = 0.95) -> pd.DataFrame:
    """Long form of Table 2: per row (combination of ``rows``) and level of ``factor``: n,
    mean and t-interval of ``metric``; against level 0 of the same row: difference,
    two-sided t-test p, ``correction`` over the row's levels (p_adj) and signs; ``best``
    marks the row's highest mean (ties all marked, as the paper bolds its maximum)."""
    keys = [k for k in rows if k in frame.columns]
    combos = sorted(frame[keys].drop_duplicates().itertuples(index=False, name=None),
                    key=lambda t: tuple(_row_sort(k, v) for k, v in zip(keys, t)))
    out = []
    for combo in combos:
        grp = groups(select(frame, dict(zip(keys, combo))), metric, factor)
        base = next((level for level in grp if float(level) == 0.0), None)
        others = [level for level in grp if level is not base and base is not None]
        tests = {l: stats.ttest(grp[l], grp[base], welch=test == "welch") for l in others}
        adjusted = dict(zip(others, stats.adjust([tests[l].p for l in others], correction))) if others else {}
        means = {l: _mean(v) for l, v in grp.items()}
        top = max((m for m in means.values() if np.isfinite(m)), default=np.nan)
        for level, vals in grp.items():
            mean, lo, hi = stats.t_interval(vals, confidence)
            row = dict(zip(keys, combo), **{factor: level, "n": len(vals), "mean": mean, "lo": lo, "hi": hi,
                                             "best": bool(np.isfinite(mean) and mean == top)})
            if level in tests:
                n0, p, p_adj = len(grp[base]), tests[level].p, adjusted[level]
                row.update(diff=mean - means[base], p=p, p_adj=p_adj,
                           sign=_cell(mean - means[base], p, alpha, len(vals), n0),
                           sign_adj=_cell(mean - means[base], p_adj, alpha, len(vals), n0))
            out.append(row)
    cols = keys + [factor, "n", "mean", "lo", "hi", "best", "diff", "p", "p_adj", "sign", "sign_adj"]
    return pd.DataFrame(out).reindex(columns=cols)


def table2_layout(long: pd.DataFrame, factor: str = "lam",
                  rows=("model", "data.augment", "net.dropout", "placement"),
                  digits: int = 3) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The paper's layout of ``table2`` output: one line per row, one column per level.
    A cell is the mean ("0.804"), with ± the t-interval's half width when n ≥ 2 and the
    row's uncorrected sign against level 0 (+ / -) when significant. Returns (plain for
    CSV / LaTeX, Markdown with each row's maximum in bold)."""
    keys = [k for k in rows if k in long.columns]
    levels = sorted_levels(long[factor]) if len(long) else []
    plain, bold = [], []
    for combo, part in long.groupby(keys, sort=False, dropna=False) if keys else [((), long)]:
        combo = combo if isinstance(combo, tuple) else (combo,)
        head = {_HEADERS.get(k, k): _row_label(k, v) for k, v in zip(keys, combo)}
        cells, marked = dict(head), dict(head)
        for level in levels:
            hit = part[matches(part[factor], level)]
            text, best = "", False
            if len(hit):
                c = hit.iloc[0]
                text = "–" if not np.isfinite(c["mean"]) else f"{c['mean']:.{digits}f}"
                if np.isfinite(c["hi"]):
                    text += f"±{(c['hi'] - c['lo']) / 2:.{digits}f}"
                if isinstance(c["sign"], str) and c["sign"] in "+-" and c["sign"]:
                    text += f" {c['sign']}"
                best = bool(c["best"])
            cells[level_label(level)] = text
            marked[level_label(level)] = f"**{text}**" if best and text else text
        plain.append(cells)
        bold.append(marked)
    return pd.DataFrame(plain), pd.DataFrame(bold)


def _published_key(row: dict, rows) -> tuple:
    values = dict(row)
    placement = str(values.get("placement", ""))
    values["placement"] = "1" if placement.strip().lower() == "first" else placement
    if "net.dropout" in values:
        values["net.dropout"] = float(values["net.dropout"])
    return tuple(values.get(k) for k in rows)


def compare_table2(long: pd.DataFrame, key: str, factor: str = "lam",
                   rows=("model", "data.augment", "net.dropout", "placement")) -> tuple[pd.DataFrame, dict]:
    """Published Table 2 (paper.TABLE2[key]) beside ours, for the published rows of the
    models this study ran: per cell the paper's value, our mean and whether the paper's
    value lies in our t-interval; per row whether each maximum is at a level > 0.

    counts: rows (published rows we ran), max_positive / max_positive_paper (of those,
    rows where the best level > 0 beats level 0 strictly, over the levels we ran),
    in_ci / compared (cells with an interval), not_run (published rows of our models we
    did not run)."""
    pub = paper.TABLE2[key]
    levels = pub["levels"]
    keys = list(rows)
    ours = {}
    for combo, part in long.groupby(keys, sort=False, dropna=False) if len(long) else []:
        ours[_published_key(dict(zip(keys, combo)), keys)] = part
    models = {k[0] for k in ours}
    out, counts = [], dict(rows=0, max_positive=0, max_positive_paper=0, in_ci=0, compared=0, not_run=0)
    for pkey, values in pub["rows"].items():
        if pkey[0] not in models:
            continue
        part = ours.get(pkey)
        if part is None:
            counts["not_run"] += 1
            continue
        counts["rows"] += 1
        top = max(values)
        ran = {float(l) for l, n in zip(part[factor], part["n"]) if n > 0}
        paper_ran = {l: v for l, v in zip(levels, values) if float(l) in ran}
        counts["max_positive_paper"] += _max_positive(paper_ran)
        counts["max_positive"] += _max_positive(
            {float(l): m for l, m, n in zip(part[factor], part["mean"], part["n"]) if n > 0})
        for level, value in zip(levels, values):
            hit = part[matches(part[factor], level)]
            row = {**{_HEADERS.get(k, k): _row_label(k, v) for k, v in zip(keys, pkey)},
                   factor: level, "paper": value, "paper_best": value == top}
            if len(hit):
                c = hit.iloc[0]
                inside = np.isfinite(c["lo"]) and c["lo"] <= value <= c["hi"]
                if np.isfinite(c["lo"]):
                    counts["compared"] += 1
                    counts["in_ci"] += bool(inside)
                row.update(n=c["n"], ours=c["mean"], lo=c["lo"], hi=c["hi"], ours_best=bool(c["best"]),
                           in_ci="yes" if inside else ("no" if np.isfinite(c["lo"]) else UNTESTABLE))
            else:
                row.update(n=0, ours=np.nan, lo=np.nan, hi=np.nan, ours_best=False, in_ci="not run")
            out.append(row)
    return pd.DataFrame(out), counts


def _max_positive(means: dict) -> bool:
    """The best level > 0 beats level 0 strictly (False without both)."""
    positive = [m for l, m in means.items() if l > 0 and np.isfinite(m)]
    return 0.0 in means and bool(positive) and max(positive) > means[0.0]


def guided_modules(frame: pd.DataFrame, profiles: pd.DataFrame | None) -> pd.DataFrame:
    """Which module each placement guides: placement, index (conv layers in forward order,
    the placement's numbering) and module name. From a replication's "guided" profile rows
    when it recorded them (pre-skip, empirical), else by reading the indices ("first",
    "all", "1,5") against its "init" profile, which lists the layers in forward order."""
    rows = []
    if profiles is None or not len(profiles) or "placement" not in frame.columns:
        return pd.DataFrame(columns=["placement", "index", "module"])
    for placement in sorted_levels(frame["placement"]):
        ids = frame.loc[matches(frame["placement"], placement), "id"]
        prof = profiles[profiles["id"].isin(set(ids))]
        guided = prof[prof["stage"] == "guided"]
        if len(guided):
            first = guided[guided["id"] == guided["id"].iloc[0]].sort_values("layer")
            pairs = list(zip(first["layer"].astype(int), first["name"]))
        else:
            init = prof[prof["stage"] == "init"]
            if not len(init):
                continue
            init = init[init["id"] == init["id"].iloc[0]]
            kind = "conv" if (init["kind"] == "conv").any() else "dense"
            layers = init[init["kind"] == kind].drop_duplicates("layer").sort_values("layer")
            names = list(layers["name"])
            text = str(placement).strip().lower()
            if text == "all":
                wanted = range(1, len(names) + 1)
            elif text == "first":
                wanted = [1]
            elif text.replace(",", "").isdigit():
                wanted = [int(i) for i in text.split(",")]
            else:
                continue
            pairs = [(i, names[i - 1]) for i in wanted if 1 <= i <= len(names)]
        rows += [{"placement": placement, "index": i, "module": name} for i, name in pairs]
    return pd.DataFrame(rows, columns=["placement", "index", "module"])
