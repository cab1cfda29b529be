"""Train one replication and return its result as plain data.

``run_replication`` is the worker function: it never raises for something that went wrong
inside training. A NaN/inf loss ends the replication with status ``diverged``; any other
exception gives status ``failed`` with its traceback. The result is a dict of plain
Python values (no tensors, no ORM objects), so it can cross a process or network boundary
and the driver can record it (harness.store).
"""

from __future__ import annotations

import copy
import functools
import math
import platform
import subprocess
import time
import traceback
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import torch
import torch.nn.functional as F

import harness
from harness.data import Splits, load_splits
from harness.entropy import entropy_loss, entropy_profile, entropy_stats, guided_layers
from harness.models import build_model
from harness.study import Config, Replication, StudyError, derive_seed, flatten

EVAL_BATCH = 1024  # evaluation batch: large for speed, bounded for memory


class Diverged(Exception):
    """A loss became NaN or infinite."""


@dataclass
class Outcome:
    """What one training produced, before it is turned into a result dict."""

    status: str = "done"
    error: str | None = None
    metrics: dict = field(default_factory=dict)
    history: list = field(default_factory=list)
    profiles: list = field(default_factory=list)


def check_config(config: Config) -> None:
    """Reject combinations that cannot train, before any training starts."""
    if config.model == "dense_ae" and config.task != "reconstruction":
        raise StudyError("model dense_ae trains with task=reconstruction")
    if config.model != "dense_ae" and config.task != "classification":
        raise StudyError(f"model {config.model} trains with task=classification")
    if config.model == "dense_ae" and config.latent <= 0:
        raise StudyError("model dense_ae needs latent > 0 (e.g. latent=80)")
    if config.model == "cnn" and not config.arch:
        raise StudyError("model cnn needs arch, e.g. arch=32-64")
    if config.train.batch_size <= 0 or config.train.max_epochs <= 0:
        raise StudyError("train.batch_size and train.max_epochs must be positive")


def run_replication(rep: Replication, device: str = "cpu", data_dir: str | Path | None = None) -> dict:
    """Train ``rep`` on ``device`` and return its result dict (see harness.store.Store.record)."""
    started = datetime.now(timezone.utc)
    clock = time.perf_counter()
    config = rep.config
    try:
        splits = load_splits(
            config.dataset,
            data_dir,
            device=device,
            val_split=config.data.val_split,
            n_train=config.data.n_train,
            n_val=config.data.n_val,
        )
        outcome = train(config, splits, device)
    except Exception:  # recorded, not raised: one bad replication must not stop a sweep
        outcome = Outcome(status="failed", error=traceback.format_exc())
    return {
        "id": rep.id,
        "study": rep.study,
        "status": outcome.status,
        "error": outcome.error,
        "config": {k: list(v) if isinstance(v, tuple) else v for k, v in flatten(config).items()},
        "metrics": outcome.metrics,
        "history": outcome.history,
        "profiles": outcome.profiles,
        "device": str(device),
        "host": platform.node(),
        "started_at": started.isoformat(timespec="seconds"),
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "wall_s": time.perf_counter() - clock,
        "versions": versions(),
    }


