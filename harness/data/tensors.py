"""The data sets that fit in memory (mnist, fashion_mnist, cifar10, digits), decoded once
per process and handed out as tensors on the device.

There is no DataLoader for them: the decoded uint8 images are cached on the CPU per
process (a worker training many replications reads the files once) and each load moves
them to the device and scales them to float32 in [0, 1] there.

Files come from torchvision's own dataset classes under a data directory (`--data-dir`,
else `$HARNESS_DATA_DIR`, else `./data`). Nothing is downloaded when the files are already
there; a data set that is missing and cannot be downloaded is a one-line `DataError`
naming the path that was searched.
"""

from __future__ import annotations

import contextlib
import functools
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Iterator, NamedTuple

import torch
from torch import Tensor

from harness.data.names import DATASETS, DataError, DataSet, _check_count, _parse_val_split, data_dir_from_env, streamed_names

# urllib waits forever by default; behind a firewall that drops packets a download
# attempt would hang for minutes per file and mirror instead of failing.
_DOWNLOAD_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class TensorSet(DataSet):
    """An in-memory data set: read by torchvision's class ``torchvision`` from ``folder``
    under the data directory (what torchvision itself uses, so a user's existing download
    is found as is), or, with ``torchvision`` None, bundled with scikit-learn (digits)."""

    streamed: ClassVar[bool] = False
    torchvision: str | None = None
    folder: str | None = None

    def load(self, name, data_dir, device, val_split, n_train, n_val, image_size, resize):
        return _load_splits(self, name, data_dir, device, val_split, n_train, n_val, image_size)


DATASETS.register("mnist", TensorSet("MNIST", "MNIST/raw"))
DATASETS.register("fashion_mnist", TensorSet("FashionMNIST", "FashionMNIST/raw"))
DATASETS.register("cifar10", TensorSet("CIFAR10", "cifar-10-batches-py"))
DATASETS.register("digits", TensorSet())  # scikit-learn's, bundled with it


@dataclass(frozen=True, eq=False)  # eq=False: comparing tensors field by field is ambiguous
class Splits:
    """Training and validation tensors of one data set, already on the device.

    Images are float32 in [0, 1] of shape (N, C, H, W); labels are int64 of shape (N,).
    """

    train_x: Tensor
    train_y: Tensor
    val_x: Tensor
    val_y: Tensor
    n_classes: int
    input_shape: tuple[int, int, int]  # (C, H, W)


class _Raw(NamedTuple):
    """Decoded CPU tensors of a data set as stored: images uint8 (N, C, H, W)."""

    train_x: Tensor
    train_y: Tensor
    test_x: Tensor
    test_y: Tensor
    scale: float  # divide the stored integers by this to get [0, 1]
    n_classes: int


def _load_splits(spec: TensorSet, name: str, data_dir: str | os.PathLike | None, device: str | torch.device,
                 val_split: str, n_train: int, n_val: int, image_size: int) -> Splits:
    """harness.data.load_splits for an in-memory data set."""
    if image_size:
        raise DataError(f"data.image_size applies to the image-folder data sets ({', '.join(streamed_names())}), not {name}")
    _check_count("n_train", n_train)
    _check_count("n_val", n_val)
    holdout = _parse_val_split(val_split)

    if spec.torchvision is None:
        raw = _load_raw(name, None)  # bundled with scikit-learn: no files to look for
    else:
        root = Path(data_dir) if data_dir is not None else data_dir_from_env()
        raw = _load_raw(name, root.expanduser().resolve())

    if holdout is None:
        train_x, train_y, val_x, val_y = raw.train_x, raw.train_y, raw.test_x, raw.test_y
    else:
        n = len(raw.train_y)
        n_held = round(holdout * n)
        if not 1 <= n_held < n:
            raise DataError(f"val_split {val_split!r} holds out {n_held} of {n} training examples of {name}; need at least 1 on each side")
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(0))
        val_idx, train_idx = perm[:n_held], perm[n_held:]
        train_x, train_y = raw.train_x[train_idx], raw.train_y[train_idx]
        val_x, val_y = raw.train_x[val_idx], raw.train_y[val_idx]

    # Subset on the CPU so that only what is kept travels to the device.
    train_x, train_y = _first_n(train_x, train_y, n_train, "n_train", name)
    val_x, val_y = _first_n(val_x, val_y, n_val, "n_val", name)
    return Splits(
        train_x=_to_unit_float(train_x, raw.scale, device),
        train_y=train_y.to(device=device, dtype=torch.int64, copy=True),  # never alias the cache
        val_x=_to_unit_float(val_x, raw.scale, device),
        val_y=val_y.to(device=device, dtype=torch.int64, copy=True),
        n_classes=raw.n_classes,
        input_shape=tuple(raw.train_x.shape[1:]),
    )


