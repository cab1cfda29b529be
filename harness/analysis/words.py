"""Plain words for the report's headings, captions and figure labels: metric and factor
names as a reader says them ("validation MSE", "λ1"), a slice ("at latent 80"), a
published table's key ("Fig. 3b"), and each analysis spec's heading. Plain data in, text out."""

from __future__ import annotations

import re
from contextlib import contextmanager
from contextvars import ContextVar

from harness.analysis.grouping import level_label

# metric column -> words; an unknown metric stays as it is
METRICS = {
    "val_mse": "validation MSE", "train_mse": "training MSE", "val_loss": "validation loss",
    "train_loss": "training loss", "stop_epoch": "stopping epoch", "best_epoch": "best epoch",
    "val_acc": "validation accuracy", "train_acc": "training accuracy", "val_iou": "validation IoU",
    "entropy_loss": "entropy term", "grad_ratio": "guidance/task gradient ratio",
    "logdet_mean": "log|det W|", "log_c11_mean": "log|c11|", "wall_s": "wall time (s)",
}
# factor column -> words; 'lam' reads λ1 or λ2 by the report's models (guidance_symbol)
FACTORS = {"latent": "latent", "train.monitor": "stopping monitor", "arch": "architecture",
           "placement": "placement", "epoch": "epoch", "seed": "seed"}
# data set key -> its name; an unknown one stays as it is
DATASETS = {"mnist": "MNIST", "cifar10": "CIFAR-10", "imagenette": "Imagenette", "coco": "COCO"}
# The paper names the guidance strength λ1 on dense layers and λ2 on conv layers.
_DENSE_MODELS = {"dense_ae"}


# Which λ the report reads: "1", "2" or "" (a mix), per report. A context variable, not a
# module global: two reports written at once (threads, Dask) each read their own, and the
# tables above never change.
_GUIDANCE = ContextVar("guidance_digit", default="1")


@contextmanager
def guidance_symbol(models):
    """Within the block, 'lam' reads λ1 when every model in ``models`` is dense, λ2 when none
    is, and λ for a mix, so that every heading and figure label of one report reads the same
    symbol without each section passing it down."""
    names = {str(m) for m in models}
    digit = "1" if names <= _DENSE_MODELS else ("2" if not names & _DENSE_MODELS else "")
    token = _GUIDANCE.set(digit)
    try:
        yield
    finally:
        _GUIDANCE.reset(token)


def _lam(symbol: bool) -> str:
    digit = _GUIDANCE.get()
    return "λ" + ({"1": "₁", "2": "₂", "": ""}[digit] if symbol else digit)


def metric(name: str) -> str:
    """'val_mse' -> 'validation MSE'; unknown names unchanged."""
    return METRICS.get(name, name)


def dataset(name: str) -> str:
    """'cifar10' -> 'CIFAR-10'; unknown names unchanged."""
    return DATASETS.get(str(name), str(name))


def capital(text: str) -> str:
    return text[:1].upper() + text[1:]


def factor(name: str) -> str:
    """'lam' -> 'λ1' (or λ2, see guidance_symbol); unknown names unchanged."""
    return _lam(symbol=False) if name == "lam" else FACTORS.get(name, name)


def axis(name: str) -> str:
    """A figure axis label: a metric's words or a factor's symbol ('λ₁')."""
    return _lam(symbol=True) if name == "lam" else METRICS.get(name) or FACTORS.get(name, name)


def slice_words(labels) -> str:
    """{'latent': 80, 'train.monitor': 'task'} -> 'latent 80, stopping monitor task';
    a symbol takes '=': 'λ1 = 0.1'."""
    items = labels.items() if hasattr(labels, "items") else (labels or ())
    parts = []
    for k, v in items:
        word = factor(k)
        parts.append(f"{word} = {level_label(v)}" if word.startswith("λ") else f"{word} {level_label(v)}")
    return ", ".join(parts)


def at(labels) -> str:
    """' at latent 80' or ''."""
    text = slice_words(labels)
    return f" at {text}" if text else ""


def published(key: str | None) -> str:
    """'fig3b' -> 'Fig. 3b', 'table1' -> 'Table 1', other keys unchanged."""
    if not key:
        return ""
    m = re.fullmatch(r"(fig|table)\s*(\d+\w*)", key, flags=re.I)
    if not m:
        return key
    return f"{'Fig.' if m.group(1).lower() == 'fig' else 'Table'} {m.group(2)}"


def _paper(key) -> str:
    return f" ({published(key)})" if key else ""


def heading(spec) -> str:
    """The plain heading of an analysis spec's section (harness.analysis.spec)."""
    kind = type(spec).__name__
    at_ = at(getattr(spec, "at", None))
    if kind == "SignificanceTable":
        return f"{capital(metric(spec.metric))} across {factor(spec.factor)}{at_}{_paper(spec.published)}"
    if kind == "CIPlot":
        return f"{capital(metric(spec.metric))} against {factor(spec.x)}, one line per {factor(spec.hue)}{at_}"
    if kind == "CurvePlot":
        return f"Training curves: {metric(spec.metric)} per epoch, one line per {factor(spec.hue)}{at_}"
    if kind == "Table1":
        return f"Table 1: {metric(spec.metric_train)} and {metric(spec.metric_val)} at the best {factor(spec.factor)}{at_}"
    if kind == "Table2":
        return f"Table 2: {metric(spec.metric)} by model and {factor(spec.factor)}{at_}"
    if kind == "ProfilePlot":
        split = f", one figure per {factor(spec.split_by)}" if spec.split_by else ""
        return f"Entropy profiles per layer{at_}{split}"
    if kind == "SummaryTable":
        names = ", ".join(metric(m) for m in spec.metrics)
        return f"Summary of {names} per {factor(spec.factor)}{at_}{_paper(spec.published)}"
    if kind == "ProtocolEffect":
        return f"Does the {factor(spec.protocol)} change {metric(spec.metric)}?{at_ and ' (' + at_[1:] + ')'}"
    if kind == "Claims":
        return "The paper's headline claims"
    return kind
