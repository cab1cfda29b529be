"""The stopping rule: what early stopping watches, in which precision, and when it stops.

One definition for every training path: a replication trained alone (harness.training.loop) and
each member of a pack (harness.training.pack) build an :class:`EarlyStopping` from their config,
hand it the epoch's validation results as an :class:`EpochValidation`, and it decides
"improved?" and "stop?". Every monitored value it sees goes into the epoch's history
(``monitored``, and for the Keras-style float32 total the two parts it summed), so every
stopping epoch can be recomputed from the database.

``train.monitor`` (PAPER.md §4, an open choice of the paper):

- ``task``: the validation task loss, as the harness computes it (float64 sums).
- ``total``: that plus λ times the entropy term, in float64.
- ``total_float32``: the ``val_loss`` a tf.keras 2.x model reports when the term is added
  with ``add_loss``, computed the way Keras computes it: per validation batch (Keras'
  ``validation_batch_size`` defaults to the training batch size) the float32 batch-mean
  task loss plus the float32 λ·term (``keras_val_loss``), and the running mean over
  batches kept in float32 as Keras' ``Mean`` metric keeps it (a float32 total of
  value × batch size, a float32 count, their quotient). With the term the constant λ/ε
  (``|det W|`` underflowing), the total's resolution is float32's near λ/ε and an MSE that
  improves by 1e-5 is invisible to it: the rule then stops ``patience`` epochs after the
  first.
- ``acc``: validation accuracy, maximised (compared as its negative).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

MONITORS = ("task", "total", "total_float32", "acc")
# What decides only when a replication stops and which weights it reports, not how it
# trains: replications that differ only in these follow one training trajectory
# (harness.training.pack trains it once; a grid over the monitor costs one training, not two).
STOPPING_RULE = ("train.monitor", "train.patience", "train.min_delta", "train.max_epochs", "train.restore_best")


@dataclass(frozen=True)
class EpochValidation:
    """What one epoch's validation gives the stopping rule, for one model.

    ``val_loss``: mean task loss over the validation set (float64 sums); ``val_acc``: its
    accuracy, or None; ``term``: the entropy term at λ = 1 in the training precision (the
    history's ``entropy_loss``); ``term32``: the term at λ = 1 in float32, and
    ``example_losses32``: the per-example task losses in float32, in validation order
    (both needed only by the ``total_float32`` monitor, else None)."""

    val_loss: float
    val_acc: float | None = None
    term: float = 0.0
    term32: float | None = None
    example_losses32: np.ndarray | None = None


def keras_val_loss(example_losses32, batch_size: int, lam: float, term32: float) -> tuple[float, float, float]:
    """(val_loss, task part, term part) as a tf.keras 2.x ``fit`` reports a model's
    validation loss with ``add_loss(λ·term)``, everything in float32.

    Keras' LossesContainer adds, per batch, the batch's mean task loss and the added
    losses (``add_n``, float32), and updates a ``Mean`` metric with that value and
    ``sample_weight`` = the batch's size: ``total += value·n_b``, ``count += n_b`` (float32
    variables, one batch after another), reported as ``total / count``. The task part is
    the same running mean of the task losses alone; the term part is the float32 λ·term
    added to every batch. Every sum here runs in order, one float32 addition at a time;
    TensorFlow's kernels may add a batch's examples in another order (a last-bit
    difference); the per-batch float32 sums and the sequential float32 accumulation, which
    decide what the total can resolve, are Keras'."""
    losses = np.asarray(example_losses32, dtype=np.float32)
    if losses.ndim != 1 or not len(losses):
        raise ValueError("keras_val_loss needs a non-empty 1-d array of per-example losses")
    starts = np.arange(0, len(losses), batch_size)
    sizes = np.minimum(batch_size, len(losses) - starts).astype(np.float32)
    padded = np.zeros(len(starts) * batch_size, dtype=np.float32)  # + 0.0 leaves a float sum as it is
    padded[: len(losses)] = losses
    batch_sums = np.cumsum(padded.reshape(len(starts), batch_size), axis=1, dtype=np.float32)[:, -1]
    batch_means = (batch_sums / sizes).astype(np.float32)
    reg = np.float32(lam) * np.float32(term32)
    count = np.cumsum(sizes, dtype=np.float32)[-1]
    total = np.cumsum((batch_means + reg) * sizes, dtype=np.float32)[-1]  # cumsum: sequential, as assign_add
    task = np.cumsum(batch_means * sizes, dtype=np.float32)[-1]
    return float(total / count), float(task / count), float(reg)


