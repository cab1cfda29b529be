"""The analyses a study declares: light frozen dataclasses, stored with the study as JSON.

A study file lists them (``Study(..., analyses=[SignificanceTable("val_mse", at={"latent": 80})])``);
the store keeps ``spec_to_dict`` of each, and ``harness analyze`` rebuilds them with
``spec_from_dict`` from the database alone. Only the standard library is imported here, so
that importing a study file (and ``harness --help``) stays fast.

Common fields:
  at          fixes other factors, e.g. ``{"latent": 80}``; ``None`` = one result per
              combination of the study's other grid factors (seed excluded). Values are
              written as in the results frame: ``{"arch": "32-32", "placement": "first"}``.
  alpha       significance threshold of the two-sided tests (one-sided for Table 1).
  test        "student" (pooled variance, what the paper most likely used) or "welch".
  correction  multiple-comparison correction across each table, shown beside the raw result:
              a statsmodels ``multipletests`` method ("holm", "bonferroni", "fdr_bh", ...) or "none".
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass
from typing import Any, Mapping

from harness.errors import UserError

TESTS = ("student", "welch")
CORRECTIONS = ("holm", "bonferroni", "sidak", "holm-sidak", "hommel", "fdr_bh", "fdr_by", "none")


class AnalysisError(UserError):
    """A user-caused analysis problem (unknown study, nothing recorded, bad spec): one line."""


def _closest(name: str, allowed) -> str:
    match = difflib.get_close_matches(name, list(allowed), n=1)
    return f"; did you mean {match[0]!r}?" if match else ""


def _pairs(value, field: str) -> tuple | None:
    """Normalise a mapping to a sorted tuple of (key, value) pairs, so specs stay hashable."""
    if value is None:
        return None
    items = value.items() if isinstance(value, Mapping) else value
    try:
        pairs = tuple((str(k), v) for k, v in items)
    except (TypeError, ValueError):
        raise ValueError(f"{field} must be a mapping like {{'latent': 80}}, got {value!r}") from None
    for k, v in pairs:
        if not isinstance(v, (str, int, float, bool)):
            raise ValueError(f"{field}[{k!r}] must be a str or number, got {v!r}")
    return tuple(sorted(pairs))


def _check_common(spec) -> None:
    if hasattr(spec, "at"):
        object.__setattr__(spec, "at", _pairs(spec.at, "at"))
    if hasattr(spec, "alpha") and not 0 < spec.alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {spec.alpha!r}")
    if hasattr(spec, "test") and spec.test not in TESTS:
        raise ValueError(f"test must be one of {TESTS}, got {spec.test!r}{_closest(spec.test, TESTS)}")
    if hasattr(spec, "correction") and spec.correction not in CORRECTIONS:
        raise ValueError(
            f"correction must be one of {CORRECTIONS}, got {spec.correction!r}"
            f"{_closest(spec.correction, CORRECTIONS)}")
    if hasattr(spec, "confidence") and not 0 < spec.confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {spec.confidence!r}")


@dataclass(frozen=True)
class SignificanceTable:
    """Fig. 3b-6b: two-sided t-tests between every pair of levels of ``factor``."""

    metric: str                       # frame column, e.g. "val_mse", "stop_epoch"
    factor: str = "lam"               # its levels are the rows and columns
    at: Mapping[str, Any] | None = None
    alpha: float = 0.01               # the paper's threshold for + / -
    test: str = "student"
    correction: str = "holm"
    published: str | None = None      # key of paper.SIGN_TABLES, e.g. "fig3b"
    power: float = 0.8                # for the minimum detectable effect of each cell
    # equivalence margin δ, a fraction of the compared means (of their error 1 − mean, for
    # an accuracy or IoU): two levels are "equivalent" when TOST shows them within ±δ.
    # None: the metric's default (significance.margin: 5%, 10% for a stopping epoch).
    equivalence: float | None = None

    def __post_init__(self):
        _check_common(self)
        if self.equivalence is not None and not 0 < self.equivalence < 1:
            raise ValueError(f"equivalence must be a fraction in (0, 1), got {self.equivalence!r}")


@dataclass(frozen=True)
class CIPlot:
    """Fig. 3a-6a: mean of ``metric`` against ``x``, one line per ``hue``, with t-intervals."""

    metric: str
    x: str = "latent"
    hue: str = "lam"
    at: Mapping[str, Any] | None = None
    confidence: float = 0.95
    logx: bool = False
    logy: bool = False

    def __post_init__(self):
        _check_common(self)


@dataclass(frozen=True)
class CurvePlot:
    """Training curves: per epoch, the mean of a per-epoch quantity (``metric``: val_loss,
    train_loss, entropy_loss, train_acc, val_acc or val_iou) over the done replications of
    each ``hue`` level, with a t-interval band. A replication counts at the epochs it
    trained; a level's line ends where fewer than ``min_share`` of its replications are
    still training, so that its tail is not the mean of the slowest few (the CSV has every
    epoch, with n)."""

    metric: str = "val_loss"
    hue: str = "lam"
    at: Mapping[str, Any] | None = None
    confidence: float = 0.95
    min_share: float = 0.5
    logy: bool = False

    def __post_init__(self):
        _check_common(self)
        if not 0 < self.min_share <= 1:
            raise ValueError(f"min_share must be in (0, 1], got {self.min_share!r}")


@dataclass(frozen=True)
class Table1:
    """Table 1: base at factor = 0, Δ at the best level > 0, one-tailed t-tests with stars.

    The best level is the one with the highest mean ``metric_val`` (the paper's post-hoc
    choice); its p-values are also given Holm-corrected over the candidate levels.
    """

    metric_train: str = "train_acc"
    metric_val: str = "val_acc"
    factor: str = "lam"
    by: str = "arch"                  # one row per value
    split_by: str | None = "placement"  # one table per value ("first", "all")
    at: Mapping[str, Any] | None = None
    alpha: float = 0.05               # stars are always * .05, ** .01, *** .001
    test: str = "student"
    correction: str = "holm"          # over the candidate levels, for the post-hoc choice
    published: str | None = "table1"  # key of paper.TABLE1S (holds one table per split value)

    def __post_init__(self):
        _check_common(self)


@dataclass(frozen=True)
class Table2:
    """Table 2: ``metric`` in the paper's layout, one row per combination of ``rows``
    (model, augmentation, head dropout, placement) and one column per level of ``factor``.
    With several seeds a cell is a mean with its t-interval, and every level > 0 is tested
    against level 0 of the same row (two-sided; ``correction`` across the row's levels).
    Also lists the layers each placement guides."""

    metric: str = "val_acc"
    factor: str = "lam"
    rows: tuple[str, ...] = ("model", "data.augment", "net.dropout", "placement")
    at: Mapping[str, Any] | None = None
    alpha: float = 0.05
    test: str = "student"
    correction: str = "holm"
    confidence: float = 0.95
    published: str | None = "table2"  # key of paper.TABLE2

    def __post_init__(self):
        _check_common(self)
        rows = (self.rows,) if isinstance(self.rows, str) else tuple(self.rows)
        object.__setattr__(self, "rows", rows)


@dataclass(frozen=True)
class ProfilePlot:
    """Fig. 1: per layer, box plots over filters of the entropy change, init vs final."""

    at: Mapping[str, Any] | None = None
    split_by: str | None = None       # one figure per value of this column (e.g. "lam")
    kind: str | None = None           # "conv", "dense" or None for every layer
    stages: tuple[str, ...] = ("init", "final")

    def __post_init__(self):
        _check_common(self)
        object.__setattr__(self, "stages", tuple(self.stages))


@dataclass(frozen=True)
class SummaryTable:
    """Table 3 style: mean and t-interval of several metrics per level of ``factor``."""

    metrics: tuple[str, ...]
    factor: str = "lam"
    at: Mapping[str, Any] | None = None
    confidence: float = 0.95
    published: str | None = None      # key of paper.SUMMARY_TABLES, e.g. "table3"

    def __post_init__(self):
        _check_common(self)
        metrics = (self.metrics,) if isinstance(self.metrics, str) else tuple(self.metrics)
        object.__setattr__(self, "metrics", metrics)


@dataclass(frozen=True)
class ProtocolEffect:
    """Does an open choice (PAPER.md §4) matter? ``protocol`` is a grid factor such as
    "train.monitor": each level of ``factor`` is compared across protocol values, and the
    ``factor`` sign table is rebuilt under each protocol value and the two set side by side."""

    metric: str
    protocol: str
    factor: str = "lam"
    at: Mapping[str, Any] | None = None
    alpha: float = 0.01
    test: str = "student"
    correction: str = "holm"

    def __post_init__(self):
        _check_common(self)


@dataclass(frozen=True)
class Claims:
    """The paper's headline claims (``paper.CLAIMS[published]``), each checked cell by cell:
    does the replicated mean fall in the published range?"""

    published: str = "e1"


SPECS = {cls.__name__: cls for cls in
         (SignificanceTable, CIPlot, CurvePlot, Table1, Table2, ProfilePlot, SummaryTable, ProtocolEffect, Claims)}


def spec_to_dict(spec) -> dict:
    """JSON-able form: ``{"type": class name, field: value, ...}`` (mappings as dicts)."""
    if type(spec).__name__ not in SPECS:
        raise TypeError(f"not an analysis spec: {spec!r}")
    out = {"type": type(spec).__name__}
    for f in dataclasses.fields(spec):
        value = getattr(spec, f.name)
        if f.name == "at" and value is not None:
            value = dict(value)
        elif isinstance(value, tuple):
            value = list(value)
        out[f.name] = value
    return out


def spec_from_dict(d: Mapping) -> Any:
    """Inverse of ``spec_to_dict``; unknown types or fields raise ``AnalysisError``."""
    d = dict(d)
    name = d.pop("type", None)
    if name not in SPECS:
        raise AnalysisError(f"unknown analysis {name!r}{_closest(str(name), SPECS)} "
                            f"(known: {', '.join(SPECS)})")
    cls = SPECS[name]
    fields = {f.name for f in dataclasses.fields(cls)}
    for key in d:
        if key not in fields:
            raise AnalysisError(f"{name} has no field {key!r}{_closest(key, fields)} "
                                f"(fields: {', '.join(sorted(fields))})")
    try:
        return cls(**d)
    except (TypeError, ValueError) as e:
        raise AnalysisError(f"bad {name}: {e}") from None


def describe(spec) -> str:
    """One line naming the spec and its non-default fields, for report headings."""
    parts = []
    for f in dataclasses.fields(spec):
        value = getattr(spec, f.name)
        if f.default is dataclasses.MISSING or value != f.default:
            if f.name == "at" and value is not None:
                value = ", ".join(f"{k}={v}" for k, v in value)
            parts.append(f"{f.name}={value}")
    return f"{type(spec).__name__}({'; '.join(parts)})"
