"""The evaluation contract: the task loss of each task, a model's loss and accuracy (IoU for
segmentation) over a split, each example's float32 loss for the Keras-style monitor, and
a replication's final metrics."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from harness.data import _slices
from harness.entropy import entropy_stats
from harness.study import Config


def task_loss(task: str, seg_loss: str = "mse"):
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
    result = evaluate_batches(model, _slices(x, y), task, seg_loss)
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
