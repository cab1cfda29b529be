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
import os
import platform
import re
import subprocess
import time
import traceback
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import torch
import torch.nn.functional as F

import harness
from harness.data import _slices, augment_batch, batch_source, splits_for
from harness.entropy import candidate_layers, entropy_loss, entropy_profile, entropy_stats, guided_layers
from harness.models import build_model
from harness.stopping import EarlyStopping, EpochValidation
from harness.study import Config, Replication, StudyError, derive_seed, flatten


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


_TASK_OF_MODEL = {"dense_ae": "reconstruction", "unet": "segmentation"}  # the others: classification


def check_config(config: Config) -> None:
    """Reject combinations that cannot train, before any training starts."""
    task = _TASK_OF_MODEL.get(config.model, "classification")
    if config.task != task:
        raise StudyError(f"model {config.model} trains with task={task}")
    if (config.dataset == "coco") != (config.task == "segmentation"):
        raise StudyError("task=segmentation trains on dataset=coco (the only data set with masks), and coco only with it")
    if config.train.monitor == "acc" and config.task == "reconstruction":
        raise StudyError("train.monitor=acc needs an accuracy: task=classification or segmentation")
    placement = config.placement.strip().lower()
    if placement not in ("first", "all", "pre-skip", "empirical") and not re.fullmatch(r"\d+(,\d+)*", placement):
        raise StudyError(f"bad placement {config.placement!r}: use first, all, pre-skip, empirical or conv indices like 1,5")
    if placement == "empirical" and not config.entropy.profile:
        raise StudyError("placement=empirical needs entropy.profile=PATH, a CSV from `harness profile`")
    if placement == "empirical" and not Path(config.entropy.profile).is_file():
        raise StudyError(f"entropy.profile: no profile CSV at {config.entropy.profile} (make one with `harness profile`)")
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
        splits = splits_for(config, data_dir, device)
        outcome = train(config, splits, device)
    except Exception:  # recorded, not raised: one bad replication must not stop a sweep
        outcome = Outcome(status="failed", error=traceback.format_exc())
    return result_dict(rep, outcome, device, started, datetime.now(timezone.utc), time.perf_counter() - clock)


def result_dict(rep: Replication, outcome: Outcome, device, started: datetime, finished: datetime, wall_s: float) -> dict:
    """The plain result of one replication that the driver records (Store.record)."""
    return {
        "id": rep.id,
        "study": rep.study,
        "status": outcome.status,
        "error": outcome.error,
        "config": {k: list(v) if isinstance(v, tuple) else v for k, v in flatten(rep.config).items()},
        "metrics": outcome.metrics,
        "history": outcome.history,
        "profiles": outcome.profiles,
        "device": str(device),
        "host": platform.node(),
        "started_at": started.isoformat(timespec="seconds"),
        "finished_at": finished.isoformat(timespec="seconds"),
        "wall_s": wall_s,
        "versions": versions(),
        "machine": machine(),
    }


@contextmanager
def float32_math(config: Config) -> Iterator[None]:
    """Float32 matmuls and convolutions on CUDA in TF32 exactly when ``train.tf32`` says
    so (PyTorch's defaults differ between the two), and subnormal floats flushed to zero
    on the CPU when ``train.flush_denormals`` says so; both restored afterwards. The flush
    mode is the calling thread's (x86 MXCSR): torch's intra-op threads keep the mode they
    started with, so a one-thread worker (the default CPU layout) is covered whole."""
    backends = (torch.backends.cuda.matmul, torch.backends.cudnn.conv)
    before = [b.fp32_precision for b in backends]
    for b in backends:
        b.fp32_precision = "tf32" if config.train.tf32 else "ieee"
    try:
        with _flush_mode(config.train.flush_denormals):
            yield
    finally:
        for b, value in zip(backends, before):
            b.fp32_precision = value


def subnormals_kept(keep: bool = True) -> AbstractContextManager:
    """IEEE subnormals in this thread for the block when ``keep`` (else nothing changes).
    The once-an-epoch step whose gradients are measured (grad_ratio, term_led) runs so: the
    entropy term's float32 gradient is mostly subnormal there, and flushed it would read as
    no gradient at all. The weights come out the same either way (the flush's tests)."""
    return _flush_mode(False) if keep else nullcontext()


@contextmanager
def _flush_mode(flush: bool) -> Iterator[None]:
    """This thread flushes subnormals to zero, or not, for the block; its mode restored."""
    before = flushes_denormals()
    torch.set_flush_denormal(flush)
    try:
        yield
    finally:
        torch.set_flush_denormal(before)