def train(config: Config, splits: Splits, device: str) -> Outcome:
    """The training loop: one model, one optimizer, early stopping on the validation set."""
    check_config(config)
    torch.manual_seed(derive_seed(config.seed, "init"))
    model = build_model(
        config.model,
        splits.input_shape,
        splits.n_classes,
        latent=config.latent,
        arch=config.arch,
        latent_activation=config.net.latent_activation,
        output_activation=config.net.output_activation,
        padding=config.net.padding,
        leaky_slope=config.net.leaky_slope,
        dropout=config.net.dropout,
        init=config.net.init,
    ).to(device)
    guided = guided_layers(model, config.placement, input_shape=splits.input_shape)
    guided_modules = [module for _, module in guided]
    guided_params = [module.weight for module in guided_modules]
    ent = config.entropy

    def entropy_term(lam: float) -> torch.Tensor:
        return entropy_loss(
            guided_modules, lam, form=ent.form, eps=ent.eps, precision=ent.precision, c11=ent.c11, reduce=ent.reduce
        )

    outcome = Outcome()
    outcome.profiles += _profile_rows(model, splits.input_shape, "init", ent.c11)
    optimizer = _optimizer(model, config)
    task_loss = _task_loss(config.task)
    data_gen = torch.Generator(device=splits.train_x.device).manual_seed(derive_seed(config.seed, "data"))
    n, batch = len(splits.train_x), config.train.batch_size

    best_value, best_epoch, best_state, wait, lr_wait = math.inf, 0, None, 0, 0
    best_monitor_acc = -math.inf
    grad_ratios = []
    epoch = 0
    try:
        for epoch in range(1, config.train.max_epochs + 1):
            model.train()
            order = torch.randperm(n, generator=data_gen, device=splits.train_x.device)
            loss_sum, correct, seen = 0.0, 0, 0
            for start in range(0, n, batch):
                idx = order[start : start + batch]
                x, y = splits.train_x[idx], splits.train_y[idx]
                out = model(x)
                task = task_loss(out, x, y)
                total = task + entropy_term(config.lam) if config.lam != 0 else task
                if start == 0:  # once per epoch: how strong is the guidance against the task?
                    grad_ratios.append(_grad_ratio(task, entropy_term(config.lam), guided_params, config.lam))
                if not torch.isfinite(total):
                    raise Diverged(f"non-finite loss at epoch {epoch}: task {task.item()}, total {total.item()}")
                optimizer.zero_grad(set_to_none=True)
                total.backward()
                optimizer.step()
                loss_sum += task.item() * len(idx)
                seen += len(idx)
                if config.task == "classification":
                    correct += (out.argmax(1) == y).sum().item()

            val_loss, val_acc = evaluate(model, splits.val_x, splits.val_y, config.task)
            with torch.no_grad():
                ent_value = entropy_term(1.0).item()
            if not math.isfinite(val_loss):
                raise Diverged(f"non-finite validation loss at epoch {epoch}")
            outcome.history.append(
                {
                    "epoch": epoch,
                    "train_loss": loss_sum / seen,
                    "val_loss": val_loss,
                    "entropy_loss": ent_value,
                    "train_acc": correct / seen if config.task == "classification" else None,
                    "val_acc": val_acc,
                }
            )
            monitored = val_loss + config.lam * ent_value if config.train.monitor == "total" else val_loss
            if monitored < best_value - config.train.min_delta:
                best_value, best_epoch, wait = monitored, epoch, 0
                if config.train.restore_best:
                    best_state = copy.deepcopy(model.state_dict())
            else:
                wait += 1
            if config.train.lr_patience:  # E4: lr / 10 after lr_patience epochs without val gain
                metric = val_acc if val_acc is not None else -val_loss
                lr_wait = 0 if metric > best_monitor_acc else lr_wait + 1
                best_monitor_acc = max(best_monitor_acc, metric)
                if lr_wait >= config.train.lr_patience:
                    for group in optimizer.param_groups:
                        group["lr"] /= 10
                    lr_wait = 0
            if wait >= config.train.patience:
                break
    except Diverged as err:
        outcome.status, outcome.error = "diverged", str(err)
        outcome.metrics = {"stop_epoch": float(epoch), "best_epoch": float(best_epoch)}
        return outcome

    if best_state is not None:
        model.load_state_dict(best_state)
    outcome.metrics = _final_metrics(model, splits, config, entropy_term, guided)
    outcome.metrics.update(
        stop_epoch=float(epoch),
        best_epoch=float(best_epoch),
        hit_max_epochs=float(wait < config.train.patience),
        grad_ratio=float(sum(grad_ratios) / len(grad_ratios)) if grad_ratios else float("nan"),
    )
    outcome.profiles += _profile_rows(model, splits.input_shape, "final", ent.c11)
    return outcome


def _task_loss(task: str):
    if task == "reconstruction":
        return lambda out, x, y: F.mse_loss(out, x.flatten(1))
    return lambda out, x, y: F.cross_entropy(out, y)


