"""Batches and augmentation, for both kinds of data set: what a training loop iterates.

``batch_source`` gives TensorBatches for the in-memory Splits (harness.data.tensors) and
LoaderBatches for the image-folder ImageSplits (harness.data.folders); both hand out
float32 images on the device, a training epoch in an order drawn from the replication's
"data" seed, and every example of a split in order for evaluation. Training batches are
augmented on the device (``augment_batch``), by whole batches, from the replication's own
"augment" seed, so the loader's worker count never changes a result.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import sys
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor

from harness.data.folders import ImageSplits
from harness.data.names import DataError
from harness.data.tensors import Splits
from harness.study import Config, derive_seed

EVAL_BATCH = 1024  # evaluation batch: large for speed, bounded for memory


# ---------------------------------------------------------------------------- tensors


class TensorBatches:
    """Batches of in-memory Splits, already on the device: a training epoch in the order of
    one ``randperm`` of a generator on the data's device seeded ``data_seed``, evaluation
    in order by EVAL_BATCH. (LoaderBatches is the same for files.)"""

    def __init__(self, splits: Splits, batch_size: int, data_seed: int):
        self.splits, self.batch_size = splits, batch_size
        self.input_shape, self.n_classes = splits.input_shape, splits.n_classes
        self.generator = torch.Generator(device=splits.train_x.device).manual_seed(data_seed)

    def train_epoch(self):
        x, y = self.splits.train_x, self.splits.train_y
        order = torch.randperm(len(x), generator=self.generator, device=x.device)
        for start in range(0, len(x), self.batch_size):
            idx = order[start : start + self.batch_size]
            yield x[idx], y[idx]

    def eval(self, split: str):
        """Every example of "train" or "val", in order."""
        s = self.splits
        return eval_slices(*((s.train_x, s.train_y) if split == "train" else (s.val_x, s.val_y)))


def eval_slices(x: torch.Tensor, y: torch.Tensor):
    for start in range(0, len(x), EVAL_BATCH):
        yield x[start : start + EVAL_BATCH], y[start : start + EVAL_BATCH]


def batch_source(splits, config: Config, device: str):
    """TensorBatches for in-memory Splits, LoaderBatches for image-folder ImageSplits."""
    data_seed = derive_seed(config.seed, "data")
    if isinstance(splits, Splits):
        return TensorBatches(splits, config.train.batch_size, data_seed)
    eval_batch = min(EVAL_BATCH, max(config.train.batch_size, 64))  # full-size images: bounded memory
    return LoaderBatches(splits, config.train.batch_size, eval_batch, device, data_seed)


# ---------------------------------------------------------------------------- files


def _loader_context():
    """The start method of the DataLoader's workers: the platform's own, even where the
    process's default is another library's. A `harness run` worker is a joblib (loky)
    process whose default start method is "loky", and a plain multiprocessing Process
    started through it fails ("'Process' object has no attribute 'env'")."""
    method = multiprocessing.get_start_method(allow_none=True)
    if method in (None, "fork", "spawn", "forkserver"):
        return None
    return multiprocessing.get_context("fork" if sys.platform.startswith("linux") else "spawn")


def loader_workers() -> int:
    """DataLoader worker processes: $HARNESS_LOADER_WORKERS, else up to 8 of this process's
    cores; 0 in a daemonic process (a Dask worker), which may not have children."""
    if multiprocessing.current_process().daemon:
        return 0
    value = os.environ.get("HARNESS_LOADER_WORKERS")
    if value is not None:
        try:
            return max(0, int(value))
        except ValueError:
            raise DataError(f"HARNESS_LOADER_WORKERS must be an integer, got {value!r}") from None
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    return min(8, max(0, cores - 1))


class _Order(torch.utils.data.Sampler):
    """The indices of the current epoch, set by the owner before each pass."""

    def __init__(self, n: int):
        self.order = list(range(n))

    def __iter__(self):
        return iter(self.order)

    def __len__(self) -> int:
        return len(self.order)


class LoaderBatches:
    """Batches of an ImageSplits on ``device``: images float32 (N, 3, S, S) in [0, 1],
    targets int64 (N,) classes or float32 (N, 1, S, S) masks.

    The training order of every epoch is a ``randperm`` of a CPU generator seeded
    ``data_seed``; a last training batch of a single image is dropped (BatchNorm cannot
    train on it). One DataLoader per split keeps its workers between epochs.
    """

    def __init__(self, splits: ImageSplits, batch_size: int, eval_batch: int, device, data_seed: int, workers: int | None = None):
        self.splits, self.device = splits, torch.device(device)
        self.input_shape, self.n_classes = splits.input_shape, splits.n_classes
        self.n_train, self.n_val = len(splits.train), len(splits.val)
        self.generator = torch.Generator().manual_seed(data_seed)
        workers = loader_workers() if workers is None else workers
        self._train_order = _Order(self.n_train)
        self._loaders = {
            "train": self._loader(splits.train, batch_size, self._train_order, workers, persistent=True),
            "train_eval": self._loader(splits.train, eval_batch, None, workers, persistent=False),  # once, at the end
            "val": self._loader(splits.val, eval_batch, None, workers, persistent=True),
        }

    def _loader(self, dataset, batch_size: int, sampler, workers: int, persistent: bool):
        return torch.utils.data.DataLoader(
            dataset, batch_size=batch_size, sampler=sampler, shuffle=False, num_workers=workers,
            pin_memory=self.device.type == "cuda", persistent_workers=persistent and workers > 0,
            prefetch_factor=4 if workers > 0 else None, multiprocessing_context=_loader_context() if workers > 0 else None,
        )

    def _to_device(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        x = x.to(self.device, non_blocking=True).to(torch.float32).div_(255.0)
        y = y.to(self.device, non_blocking=True)
        y = y.to(torch.float32) if self.splits.task == "segmentation" else y.to(torch.int64)
        return x, y

    def train_epoch(self) -> Iterator[tuple[Tensor, Tensor]]:
        self._train_order.order = torch.randperm(self.n_train, generator=self.generator).tolist()
        for x, y in self._loaders["train"]:
            if len(x) == 1 and self.n_train > 1:
                continue
            yield self._to_device(x, y)

    def eval(self, split: str) -> Iterator[tuple[Tensor, Tensor]]:
        """Every example of "train" or "val" in order, unaugmented."""
        for x, y in self._loaders["train_eval" if split == "train" else split]:
            yield self._to_device(x, y)


# ---------------------------------------------------------------------------- augmentation


def augment_batch(x: Tensor, y: Tensor | None, generator: torch.Generator, rotation: float, zoom: float) -> tuple[Tensor, Tensor | None]:
    """Keras' RandomFlip("horizontal") + RandomRotation(rotation) + RandomZoom(zoom) on a
    whole batch, one independent draw per image: flip with probability 1/2, angle uniform
    in ±rotation·2π, scale uniform in [1 - zoom, 1 + zoom] (> 1 zooms out), pixels outside
    the image reflected (Keras' fill_mode "reflect"). x: float (N, C, H, W); y: a mask
    (N, 1, H, W) moved with its image (nearest), or class labels left as they are.
    ``generator`` lives on x's device."""
    n = x.shape[0]
    u = torch.rand(n, 3, generator=generator, device=x.device, dtype=torch.float32)
    flip = torch.where(u[:, 0] < 0.5, -1.0, 1.0)
    angle = (2 * u[:, 1] - 1) * rotation * 2 * math.pi
    scale = 1 + (2 * u[:, 2] - 1) * zoom
    cos, sin = torch.cos(angle) * scale, torch.sin(angle) * scale
    zero = torch.zeros_like(cos)
    # output pixel (u, v) samples the input at R(angle) S(scale) F(flip) (u, v)
    theta = torch.stack([torch.stack([cos * flip, -sin, zero], 1), torch.stack([sin * flip, cos, zero], 1)], 1)
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    if y is not None and y.ndim == 4:
        y = F.grid_sample(y.to(x.dtype), grid, mode="nearest", padding_mode="reflection", align_corners=False)
    return x, y
