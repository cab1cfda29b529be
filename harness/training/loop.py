"""Train one replication alone, the reference loop: ``run_replication`` is the worker
function for a replication that does not pack. It never raises for something that went
wrong inside training: a NaN/inf loss ends the replication ``diverged``, any other
exception ``failed`` with its traceback; the result is plain data (outcome.result_dict)."""

from __future__ import annotations

import copy
import functools
import math
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path

import torch

from harness import custom
from harness.data import augment_batch, batch_source, splits_for
from harness.entropy import entropy_loss, guided_layers
from harness.models import build_model
from harness.study import Config, Replication, derive_seed
from harness.training import diagnostics, evaluation
from harness.training.checks import check_config
from harness.training.numerics import float32_math, model_precision, subnormals_kept
from harness.training.outcome import Diverged, Outcome, diverged_metrics, result_dict, run_metrics
from harness.training.stopping import EarlyStopping, EpochValidation


def run_replication(rep: Replication, device: str = "cpu", data_dir: str | Path | None = None) -> dict:
    """Train ``rep`` on ``device`` and return its result dict (see harness.store.Store.record)."""
    started = datetime.now(timezone.utc)
    config = rep.config
    clock = None
    try:
        own = custom.train_function_of(config.model)  # a study file's whole training, or None
        if own is not None:
            clock = time.perf_counter()
            outcome = Outcome(metrics=own(config, device, data_dir))
        else:
            splits = splits_for(config, data_dir, device)
            # wall_s is training time alone, as a packed member's share of its pack's epochs
            # (pack.run_pack loads the splits before its clock starts too)
            clock = time.perf_counter()
            outcome = train(config, splits, device)
    except custom.PieceError as err:  # a study file's piece returned the wrong thing: its one line says what
        outcome = Outcome(status="failed", error=str(err))
    except Exception:  # recorded, not raised: one bad replication must not stop a sweep
        outcome = Outcome(status="failed", error=traceback.format_exc())
    wall_s = time.perf_counter() - clock if clock is not None else 0.0
    return result_dict(rep, outcome, device, started, datetime.now(timezone.utc), wall_s)




def train(config: Config, splits, device: str) -> Outcome:
    """The training loop: one model, one optimizer, early stopping on the validation set.

    ``splits``: harness.data.Splits (tensors on the device) or, for image-folder data
    sets, harness.data.ImageSplits (read by a DataLoader)."""
    check_config(config)
    with float32_math(config), model_precision(config, device):
        return _train(config, splits, device)


def _train(config: Config, splits, device: str) -> Outcome:
    return _Run(config, splits, device).train()


