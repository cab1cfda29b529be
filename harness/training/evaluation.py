"""The evaluation contract: the task loss of each task, a model's loss and accuracy (IoU for
segmentation) over a split, each example's float32 loss for the Keras-style monitor, and
a replication's final metrics; and a pack's loss and accuracy over a split, per member."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from harness import custom
from harness.data import eval_slices
from harness.entropy import entropy_stats
from harness.study import Config

PACK_EVAL_FLOATS_CPU = 1 << 21  # activations of one evaluation step on CPU, in floats (8 MiB: cache-sized)
PACK_EVAL_FLOATS_GPU = 1 << 28


def task_loss(task: str, seg_loss: str = "mse"):
    own = custom.user_task(task)
    if own is not None:  # a study file's task: its loss of (output, y)
        return lambda out, x, y: own.loss(out, y)
    if task == "reconstruction":
        return lambda out, x, y: F.mse_loss(out, x.flatten(1))
    if task == "segmentation":
        if seg_loss == "bce":
            return lambda out, x, y: F.binary_cross_entropy_with_logits(out, crop_like(y, out))
        return lambda out, x, y: F.mse_loss(torch.sigmoid(out), crop_like(y, out))
    return lambda out, x, y: F.cross_entropy(out, y)


def crop_like(mask: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """The centre of a (N, 1, H, W) mask at the output's size (a "valid" U-Net's output is
    smaller than its input, as in Ronneberger et al.'s overlap-tile setting)."""
    dh, dw = mask.shape[-2] - out.shape[-2], mask.shape[-1] - out.shape[-1]
    if dh == 0 and dw == 0:
        return mask
    return mask[..., dh // 2 : dh // 2 + out.shape[-2], dw // 2 : dw // 2 + out.shape[-1]]




@torch.no_grad()
def evaluate(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, task: str, seg_loss: str = "mse") -> tuple[float, float | None]:
    """Mean task loss (and accuracy for classification and segmentation) over a whole split."""
    result = evaluate_batches(model, eval_slices(x, y), task, seg_loss)
    return result["loss"], result.get("acc")


@torch.no_grad()
def evaluate_batches(model: torch.nn.Module, batches, task: str, seg_loss: str = "mse", examples: bool = False) -> dict:
    """Over every (x, y) batch of a split: {"loss"} (mean per example; per pixel for
    segmentation), "acc" (classification; pixel accuracy at sigmoid 0.5 for segmentation),
    and for segmentation "iou" = the mean over background and foreground of each class's
    intersection over union summed over the split (Keras' MeanIoU(num_classes=2)), and
    "iou_fg" = the foreground's alone. With ``examples``, "examples32" = every example's
    task loss in float32, in order (a numpy array; what the total_float32 monitor sums)."""
    model.eval()
    own = custom.user_task(task)
    if own is not None:
        return _evaluate_user_task(model, batches, own)
    loss_sum, correct, n, pixels = 0.0, 0, 0, 0
    per_example = []
    confusion = torch.zeros(4, dtype=torch.float64)  # tp, fp, fn, tn
    for xb, yb in batches:
        out = model(xb)
        n += len(xb)
        if examples:
            per_example.append(example_losses(out, xb, yb, task, seg_loss).float().cpu())
        if task == "reconstruction":
            loss_sum += F.mse_loss(out, xb.flatten(1), reduction="sum").item() / out.shape[1]
        elif task == "segmentation":
            yb = crop_like(yb, out)
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


def _evaluate_user_task(model: torch.nn.Module, batches, task: custom.Task) -> dict:
    """A study file's task over a split: {"loss": its loss's mean over examples, each
    metric's name: its value on the whole split's outputs and targets}."""
    loss_sum, n, outputs, targets = 0.0, 0, [], []
    for xb, yb in batches:
        out = model(xb)
        loss_sum += float(task.loss(out, yb)) * len(xb)  # the batch's mean, weighted by its size
        n += len(xb)
        outputs.append(out)
        targets.append(yb)
    out, y = torch.cat(outputs), torch.cat(targets)
    return {"loss": loss_sum / n, **{m.name: float(m.fn(out, y)) for m in task.metrics}}


def example_losses(out: torch.Tensor, x: torch.Tensor, y: torch.Tensor, task: str, seg_loss: str) -> torch.Tensor:
    """Each example's task loss (its mean over pixels for an image output), in the
    output's dtype: what a Keras loss function returns before its batch reduction."""
    if task == "reconstruction":
        return F.mse_loss(out, x.flatten(1), reduction="none").mean(1)
    if task == "segmentation":
        y = crop_like(y, out)
        if seg_loss == "bce":
            return F.binary_cross_entropy_with_logits(out, y, reduction="none").flatten(1).mean(1)
        return F.mse_loss(torch.sigmoid(out), y, reduction="none").flatten(1).mean(1)
    return F.cross_entropy(out, y, reduction="none")


def _ratio(a: float, b: float) -> float:
    return a / b if b > 0 else math.nan  # a class absent from truth and prediction: no IoU


def final_metrics(model, batches, config: Config, entropy_term, guided) -> dict:
    val = evaluate_batches(model, batches.eval("val"), config.task, config.train.seg_loss)
    train = evaluate_batches(model, batches.eval("train"), config.task, config.train.seg_loss)
    with torch.no_grad():
        return split_metrics(config.task, val, train, entropy_term(1.0).item(), entropy_stats(guided, c11=config.entropy.c11))


def split_metrics(task: str, val: dict, train: dict, entropy_value: float, stats: dict) -> dict:
    """A replication's final metrics from its two splits' evaluations ({"loss", "acc",
    "iou", "iou_fg"} as evaluate_batches gives them), its entropy term at λ = 1 and its
    guided layers' statistics: the one builder for a lone run and every pack member."""
    metrics = {"val_loss": val["loss"], "train_loss": train["loss"]}
    own = custom.user_task(task)
    if own is not None:  # a study file's task: each of its metrics on both splits
        metrics.update({f"{split}_{m.name}": result[m.name] for m in own.metrics
                        for split, result in (("val", val), ("train", train))})
    elif task == "reconstruction":
        metrics.update(val_mse=val["loss"], train_mse=train["loss"])
    else:
        metrics.update(val_acc=val["acc"], train_acc=train["acc"])
    if task == "segmentation":
        metrics.update(val_iou=val["iou"], val_iou_fg=val["iou_fg"], train_iou=train["iou"], train_iou_fg=train["iou_fg"])
    metrics["entropy_loss"] = entropy_value
    metrics.update(stats)
    return {k: float(v) for k, v in metrics.items()}


@torch.no_grad()
def evaluate_pack(engine, params: list[torch.Tensor], x: torch.Tensor, y: torch.Tensor, reconstruction: bool,
                  examples: bool = False) -> tuple[list, list | None, np.ndarray | None]:
    """Per member of a pack (``params`` stacked, stepped by a harness.training.engines
    engine) mean task loss (and accuracy) over a whole split, as evaluate, and with
    ``examples`` every example's float32 task loss, (members, examples) (else None).

    Batches of up to the engine's ``eval_batch`` shared examples, members a few at a time: on CPU the
    activations of one step (PACK_EVAL_FLOATS_CPU) then stay in the last-level cache, so the
    loss is computed from cache rather than from memory."""
    size, device = params[0].shape[0], params[0].device
    batch = min(engine.eval_batch, len(x))
    budget = PACK_EVAL_FLOATS_CPU if device.type == "cpu" else PACK_EVAL_FLOATS_GPU
    chunk = max(1, min(size, budget // (batch * engine.example_floats)))
    loss_sum = torch.zeros(size, dtype=torch.float64, device=device)
    correct = torch.zeros(size, dtype=torch.int64, device=device)
    per_example = torch.empty((size, len(x)) if examples else (0, 0), dtype=torch.float32, device=device)
    for start in range(0, len(x), batch):
        xb, yb = x[start : start + batch], y[start : start + batch]
        target = xb.flatten(1)
        for lo in range(0, size, chunk):
            hi = min(size, lo + chunk)
            out = engine.forward([p[lo:hi] for p in params], xb)
            if examples:  # as example_losses: each example's mean over its pixels
                per_example[lo:hi, start : start + len(xb)] = (
                    (out - target).pow(2).mean(-1) if reconstruction
                    else F.cross_entropy(out.flatten(0, 1), yb.repeat(hi - lo), reduction="none").view(hi - lo, -1))
            if reconstruction:
                diff = out.sub_(target).flatten(1)  # in place: no megabyte temporaries (see forward)
                loss_sum[lo:hi] += diff.mul_(diff).sum(1).double() / target.shape[1]  # vecdot's mul and sum
            else:
                losses = F.cross_entropy(out.flatten(0, 1), yb.repeat(hi - lo), reduction="none")
                loss_sum[lo:hi] += losses.view(hi - lo, -1).sum(1).double()
                correct[lo:hi] += (out.argmax(-1) == yb).sum(1)
    loss = (loss_sum / len(x)).tolist()
    return (loss, (None if reconstruction else (correct.double() / len(x)).tolist()),
            per_example.cpu().numpy() if examples else None)
