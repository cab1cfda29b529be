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

from harness.data import augment_batch, batch_source, splits_for
from harness.entropy import entropy_loss, guided_layers
from harness.models import build_model
from harness.study import Config, Replication, derive_seed
from harness.training import diagnostics, evaluation
from harness.training.checks import check_config
from harness.training.numerics import float32_math, subnormals_kept
from harness.training.outcome import Diverged, Outcome, mean_or_nan, result_dict
from harness.training.stopping import EarlyStopping, EpochValidation


def run_replication(rep: Replication, device: str = "cpu", data_dir: str | Path | None = None) -> dict:
    """Train ``rep`` on ``device`` and return its result dict (see harness.store.Store.record)."""
    started = datetime.now(timezone.utc)
    clock = time.perf_counter()
    config = rep.config
    try:
        splits = splits_for(config, data_dir, device)
        outcome = train(config, splits, device)
    except Exception:  # recorded, not raised: one bad replication must not stop a sweep
        outcome = Outcome(status="failed", error=traceback.format_exc())
    return result_dict(rep, outcome, device, started, datetime.now(timezone.utc), time.perf_counter() - clock)




def train(config: Config, splits, device: str) -> Outcome:
    """The training loop: one model, one optimizer, early stopping on the validation set.

    ``splits``: harness.data.Splits (tensors on the device) or, for image-folder data
    sets, harness.data.ImageSplits (read by a DataLoader)."""
    check_config(config)
    with float32_math(config):
        return _train(config, splits, device)


def _train(config: Config, splits, device: str) -> Outcome:
    batches = batch_source(splits, config, device)
    input_shape = batches.input_shape
    model = seeded_model(config, input_shape, batches.n_classes).to(device)
    ent = config.entropy
    guided = guided_layers(
        model, config.placement, input_shape=input_shape, profile=ent.profile or None, k=ent.empirical_k, rank=ent.empirical_rank
    )
    guided_modules = [module for _, module in guided]
    guided_params = [module.weight for module in guided_modules]

    def entropy_term(lam: float, precision: str = ent.precision) -> torch.Tensor:
        return entropy_loss(
            guided_modules, lam, form=ent.form, eps=ent.eps, precision=precision, c11=ent.c11, reduce=ent.reduce
        )

    outcome = Outcome()
    outcome.profiles += diagnostics.profile_rows(model, input_shape, "init", ent.c11)
    if config.placement.strip().lower() in ("pre-skip", "empirical"):  # resolved from a graph or a file: record it
        outcome.profiles += diagnostics.guided_rows(model, input_shape, guided, ent.c11)
    if config.train.compile != "off":  # in place: the module keeps its parameters and their names
        model.compile(mode=config.train.compile)
    optimizer = _optimizer(model, config)
    task_loss = evaluation.task_loss(config.task, config.train.seg_loss)
    augment = _augmenter(config, device)

    stopping = EarlyStopping.of(config)
    best_state, lr_wait = None, 0
    best_monitor_acc = -math.inf
    grad_ratios, term_leds = [], []
    epoch = 0
    try:
        for epoch in range(1, config.train.max_epochs + 1):
            model.train()
            loss_sum, correct, seen = 0.0, 0, 0
            for step, (x, y) in enumerate(batches.train_epoch()):
                if augment is not None:
                    x, y = augment(x, y)
                with subnormals_kept(step == 0):  # the measured step: its gradients as IEEE floats
                    out = model(x)
                    task = task_loss(out, x, y)
                    total = task + entropy_term(config.lam) if config.lam != 0 else task
                    if step == 0:  # once per epoch: how strong is the guidance against the task?
                        ratio, led = diagnostics.grad_ratio(task, entropy_term(config.lam), guided_params, config.lam)
                        grad_ratios.append(ratio)
                        term_leds.append(led)
                    if not torch.isfinite(total):
                        raise Diverged(f"non-finite loss at epoch {epoch}: task {task.item()}, total {total.item()}")
                    optimizer.zero_grad(set_to_none=True)
                    total.backward()
                    optimizer.step()
                loss_sum += task.item() * len(x)
                seen += len(x)
                if config.task == "classification":
                    correct += (out.argmax(1) == y).sum().item()
                elif config.task == "segmentation":  # pixel accuracy, averaged over images
                    correct += ((out > 0) == (evaluation.crop_like(y, out) > 0.5)).float().mean().item() * len(x)

            val = evaluation.evaluate_batches(model, batches.eval("val"), config.task, config.train.seg_loss,
                            examples=stopping.needs_float32)
            val_loss, val_acc = val["loss"], val.get("acc")
            with torch.no_grad():
                ent_value = entropy_term(1.0).item()
                term32 = entropy_term(1.0, precision="float32").item() if stopping.needs_float32 else None
            if not math.isfinite(val_loss):
                raise Diverged(f"non-finite validation loss at epoch {epoch}")
            improved, seen_by_rule = stopping.observe(
                epoch, EpochValidation(val_loss, val_acc, ent_value, term32, val.get("examples32")))
            outcome.history.append(
                {
                    "epoch": epoch,
                    "train_loss": loss_sum / seen,
                    "val_loss": val_loss,
                    "entropy_loss": ent_value,
                    "train_acc": correct / seen if config.task != "reconstruction" else None,
                    "val_acc": val_acc,
                    **({"val_iou": val["iou"]} if "iou" in val else {}),
                    **seen_by_rule,
                }
            )
            if improved and config.train.restore_best:
                best_state = copy.deepcopy(model.state_dict())
            if config.train.lr_patience:  # E4: lr / 10 after lr_patience epochs without val gain
                metric = val_acc if val_acc is not None else -val_loss
                lr_wait = 0 if metric > best_monitor_acc else lr_wait + 1
                best_monitor_acc = max(best_monitor_acc, metric)
                if lr_wait >= config.train.lr_patience:
                    for group in optimizer.param_groups:
                        group["lr"] /= 10
                    lr_wait = 0
            if stopping.should_stop(epoch):
                break
    except Diverged as err:
        outcome.status, outcome.error = "diverged", str(err)
        outcome.metrics = {"stop_epoch": float(epoch), "best_epoch": float(stopping.best_epoch)}
        return outcome

    if best_state is not None:
        model.load_state_dict(best_state)
    outcome.metrics = evaluation.final_metrics(model, batches, config, entropy_term, guided)
    outcome.metrics.update(
        stop_epoch=float(epoch),
        best_epoch=float(stopping.best_epoch),
        hit_max_epochs=float(stopping.hit_max_epochs),
        grad_ratio=mean_or_nan(grad_ratios),
        term_led=mean_or_nan(term_leds),
    )
    outcome.profiles += diagnostics.profile_rows(model, input_shape, "final", ent.c11)
    return outcome


def seeded_model(config: Config, input_shape: tuple, n_classes: int) -> torch.nn.Module:
    """The replication's model with its initial weights: seeded from the replication's
    seed alone, so a packed member starts exactly where its lone run starts."""
    torch.manual_seed(derive_seed(config.seed, "init"))
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