def _first_n(x: Tensor, y: Tensor, n: int, label: str, name: str) -> tuple[Tensor, Tensor]:
    if n == 0:
        return x, y
    if n > len(y):
        raise DataError(f"{label}={n} exceeds the {len(y)} examples of this split of {name}")
    keep = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))[:n]
    return x[keep], y[keep]


def _to_unit_float(x: Tensor, scale: float, device: str | torch.device) -> Tensor:
    # Move the compact uint8 first, convert on the device (4x less to transfer).
    return x.to(device).to(torch.float32).div_(scale)


@functools.lru_cache(maxsize=4)
def _load_raw(name: str, root: Path | None) -> _Raw:
    if DATASETS[name].torchvision is None:
        return _load_digits()
    return _load_torchvision(name, root)


def _load_digits() -> _Raw:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = torch.from_numpy(digits.images).to(torch.uint8).unsqueeze(1)  # (1797, 1, 8, 8), 0..16
    y = torch.from_numpy(digits.target).to(torch.int64)
    # Digits has no official test split: a fixed stratified 80/20 split stands in for it.
    idx_train, idx_test = train_test_split(torch.arange(len(y)).numpy(), test_size=0.2, random_state=0, stratify=y.numpy())
    idx_train, idx_test = torch.from_numpy(idx_train), torch.from_numpy(idx_test)
    return _Raw(x[idx_train], y[idx_train], x[idx_test], y[idx_test], scale=16.0, n_classes=10)


def _load_torchvision(name: str, root: Path) -> _Raw:
    train, test = _open_torchvision(name, root, train=True), _open_torchvision(name, root, train=False)
    splits = [_as_tensors(train), _as_tensors(test)]
    for split, (x, y) in zip(("train", "test"), splits):
        if len(x) != len(y):  # torchvision reads each file on its own: a pair that disagrees passes
            raise DataError(f"{name}: the {split} files under {root / DATASETS[name].folder} hold {len(x)} images "
                            f"but {len(y)} labels: they are corrupt or truncated; replace them or pass --data-dir")
    return _Raw(*splits[0], *splits[1], scale=255.0, n_classes=len(train.classes))


def _open_torchvision(name: str, root: Path, train: bool):
    import torchvision.datasets

    spec = DATASETS[name]
    cls_name, folder = spec.torchvision, spec.folder
    cls = getattr(torchvision.datasets, cls_name)  # looked up per call, so tests can patch it
    present = (root / folder).is_dir() and any((root / folder).iterdir())
    try:
        return cls(str(root), train=train, download=False)
    except RuntimeError:
        pass  # files absent (or corrupt): try to fetch them
    except (AssertionError, ValueError, IndexError, EOFError) as exc:  # a bad header or size: torchvision's own checks
        raise DataError(f"{cls_name} files under {root / folder} are corrupt or truncated ({type(exc).__name__}); "
                        "replace them or pass --data-dir") from None
    # torchvision makes the folders before it fetches: a failed download would leave
    # them behind, empty (./data/MNIST/raw in the user's project, for a mistyped path).
    absent, path = [], root / folder
    while not path.exists():  # deepest first
        absent.append(path)
        path = path.parent
    try:
        with _download_timeout():
            return cls(str(root), train=train, download=True)
    except (OSError, RuntimeError, ValueError) as exc:  # URLError is an OSError
        for made in absent:  # only what is still empty
            with contextlib.suppress(OSError):
                made.rmdir()
        why = ("the folder is not writable" if isinstance(exc, PermissionError) else
               "the files there are corrupt or truncated" if present else "no network?")
        raise DataError(
            f"{cls_name} not found (or incomplete) under {root / folder} and it could not be downloaded "
            f"({why}); put the files there or pass --data-dir"
        ) from None


@contextlib.contextmanager
def _download_timeout() -> Iterator[None]:
    """Give torchvision's timeout-less urlopen a finite timeout, unless one is already set.
    (Also what harness.profile fetches pretrained weights under.)"""
    previous = socket.getdefaulttimeout()
    if previous is None:
        socket.setdefaulttimeout(_DOWNLOAD_TIMEOUT_S)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


def _as_tensors(ds) -> tuple[Tensor, Tensor]:
    """(images uint8 (N, C, H, W), labels int64 (N,)) straight from a torchvision dataset."""
    data = ds.data
    if isinstance(data, Tensor):  # MNIST family: uint8 (N, H, W)
        x = data.unsqueeze(1)
    else:  # CIFAR: numpy uint8 (N, H, W, C)
        x = torch.from_numpy(data).permute(0, 3, 1, 2)
    y = torch.as_tensor(ds.targets, dtype=torch.int64)
    return x.contiguous(), y