def _optimizer(model: torch.nn.Module, config: Config) -> torch.optim.Optimizer:
    if config.train.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=config.train.lr, momentum=config.train.momentum)
    return torch.optim.Adam(model.parameters(), lr=config.train.lr)


def _grad_ratio(task: torch.Tensor, term: torch.Tensor, params: list, lam: float) -> float:
    """||∇ λ·entropy term|| / ||∇ task loss|| over the guided layers' weights.

    Tells whether the guidance term moves the weights at all: with the inverse form and a
    determinant far below eps it is a constant, and this ratio is ~0 whatever λ is."""
    if lam == 0 or not params:
        return 0.0
    g_task = torch.autograd.grad(task, params, retain_graph=True)
    g_term = torch.autograd.grad(term, params, retain_graph=False, allow_unused=True)
    norm_task = torch.sqrt(sum((g.double() ** 2).sum() for g in g_task))
    norm_term = torch.sqrt(sum((g.double() ** 2).sum() for g in g_term if g is not None))
    ratio = (norm_term / norm_task).item() if norm_task > 0 else math.inf
    return ratio


@torch.no_grad()
def evaluate(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, task: str) -> tuple[float, float | None]:
    """Mean task loss (and accuracy for classification) over a whole split."""
    model.eval()
    loss_sum, correct = 0.0, 0
    for start in range(0, len(x), EVAL_BATCH):
        xb, yb = x[start : start + EVAL_BATCH], y[start : start + EVAL_BATCH]
        out = model(xb)
        if task == "reconstruction":
            loss_sum += F.mse_loss(out, xb.flatten(1), reduction="sum").item() / out.shape[1]
        else:
            loss_sum += F.cross_entropy(out, yb, reduction="sum").item()
            correct += (out.argmax(1) == yb).sum().item()
    loss = loss_sum / len(x)
    return loss, (correct / len(x) if task == "classification" else None)


def _final_metrics(model, splits: Splits, config: Config, entropy_term, guided) -> dict:
    val_loss, val_acc = evaluate(model, splits.val_x, splits.val_y, config.task)
    train_loss, train_acc = evaluate(model, splits.train_x, splits.train_y, config.task)
    metrics = {"val_loss": val_loss, "train_loss": train_loss}
    if config.task == "reconstruction":
        metrics.update(val_mse=val_loss, train_mse=train_loss)
    else:
        metrics.update(val_acc=val_acc, train_acc=train_acc)
    with torch.no_grad():
        metrics["entropy_loss"] = entropy_term(1.0).item()
        metrics.update(entropy_stats(guided, c11=config.entropy.c11))
    return {k: float(v) for k, v in metrics.items()}


def _profile_rows(model, input_shape, stage: str, c11: str) -> list[dict]:
    with torch.no_grad():
        frame = entropy_profile(model, input_shape, c11=c11)
    return [
        {"stage": stage, "layer": int(r.layer), "name": r.name, "kind": r.kind, "filter": int(r.filter), "value": float(r.value)}
        for r in frame.itertuples(index=False)
    ]


@functools.lru_cache(maxsize=1)
def versions() -> dict:
    """Provenance recorded with every result."""
    return {"harness": harness.__version__, "torch": torch.__version__, "git_commit": _git_commit()}


def _git_commit() -> str | None:
    root = Path(harness.__file__).resolve().parent.parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root, capture_output=True, text=True)
    return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def run_replications(reps: list[Replication], device: str = "cpu", data_dir: str | Path | None = None) -> list[dict]:
    """The scheduler's unit of work: train a group of replications on one device and return
    one result dict each, in order. Replications that differ only in λ and seed (the same
    harness.pack.pack_key) are trained together as one vectorised pack (harness.pack),
    each still giving its own result; the others one at a time by run_replication."""
    from harness.pack import pack_groups, run_pack

    results: list[dict] = [None] * len(reps)  # type: ignore[list-item]
    for group in pack_groups([rep.config for rep in reps]):
        members = [reps[i] for i in group]
        if len(members) == 1:
            out = [run_replication(members[0], device=device, data_dir=data_dir)]
        else:
            out = run_pack(members, device=device, data_dir=data_dir)
        for i, result in zip(group, out):
            results[i] = result
    return results