def flushes_denormals() -> bool:
    """Whether this thread flushes subnormal floats to zero (torch has no getter: a scalar
    product on the CPU runs in the calling thread and tells)."""
    return bool((torch.tensor(1e-39) * 1.0).item() == 0.0)


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
    outcome.profiles += _profile_rows(model, input_shape, "init", ent.c11)
    if config.placement.strip().lower() in ("pre-skip", "empirical"):  # resolved from a graph or a file: record it
        outcome.profiles += _guided_rows(model, input_shape, guided, ent.c11)
    if config.train.compile != "off":  # in place: the module keeps its parameters and their names
        model.compile(mode=config.train.compile)
    optimizer = _optimizer(model, config)
    task_loss = _task_loss(config.task, config.train.seg_loss)
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
                        ratio, led = _grad_ratio(task, entropy_term(config.lam), guided_params, config.lam)
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
                    correct += ((out > 0) == (_crop_like(y, out) > 0.5)).float().mean().item() * len(x)

            val = _evaluate(model, batches.eval("val"), config.task, config.train.seg_loss,
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
    outcome.metrics = _final_metrics(model, batches, config, entropy_term, guided)
    outcome.metrics.update(
        stop_epoch=float(epoch),
        best_epoch=float(stopping.best_epoch),
        hit_max_epochs=float(stopping.hit_max_epochs),
        grad_ratio=_mean(grad_ratios),
        term_led=_mean(term_leds),
    )
    outcome.profiles += _profile_rows(model, input_shape, "final", ent.c11)
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


def _task_loss(task: str, seg_loss: str = "mse"):
    if task == "reconstruction":
        return lambda out, x, y: F.mse_loss(out, x.flatten(1))
    if task == "segmentation":
        if seg_loss == "bce":
            return lambda out, x, y: F.binary_cross_entropy_with_logits(out, _crop_like(y, out))
        return lambda out, x, y: F.mse_loss(torch.sigmoid(out), _crop_like(y, out))
    return lambda out, x, y: F.cross_entropy(out, y)


def _crop_like(mask: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """The centre of a (N, 1, H, W) mask at the output's size (a "valid" U-Net's output is
    smaller than its input, as in Ronneberger et al.'s overlap-tile setting)."""
    dh, dw = mask.shape[-2] - out.shape[-2], mask.shape[-1] - out.shape[-1]
    if dh == 0 and dw == 0:
        return mask
    return mask[..., dh // 2 : dh // 2 + out.shape[-2], dw // 2 : dw // 2 + out.shape[-1]]


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


def _grad_ratio(task: torch.Tensor, term: torch.Tensor, params: list, lam: float) -> tuple[float, float]:
    """(||∇ λ·entropy term|| / ||∇ task loss||, term_led) over the guided layers' weights.

    The ratio tells how large the guidance gradient is: with the inverse form and a
    determinant far below eps it is tiny. term_led is the share of the weights the term
    acts on (nonzero term gradient) where it outweighs the task gradient: under Adam, which
    scales each weight's step by its own gradient history, those weights follow the term,
    however small the ratio (a weight on an input that is always 0 has no task gradient)."""
    if lam == 0 or not params:
        return 0.0, 0.0
    g_task = torch.autograd.grad(task, params, retain_graph=True)
    g_term = torch.autograd.grad(term, params, retain_graph=False, allow_unused=True)
    pairs = [(a, b) for a, b in zip(g_task, g_term) if b is not None]
    norm_task = torch.sqrt(sum((g.double() ** 2).sum() for g in g_task))
    norm_term = torch.sqrt(sum((b.double() ** 2).sum() for _, b in pairs))
    ratio = (norm_term / norm_task).item() if norm_task > 0 else math.inf
    acted = sum(int((b != 0).sum()) for _, b in pairs)
    led = sum(int(((b.abs() > a.abs()) & (b != 0)).sum()) for a, b in pairs)
    return ratio, led / acted if acted else float("nan")


def _mean(values: list[float]) -> float:
    return float(sum(values) / len(values)) if values else float("nan")


@torch.no_grad()
def evaluate(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, task: str, seg_loss: str = "mse") -> tuple[float, float | None]:
    """Mean task loss (and accuracy for classification and segmentation) over a whole split."""
    result = _evaluate(model, _slices(x, y), task, seg_loss)
    return result["loss"], result.get("acc")


@torch.no_grad()
def _evaluate(model: torch.nn.Module, batches, task: str, seg_loss: str = "mse", examples: bool = False) -> dict:
    """Over every (x, y) batch of a split: {"loss"} (mean per example; per pixel for
    segmentation), "acc" (classification; pixel accuracy at sigmoid 0.5 for segmentation),
    and for segmentation "iou" = the mean over background and foreground of each class's
    intersection over union summed over the split (Keras' MeanIoU(num_classes=2)), and
    "iou_fg" = the foreground's alone. With ``examples``, "examples32" = every example's
    task loss in float32, in order (a numpy array; what the total_float32 monitor sums)."""
    model.eval()
    loss_sum, correct, n, pixels = 0.0, 0, 0, 0
    per_example = []
    confusion = torch.zeros(4, dtype=torch.float64)  # tp, fp, fn, tn
    for xb, yb in batches:
        out = model(xb)
        n += len(xb)
        if examples:
            per_example.append(_example_losses(out, xb, yb, task, seg_loss).float().cpu())
        if task == "reconstruction":
            loss_sum += F.mse_loss(out, xb.flatten(1), reduction="sum").item() / out.shape[1]
        elif task == "segmentation":
            yb = _crop_like(yb, out)
            if seg_loss == "bce":
                loss_sum += F.binary_cross_entropy_with_logits(out, yb, reduction="sum").item()
            else:
                loss_sum += F.mse_loss(torch.sigmoid(out), yb, reduction="sum").item()
            pred, truth = out > 0, yb > 0.5
            confusion += torch.stack([(pred & truth).sum(), (pred & ~truth).sum(), (~pred & truth).sum(), (~pred & ~truth).sum()]).double().cpu()
            pixels += yb.numel()
        else:
            loss_sum += F.cross_entropy(out, yb, reduction="sum").item()
            correct += (out.argmax(1) == yb).sum().item()
    extra = {"examples32": torch.cat(per_example).numpy()} if examples else {}
    if task == "reconstruction":
        return {"loss": loss_sum / n, **extra}
    if task == "classification":
        return {"loss": loss_sum / n, "acc": correct / n, **extra}
    tp, fp, fn, tn = confusion.tolist()
    ious = [v for v in (_ratio(tp, tp + fp + fn), _ratio(tn, tn + fn + fp)) if not math.isnan(v)]
    return {"loss": loss_sum / pixels, "acc": (tp + tn) / pixels, "iou": sum(ious) / len(ious) if ious else math.nan,
            "iou_fg": _ratio(tp, tp + fp + fn), **extra}


def _example_losses(out: torch.Tensor, x: torch.Tensor, y: torch.Tensor, task: str, seg_loss: str) -> torch.Tensor:
    """Each example's task loss (its mean over pixels for an image output), in the
    output's dtype: what a Keras loss function returns before its batch reduction."""
    if task == "reconstruction":
        return F.mse_loss(out, x.flatten(1), reduction="none").mean(1)
    if task == "segmentation":
        y = _crop_like(y, out)
        if seg_loss == "bce":
            return F.binary_cross_entropy_with_logits(out, y, reduction="none").flatten(1).mean(1)
        return F.mse_loss(torch.sigmoid(out), y, reduction="none").flatten(1).mean(1)
    return F.cross_entropy(out, y, reduction="none")


def _ratio(a: float, b: float) -> float:
    return a / b if b > 0 else math.nan  # a class absent from truth and prediction: no IoU


def _final_metrics(model, batches, config: Config, entropy_term, guided) -> dict:
    val = _evaluate(model, batches.eval("val"), config.task, config.train.seg_loss)
    train = _evaluate(model, batches.eval("train"), config.task, config.train.seg_loss)
    metrics = {"val_loss": val["loss"], "train_loss": train["loss"]}
    if config.task == "reconstruction":
        metrics.update(val_mse=val["loss"], train_mse=train["loss"])
    else:
        metrics.update(val_acc=val["acc"], train_acc=train["acc"])
    if config.task == "segmentation":
        metrics.update(val_iou=val["iou"], val_iou_fg=val["iou_fg"], train_iou=train["iou"], train_iou_fg=train["iou_fg"])
    with torch.no_grad():
        metrics["entropy_loss"] = entropy_term(1.0).item()
        metrics.update(entropy_stats(guided, c11=config.entropy.c11))
    return {k: float(v) for k, v in metrics.items()}


def _guided_rows(model, input_shape, guided, c11: str) -> list[dict]:
    """Profile rows of stage "guided", one per guided layer: layer = its index in the
    placement's numbering (conv layers in forward order), name = its module, value = its
    mean log|c11| (conv) or log|det| (dense) at initialisation. They record what a
    placement "pre-skip" or "empirical" resolved to (index placements need no record:
    the "init" profile lists the layers in the same forward order)."""
    index = {name: i for i, (name, _) in enumerate(candidate_layers(model, input_shape), start=1)}
    rows = []
    for name, module in guided:
        stats = entropy_stats([module], c11=c11)
        value = stats.get("log_c11_mean", stats.get("logdet_mean"))
        kind = "conv" if isinstance(module, torch.nn.Conv2d) else "dense"
        rows.append({"stage": "guided", "layer": index[name], "name": name, "kind": kind, "filter": 0, "value": float(value)})
    return rows


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


@functools.cache
def machine() -> dict:
    """What this host is, recorded once per host with its results (the report's "on what
    machine"): CPU model, logical CPUs, memory, GPUs."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (AttributeError, ValueError, OSError):
        memory = None
    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    return {"cpu": cpu, "cpus": os.cpu_count(), "memory_gib": None if memory is None else round(memory, 1),
            "gpus": gpus, "os": platform.platform(terse=True)}


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
