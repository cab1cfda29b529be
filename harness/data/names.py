"""Data set names and what every loader shares: the one registry of data sets, DataError,
the data directory, the argument checks, and ``load_splits``, which looks a name up here
and hands over to the module that registered it.

This is the bottom of harness.data: it imports nothing of the package. The tensor data
sets (harness.data.tensors) and the image-folder ones (harness.data.folders) register
themselves in ``DATASETS`` when imported, so adding a data set is one ``register`` call
beside its loader, and every list of names a user sees comes from the registry.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import ClassVar

import torch

from harness.errors import UserError
from harness.registry import Registry, did_you_mean


class DataError(UserError):
    """A data problem the user can fix (unknown name, missing files, bad split); one line."""


class DataSet:
    """A registry entry: how one data set is loaded. Subclassed by the module that holds
    the data set (harness.data.tensors.TensorSet, harness.data.folders.FolderSet)."""

    # True: decoded from image files on the fly by a DataLoader (too large for the
    # device); False: held in memory as tensors on the device.
    streamed: ClassVar[bool]

    def load(self, name: str, data_dir, device, val_split: str, n_train: int, n_val: int, image_size: int, resize: str):
        """The splits of data set ``name``: arguments as ``load_splits``."""
        raise NotImplementedError


# In registration order, which is the order of every "known: ..." list a user sees:
# the tensor data sets first (harness.data imports tensors before folders).
DATASETS: Registry[DataSet] = Registry("data set")


def streamed_names() -> tuple[str, ...]:
    """The registered image-folder data sets, read from files by a DataLoader."""
    return tuple(name for name in DATASETS if DATASETS[name].streamed)


def data_dir_from_env(cli_value: str | os.PathLike | None = None) -> Path:
    """The data directory: the --data-dir value, else $HARNESS_DATA_DIR, else ./data."""
    value = cli_value or os.environ.get("HARNESS_DATA_DIR") or "data"
    return Path(value).expanduser()


def splits_for(config, data_dir: str | os.PathLike | None, device: str | torch.device = "cpu"):
    """The splits a replication's config (harness.study.Config) trains on."""
    entry = dataset(config.dataset)
    if hasattr(entry, "splits_of"):  # a study file's data set (harness.custom) reads the whole config
        return entry.splits_of(config, data_dir, device)
    data = config.data
    return load_splits(
        config.dataset,
        data_dir,
        device=device,
        val_split=data.val_split,
        n_train=data.n_train,
        n_val=data.n_val,
        image_size=data.image_size,
        resize=data.resize,
    )


def load_splits(
    name: str,
    data_dir: str | os.PathLike | None,
    device: str | torch.device = "cpu",
    val_split: str = "test",
    n_train: int = 0,
    n_val: int = 0,
    image_size: int = 0,
    resize: str = "squash",
):
    """Load data set `name` and return its training and validation splits on `device`.

    val_split: "test" uses the official test split as the validation set; "holdout:F"
    holds out a fraction F of the training set (fixed seed-0 permutation) and leaves the
    test split unused. n_train / n_val > 0 keep only the first n examples of each split
    after a fixed seed-0 permutation (0 keeps all).

    The in-memory data sets give a harness.data.Splits of tensors on `device`; for them
    `image_size` must be 0. The image-folder data sets (IMAGE_DATASETS) are not loaded but
    indexed: the result is a harness.data.ImageSplits, whose files a DataLoader decodes and
    resizes to `image_size` (0 = the data set's standard) by `resize` on the fly.
    """
    return dataset(name).load(name, data_dir, device, val_split, n_train, n_val, image_size, resize)


def dataset(name: str) -> DataSet:
    """The registry entry of ``name``; an unknown name is a DataError with the closest match
    (matched lower-cased, so "CIFAR-10" finds cifar10)."""
    if not isinstance(name, str) or name not in DATASETS:  # not a str: unhashable names too are unknown
        raise DataError(f"unknown dataset {name!r}{did_you_mean(str(name).lower(), DATASETS)}; known: {', '.join(DATASETS)}")
    return DATASETS[name]


def _check_count(label: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise DataError(f"{label} must be an integer >= 0 (0 = all), got {value!r}")


def _parse_val_split(val_split: str) -> float | None:
    """None for "test", else the held-out fraction of "holdout:F"."""
    if val_split == "test":
        return None
    kind, _, frac = str(val_split).partition(":")
    try:
        value = float(frac)
    except ValueError:
        value = float("nan")
    if kind != "holdout" or not 0.0 < value < 1.0:
        raise DataError(f"val_split must be 'test' or 'holdout:F' with 0 < F < 1 (e.g. 'holdout:0.1'), got {val_split!r}")
    return value
