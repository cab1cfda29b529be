"""What a study may say beyond each setting's type: the range of every numeric setting,
and the shape of a study file's fields (``settings`` and ``grid`` are dicts, ``analyses``
are analysis specs). Checked when a study file or an override is read, so that a value
nobody can mean (a negative learning rate, ε = 0, a batch of 1e23 examples, ``grid=[1, 2]``)
is one line naming what is allowed, before anything trains or is recorded.

Only the standard library and the light ``harness.analysis.spec`` are imported here;
``harness.study`` builds on this module (its ``StudyError`` is defined here).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from harness.errors import UserError
from harness.registry import did_you_mean


class StudyError(UserError):
    """A user error in a study file or an override: printed as one line."""


@dataclass(frozen=True)
class Range:
    """The values a numeric setting may take: ``low`` (itself allowed unless ``open_low``)
    up to ``high`` (itself allowed; None: no bound)."""

    low: float
    high: float | None = None
    open_low: bool = False
    open_high: bool = False

    def holds(self, value: float) -> bool:
        above = value > self.low if self.open_low else value >= self.low
        below = self.high is None or (value < self.high if self.open_high else value <= self.high)
        return above and below

    def __str__(self) -> str:
        low = f"{'>' if self.open_low else '>='} {_number(self.low)}"
        if self.high is None:
            return low
        return f"{low} and {'<' if self.open_high else '<='} {_number(self.high)}"


def _number(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


COUNT = 10**9  # no count a setting takes comes near it; a value above is a typo (1e23)

# Every numeric setting with a range (the others, lam and seed among them, take any number).
RANGES: dict[str, Range] = {
    "latent": Range(0, COUNT),  # 0: a model without a latent layer (CNNs)
    "train.lr": Range(0, open_low=True),
    "train.adam_eps": Range(0, open_low=True),
    "train.momentum": Range(0, 1, open_high=True),
    "train.batch_size": Range(1, 10**7),
    "train.max_epochs": Range(1, 10**6),
    "train.patience": Range(0, 10**6),
    "train.min_delta": Range(0),
    "train.lr_patience": Range(0, 10**6),
    "entropy.eps": Range(0, open_low=True),
    "entropy.empirical_k": Range(1, COUNT),
    "data.n_train": Range(0, COUNT),
    "data.n_val": Range(0, COUNT),
    "data.image_size": Range(0, 10**5),
    "data.rotation": Range(0),
    "data.zoom": Range(0, 1, open_high=True),
    "net.dropout": Range(0, 1, open_high=True),
    "net.base_width": Range(1, 10**5),
}
WIDTH = Range(1, 10**5)  # each of arch's conv widths


def allowed(key: str) -> str:
    """' >= 1 and <= 10000000': the key's range as the end of an error message ('' if none)."""
    return f" {RANGES[key]}" if key in RANGES else ""


def check_range(key: str, value: Any, given: Any = None) -> Any:
    """``value`` (already of the key's type) if the key's range holds it, else a StudyError
    that names the range and the value as ``given`` (before its conversion)."""
    shown = value if given is None or isinstance(given, str) else given
    if key == "arch":
        if not all(WIDTH.holds(w) for w in value):
            raise StudyError(f"bad value {'-'.join(map(str, value))!r} for arch: each width must be {WIDTH}")
        return value
    allowed = RANGES.get(key)
    if allowed is not None and not (math.isfinite(value) and allowed.holds(value)):
        raise StudyError(f"bad value {shown!r} for {key}: must be {allowed}")
    return value


def check_fields(settings: Any, grid: Any, analyses: Any, exclude: Any) -> None:
    """The shape of a Study's fields, before their values are read: settings a dict of
    values, grid a dict of value lists, analyses a list of analysis specs, exclude a list
    of dicts."""
    for name, value, example in (("settings", settings, "{'latent': 80}"), ("grid", grid, "{'lam': [0, 1e-3]}")):
        if not isinstance(value, Mapping):
            raise StudyError(f"{name} must be a dict of dotted keys, e.g. {name}={example}, not a {type(value).__name__}")
    if not isinstance(exclude, (list, tuple)) or not all(isinstance(entry, Mapping) for entry in exclude):
        raise StudyError("exclude must be a list of dicts, e.g. exclude=[{'net.dropout': 0.5, 'data.augment': 'none'}]")
    if not isinstance(analyses, (list, tuple)):
        raise StudyError(f"analyses must be a list of analysis specs, e.g. [SignificanceTable('val_mse')], "
                         f"not a {type(analyses).__name__}")
    from harness.analysis.spec import SPECS

    for i, spec in enumerate(analyses):
        if not isinstance(spec, tuple(SPECS.values())):
            name = spec if isinstance(spec, str) else type(spec).__name__
            raise StudyError(f"analyses[{i}] is {spec!r}, not an analysis spec{did_you_mean(name, SPECS)}: use one of "
                             f"{', '.join(SPECS)} from harness.analysis.spec, e.g. SignificanceTable('val_mse')")