def monitored_value(monitor: str, lam: float, batch_size: int, val: EpochValidation) -> tuple[float, dict]:
    """(the value early stopping minimises, the history fields that record it)."""
    if monitor == "acc":
        value, extra = -val.val_acc, {}
    elif monitor == "total":
        value, extra = val.val_loss + lam * val.term, {}
    elif monitor == "total_float32":
        value, task, term = keras_val_loss(val.example_losses32, batch_size, lam, val.term32)
        extra = {"monitor_task": task, "monitor_term": term}
    elif monitor == "task":
        value, extra = val.val_loss, {}
    else:
        raise ValueError(f"unknown monitor {monitor!r}: choose one of {', '.join(MONITORS)}")
    return value, {"monitored": value, **extra}


@dataclass
class EarlyStopping:
    """One replication's early stopping, as Keras' EarlyStopping(monitor, patience,
    min_delta) with mode "min": an epoch improves when its monitored value is below the
    best so far by more than ``min_delta``; training stops after ``patience`` epochs
    without improvement, or at ``max_epochs``. ``restore_best`` says which weights the
    replication reports (the caller keeps them)."""

    monitor: str
    patience: int
    min_delta: float
    max_epochs: int
    restore_best: bool
    lam: float = 0.0
    batch_size: int = 32
    best_value: float = math.inf
    best_epoch: int = 0
    wait: int = 0

    @classmethod
    def of(cls, config) -> "EarlyStopping":
        t = config.train
        return cls(t.monitor, t.patience, t.min_delta, t.max_epochs, t.restore_best, config.lam, t.batch_size)

    @property
    def needs_float32(self) -> bool:
        """Whether this rule reads EpochValidation.term32 and example_losses32."""
        return self.monitor == "total_float32"

    def observe(self, epoch: int, val: EpochValidation) -> tuple[bool, dict]:
        """Take epoch ``epoch``'s validation: (improved?, the history fields it saw)."""
        value, fields = monitored_value(self.monitor, self.lam, self.batch_size, val)
        return self.observe_value(epoch, value), fields

    def observe_value(self, epoch: int, value: float) -> bool:
        """The rule itself on an already monitored value (what a recomputation from the
        database's ``monitored`` column replays)."""
        if value < self.best_value - self.min_delta:
            self.best_value, self.best_epoch, self.wait = value, epoch, 0
            return True
        self.wait += 1
        return False

    def should_stop(self, epoch: int) -> bool:
        return self.wait >= self.patience or epoch >= self.max_epochs

    @property
    def hit_max_epochs(self) -> bool:
        """Stopped by the epoch cap, not by patience: a censored stopping epoch."""
        return self.wait < self.patience


def replay(values, patience: int, min_delta: float = 0.0, max_epochs: int | None = None) -> tuple[int, int]:
    """(stop epoch, best epoch) of the rule run over per-epoch monitored values: what a
    reader recomputes from a replication's recorded history."""
    rule = EarlyStopping("task", patience, min_delta, max_epochs or len(values), True)
    for epoch, value in enumerate(values, start=1):
        rule.observe_value(epoch, value)
        if rule.should_stop(epoch):
            return epoch, rule.best_epoch
    return len(values), rule.best_epoch
