"""``harness plan``'s statistics: how many seeds a comparison needs, from a study's
recorded replications (the spread of a metric at each level of a factor)."""

from __future__ import annotations

import pandas as pd

from harness.analysis.report import study_factors
from harness.analysis.by_seed import seed_plan
from harness.errors import UserError


def plan_seeds(definition: dict, frame: pd.DataFrame, metric: str, by: str, at: list[str], *,
               effect: float | None = None, rel_effect: float | None = None, alpha: float = 0.01,
               power: float = 0.8) -> pd.DataFrame:
    """The seed plan (harness.analysis.by_seed.seed_plan) of ``metric`` by ``by`` among the
    study's recorded replications (``frame``, non-empty), at the ``key=value`` settings of
    ``at`` (each value read as the type of its column). A request the recorded results
    cannot answer is a one-line UserError."""
    factors, _ = study_factors(definition, frame)
    where = _settings(frame, at, factors)
    if by not in frame.columns:
        raise UserError(f"--by {by}: no such setting in the study's results")
    if metric in frame.columns and not pd.api.types.is_numeric_dtype(frame[metric]):
        raise UserError(f"{metric} is a setting, not a metric: name a number the replications recorded, "
                        "e.g. val_mse or stop_epoch")
    try:
        table = seed_plan(frame, metric, by, factors, at=where, effect=effect, rel_effect=rel_effect,
                          alpha=alpha, power=power)
    except KeyError as err:
        raise UserError(str(err.args[0])) from None
    if not len(table):
        raise UserError(f"nothing to compare: fewer than 2 levels of {by} recorded"
                        f"{' at ' + ' '.join(at) if at else ''}")
    return table


def caveats(table: pd.DataFrame) -> list[str]:
    """What a reader of the plan should know about its estimates: an sd of 0, few seeds."""
    notes = []
    if (table["sd"] == 0).any() or (table["sd_diff"] == 0).any():
        notes.append("An sd of 0 (every value, or every pair's difference, the same on these seeds) gives an mde of 0 "
                     "and 2 seeds: they hold only while that stays so.")
    few = int(min(table["n"].min(), table["n_vs"].min()))
    if few < 5:
        notes.append(f"The sd comes from as few as {few} seeds a level: a rough estimate, and the seed counts with it.")
    return notes


def _settings(frame: pd.DataFrame, at: list[str], factors: list[str]) -> dict:
    """``key=value`` pairs as {key: value}, each value as its column holds it (lam=1e-3 is
    the level 0.001; true/false for a boolean setting)."""
    where = {}
    for pair in at:
        key, sep, value = pair.partition("=")
        if not sep or key not in frame.columns:
            raise UserError(f"{pair!r}: expected key=value with a key of the study's results "
                            f"(e.g. {', '.join(factors[:3])})")
        where[key] = value
        if pd.api.types.is_bool_dtype(frame[key]):
            if value.lower() not in ("true", "false"):
                raise UserError(f"{pair!r}: {key} is true or false in the study's results")
            where[key] = str(value.lower() == "true")
        elif pd.api.types.is_numeric_dtype(frame[key]):
            try:
                where[key] = float(value)
            except ValueError:
                raise UserError(f"{pair!r}: {key} is a number in the study's results") from None
    return where