class _Run:
    """One replication's training: its model and optimizer, the state carried from epoch to
    epoch (early stopping, best weights, the lr schedule, the diagnostics), and its outcome."""

    def __init__(self, config: Config, splits, device: str):
        """Everything before the first epoch, in the order the reference loop has always
        taken it: the model's seeded init comes first, the profiles see the initial weights."""
        self.config = config
        self.batches = batch_source(splits, config, device)
        self.input_shape = self.batches.input_shape
        self.model = model = seeded_model(config, self.input_shape, self.batches.n_classes).to(device)
        ent = config.entropy
        try:
            self.guided = guided_layers(
                model, config.placement, input_shape=self.input_shape, profile=ent.profile or None, k=ent.empirical_k,
                rank=ent.empirical_rank
            )
        except ValueError:  # a study file's model with no dense or conv layer: nothing to guide or profile
            if custom.user_model(config.model) is None or config.lam != 0:
                raise
            self.guided = []
        guided_modules = [module for _, module in self.guided]
        self.guided_params = [module.weight for module in guided_modules]
        self.entropy_term = _entropy_term(guided_modules, ent)

        self.outcome = Outcome()
        self.outcome.profiles += diagnostics.profile_rows(model, self.input_shape, "init", ent.c11)
        if config.placement.strip().lower() in ("pre-skip", "empirical"):  # resolved from a graph or a file: record it
            self.outcome.profiles += diagnostics.guided_rows(model, self.input_shape, self.guided, ent.c11)
        if config.train.compile != "off":  # in place: the module keeps its parameters and their names
            model.compile(mode=config.train.compile)
        self.optimizer = _optimizer(model, config)
        self.task_loss = evaluation.task_loss(config.task, config.train.seg_loss)
        self.augment = _augmenter(config, device)

        self.stopping = EarlyStopping.of(config)
        self.best_state, self.lr_wait = None, 0
        self.best_monitor_acc = -math.inf
        self.grad_ratios, self.term_leds = [], []

    def train(self) -> Outcome:
        epoch = 0
        try:
            for epoch in range(1, self.config.train.max_epochs + 1):
                train_loss, train_acc = self._train_epoch(epoch)
                if self._validate(epoch, train_loss, train_acc):
                    break
        except Diverged as err:
            self.outcome.status, self.outcome.error = "diverged", str(err)
            self.outcome.metrics = diverged_metrics(epoch, self.stopping)
            return self.outcome
        return self._finish(epoch)

    def _train_epoch(self, epoch: int) -> tuple[float, float | None]:
        """One pass over the training set; (mean task loss, accuracy or None). Raises
        Diverged on a non-finite loss."""
        config, model = self.config, self.model
        model.train()
        loss_sum, correct, seen = 0.0, 0, 0
        for step, (x, y) in enumerate(self.batches.train_epoch()):
            if self.augment is not None:
                x, y = self.augment(x, y)
            with subnormals_kept(step == 0):  # the measured step: its gradients as IEEE floats
                out = model(x)
                task = self.task_loss(out, x, y)
                total = task + self.entropy_term(config.lam) if config.lam != 0 else task
                if step == 0:  # once per epoch: how strong is the guidance against the task?
                    ratio, led = diagnostics.grad_ratio(task, self.entropy_term(config.lam), self.guided_params,
                                                        config.lam)
                    self.grad_ratios.append(ratio)
                    self.term_leds.append(led)
                if not torch.isfinite(total):
                    raise Diverged(f"non-finite loss at epoch {epoch}: task {task.item()}, total {total.item()}")
                self.optimizer.zero_grad(set_to_none=True)
                total.backward()
                self.optimizer.step()
            loss_sum += task.item() * len(x)
            seen += len(x)
            if config.task == "classification":
                correct += (out.argmax(1) == y).sum().item()
            elif config.task == "segmentation":  # pixel accuracy, averaged over images
                correct += ((out > 0) == (evaluation.crop_like(y, out) > 0.5)).float().mean().item() * len(x)
        return loss_sum / seen, correct / seen if config.task in ("classification", "segmentation") else None

    def _validate(self, epoch: int, train_loss: float, train_acc: float | None) -> bool:
        """The epoch's validation: its history row, early stopping (keeping the best
        weights) and the lr schedule; True when training stops here. Raises Diverged on a
        non-finite validation loss."""
        config, stopping = self.config, self.stopping
        val = evaluation.evaluate_batches(self.model, self.batches.eval("val"), config.task, config.train.seg_loss,
                                          examples=stopping.needs_float32)
        val_loss, val_acc = val["loss"], val.get("acc")
        with torch.no_grad():
            ent_value = self.entropy_term(1.0).item()
            term32 = self.entropy_term(1.0, precision="float32").item() if stopping.needs_float32 else None
        if not math.isfinite(val_loss):
            raise Diverged(f"non-finite validation loss at epoch {epoch}")
        improved, seen_by_rule = stopping.observe(
            epoch, EpochValidation(val_loss, val_acc, ent_value, term32, val.get("examples32")))
        self.outcome.history.append(
            {
                "epoch": epoch,
                "train_loss": train_loss,
                "val_loss": val_loss,
                "entropy_loss": ent_value,
                "train_acc": train_acc,
                "val_acc": val_acc,
                **({"val_iou": val["iou"]} if "iou" in val else {}),
                **seen_by_rule,
            }
        )
        if improved and config.train.restore_best:
            self.best_state = copy.deepcopy(self.model.state_dict())
        if config.train.lr_patience:
            self._schedule_lr(val_loss, val_acc)
        return stopping.should_stop(epoch)

    def _schedule_lr(self, val_loss: float, val_acc: float | None) -> None:
        """E4: lr / 10 after lr_patience epochs without val gain."""
        metric = val_acc if val_acc is not None else -val_loss
        self.lr_wait = 0 if metric > self.best_monitor_acc else self.lr_wait + 1
        self.best_monitor_acc = max(self.best_monitor_acc, metric)
        if self.lr_wait >= self.config.train.lr_patience:
            for group in self.optimizer.param_groups:
                group["lr"] /= 10
            self.lr_wait = 0

    def _finish(self, epoch: int) -> Outcome:
        """The final metrics and profiles, on the best weights (restore_best) or the last."""
        if self.best_state is not None:
            self.model.load_state_dict(self.best_state)
        outcome, stopping = self.outcome, self.stopping
        outcome.metrics = evaluation.final_metrics(self.model, self.batches, self.config, self.entropy_term, self.guided)
        outcome.metrics.update(run_metrics(epoch, stopping, self.grad_ratios, self.term_leds))
        outcome.profiles += diagnostics.profile_rows(self.model, self.input_shape, "final", self.config.entropy.c11)
        return outcome


def _entropy_term(guided_modules: list, ent):
    """(λ, precision) -> λ · the guided layers' entropy term, in the config's precision
    unless told another (the Keras-style monitor reads it in float32)."""

    def entropy_term(lam: float, precision: str = ent.precision) -> torch.Tensor:
        return entropy_loss(
            guided_modules, lam, form=ent.form, eps=ent.eps, precision=precision, c11=ent.c11, reduce=ent.reduce
        )

    return entropy_term


def seeded_model(config: Config, input_shape: tuple, n_classes: int) -> torch.nn.Module:
    """The replication's model with its initial weights: seeded from the replication's
    seed alone, so a packed member starts exactly where its lone run starts."""
    torch.manual_seed(derive_seed(config.seed, "init"))
    own = custom.user_model(config.model)
    if own is not None:  # a study file's builder: its own initialisation, net.init not applied
        return own(config, input_shape, n_classes)
    return build_model(
        config.model,
        input_shape,
        n_classes,
        latent=config.latent,
        arch=config.arch,
        latent_activation=config.net.latent_activation,
        output_activation=config.net.output_activation,
        padding=config.net.padding,
        leaky_slope=config.net.leaky_slope,
        dropout=config.net.dropout,
        init=config.net.init,
        base_width=config.net.base_width,
    )




def _augmenter(config: Config, device: str):
    """None, or (x, y) -> augmented (x, y) with the replication's own "augment" stream."""
    if config.data.augment == "none":
        return None
    generator = torch.Generator(device=device).manual_seed(derive_seed(config.seed, "augment"))
    return functools.partial(augment_batch, generator=generator, rotation=config.data.rotation, zoom=config.data.zoom)


def _optimizer(model: torch.nn.Module, config: Config) -> torch.optim.Optimizer:
    if config.train.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=config.train.lr, momentum=config.train.momentum)
    return torch.optim.Adam(model.parameters(), lr=config.train.lr, eps=config.train.adam_eps)
