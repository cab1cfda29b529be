"""Factor levels of the replication frame (one row per replication): labels, order,
selection, slices, and the values of each level that enter a statistic.

Only rows with status "done" and a finite metric enter a statistic, but every level present
in the frame keeps its row or cell: a group with fewer than 2 values is marked ``?`` /
noted, never dropped. Nothing here writes files.
"""

from __future__ import annotations

import numpy as np
import pandas as pd



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
