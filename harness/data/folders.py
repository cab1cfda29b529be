"""The image-folder data sets, too large for the device (Imagenette, COCO masks): indexed
here, decoded from their files on the fly by a DataLoader (harness.data.batches).

Each item is decoded and resized to ``image_size`` x ``image_size`` in a DataLoader worker
and travels to the device as uint8.

Layouts under the data directory (what the data sets ship as; nothing is downloaded):

* ``imagenette2/train/<wnid>/*.JPEG`` and ``imagenette2/val/<wnid>/*.JPEG`` (also
  ``imagenette2-320``, ``imagenette2-160``): read with torchvision's ``ImageFolder``;
  val_split "test" is the official val folder.
* ``coco/annotations/instances_{train,val}2017.json`` with ``coco/{train,val}2017/*.jpg``:
  one binary foreground mask per image, the union of all its instance masks (polygons
  and RLE, crowd regions included) decoded with pycocotools; images without any
  annotation are left out. val_split "test" is val2017 (5,000 images); the paper's
  60k/10k is ``val_split=holdout:0.1 n_train=60000 n_val=10000`` of train2017.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from torch import Tensor

from harness.data.names import DATASETS, DataError, DataSet, _check_count, _parse_val_split, data_dir_from_env

COCO_YEAR = "2017"


@dataclass(frozen=True)
class FolderSet(DataSet):
    """An image-folder data set: its ``folder`` under the data directory, the ``side`` of
    its square images unless data.image_size says otherwise, and whether its targets are
    COCO foreground ``masks`` (segmentation) rather than ImageFolder classes."""

    streamed: ClassVar[bool] = True
    folder: str
    side: int
    masks: bool = False

    def load(self, name, data_dir, device, val_split, n_train, n_val, image_size, resize):
        # no device here: the files are only indexed; LoaderBatches moves decoded batches there
        root = Path(data_dir) if data_dir is not None else data_dir_from_env()
        return load_image_splits(name, root, val_split, n_train, n_val, image_size, resize)


DATASETS.register("imagenette", FolderSet("imagenette2", 224))
DATASETS.register("imagenette_320", FolderSet("imagenette2-320", 224))
DATASETS.register("imagenette_160", FolderSet("imagenette2-160", 224))
DATASETS.register("coco", FolderSet("coco", 256, masks=True))


@dataclass(frozen=True, eq=False)
class ImageSplits:
    """Training and validation sets read from files.

    Items of ``train`` / ``val``: (image uint8 (3, S, S), target), target an int class
    (classification) or a uint8 mask (1, S, S) of 0/1 (segmentation). ``n_classes`` is the
    number of classes, 1 for binary masks (one logit per pixel).
    """

    train: torch.utils.data.Dataset
    val: torch.utils.data.Dataset
    n_classes: int
    input_shape: tuple[int, int, int]
    task: str  # "classification" | "segmentation"


def load_image_splits(
    name: str, root: Path, val_split: str = "test", n_train: int = 0, n_val: int = 0,
    image_size: int = 0, resize: str = "squash",
) -> ImageSplits:
    """Index the files of image data set ``name`` under ``root`` (nothing is decoded yet).

    val_split, n_train, n_val: as harness.data.load_splits (same seed-0 permutations).
    image_size: side of the square images (0 = the data set's standard); resize:
    "squash" (to S x S, ignoring the aspect ratio, as Keras' image_dataset_from_directory)
    or "crop" (shorter side to S, then the centre S x S).
    """
    _check_count("n_train", n_train)
    _check_count("n_val", n_val)
    _check_count("image_size", image_size)
    if resize not in ("squash", "crop"):
        raise DataError(f"resize must be 'squash' or 'crop', got {resize!r}")
    holdout = _parse_val_split(val_split)
    spec = DATASETS[name]
    size = image_size or spec.side
    path = Path(root).expanduser().resolve() / spec.folder
    if spec.masks:
        train_items, val_items = _coco_index(path, "train"), None if holdout else _coco_index(path, "val")
        make = functools.partial(CocoMasks, size=size, resize=resize)
        n_classes, task = 1, "segmentation"
    else:
        train_items, val_items = _folder_index(path, "train"), None if holdout else _folder_index(path, "val")
        if val_items is not None and val_items[1] != train_items[1]:
            raise DataError(f"{path}/train and {path}/val hold different class folders")
        make = functools.partial(FolderImages, size=size, resize=resize)
        n_classes, task = len(train_items[1]), "classification"
        train_items, val_items = train_items[0], val_items[0] if val_items else None

    n = len(train_items)
    train_idx = list(range(n))
    if holdout is None:
        val_source, val_idx = val_items, list(range(len(val_items)))
    else:
        n_held = round(holdout * n)
        if not 1 <= n_held < n:
            raise DataError(f"val_split {val_split!r} holds out {n_held} of {n} training images of {name}; need at least 1 on each side")
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(0)).tolist()
        val_source, val_idx, train_idx = train_items, perm[:n_held], perm[n_held:]
    train_idx = _first_n(train_idx, n_train, "n_train", name)
    val_idx = _first_n(val_idx, n_val, "n_val", name)
    return ImageSplits(
        train=make([train_items[i] for i in train_idx]),
        val=make([val_source[i] for i in val_idx]),
        n_classes=n_classes,
        input_shape=(3, size, size),
        task=task,
    )


def _first_n(indices: list[int], n: int, label: str, name: str) -> list[int]:
    """The first n after a fixed seed-0 permutation, as harness.data.tensors does for tensors."""
    if n == 0:
        return indices
    if n > len(indices):
        raise DataError(f"{label}={n} exceeds the {len(indices)} images of this split of {name}")
    keep = torch.randperm(len(indices), generator=torch.Generator().manual_seed(0))[:n].tolist()
    return [indices[i] for i in keep]


# ---------------------------------------------------------------------------- indexes


@functools.lru_cache(maxsize=8)
def _folder_index(path: Path, split: str) -> tuple[list[tuple[str, int]], tuple[str, ...]]:
    """([(file, class index)], class names) of an ImageFolder layout, cached per process."""
    from torchvision.datasets import ImageFolder

    where = path / split
    if not where.is_dir():
        raise DataError(f"no image folder at {where} (expected {path.name}/{split}/<class>/<image>); put the data set there or pass --data-dir")
    try:
        folder = ImageFolder(str(where))
    except (FileNotFoundError, RuntimeError) as err:
        raise DataError(f"{where}: {err}") from None
    return list(folder.samples), tuple(folder.classes)


@functools.lru_cache(maxsize=4)
def _coco_index(path: Path, split: str) -> list[tuple[str, int, int, list]]:
    """[(image file, height, width, [segmentations])] of the annotated images of a COCO
    instances file, sorted by image id; cached per process."""
    annotations = path / "annotations" / f"instances_{split}{COCO_YEAR}.json"
    images = path / f"{split}{COCO_YEAR}"
    if not annotations.is_file() or not images.is_dir():
        raise DataError(f"COCO {split}{COCO_YEAR} not found: expected {annotations} and {images}/; put the data set there or pass --data-dir")
    try:
        with open(annotations) as f:
            raw = json.load(f)
        segs: dict[int, list] = {}
        for ann in raw["annotations"]:
            segs.setdefault(ann["image_id"], []).append(ann["segmentation"])
        items = [
            (str(images / img["file_name"]), int(img["height"]), int(img["width"]), segs[img["id"]])
            for img in sorted(raw["images"], key=lambda img: img["id"])
            if img["id"] in segs
        ]
    except (ValueError, KeyError, TypeError) as err:
        raise DataError(f"{annotations} is not a COCO instances file: {type(err).__name__}: {err}") from None
    if not items:
        raise DataError(f"{annotations} has no annotated image")
    return items


# ---------------------------------------------------------------------------- datasets


def _fit(image, size: int, resize: str, resample):
    """A PIL image to size x size: squashed, or shorter side to size then centre-cropped."""
    if resize == "squash":
        return image.resize((size, size), resample)
    w, h = image.size
    scale = size / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    image = image.resize((nw, nh), resample)
    left, top = (nw - size) // 2, (nh - size) // 2
    return image.crop((left, top, left + size, top + size))


def _open_rgb(path: str, size: int):
    from PIL import Image

    image = Image.open(path)
    image.draft("RGB", (size, size))  # JPEG: decode at the smallest scale still >= size
    return image.convert("RGB")


def _to_chw(image) -> Tensor:
    return torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1).contiguous()


class FolderImages(torch.utils.data.Dataset):
    """(file, class) pairs -> (uint8 (3, S, S), class)."""

    def __init__(self, items: list[tuple[str, int]], size: int, resize: str):
        self.items, self.size, self.resize = items, size, resize

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        from PIL import Image

        path, label = self.items[i]
        return _to_chw(_fit(_open_rgb(path, self.size), self.size, self.resize, Image.BILINEAR)), label


class CocoMasks(torch.utils.data.Dataset):
    """COCO images -> (uint8 (3, S, S), uint8 (1, S, S) foreground mask of 0/1)."""

    def __init__(self, items: list[tuple[str, int, int, list]], size: int, resize: str):
        self.items, self.size, self.resize = items, size, resize

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        from PIL import Image

        path, h, w, segs = self.items[i]
        image = _fit(_open_rgb(path, self.size), self.size, self.resize, Image.BILINEAR)
        mask = Image.fromarray(foreground_mask(segs, h, w) * 255)
        mask = np.asarray(_fit(mask, self.size, self.resize, Image.NEAREST)) > 127
        return _to_chw(image), torch.from_numpy(mask.astype(np.uint8))[None]


def foreground_mask(segmentations: list, height: int, width: int) -> np.ndarray:
    """Union of COCO segmentations (polygon lists, RLE dicts) as a uint8 (height, width) 0/1 mask."""
    from pycocotools import mask as mask_utils

    out = np.zeros((height, width), dtype=np.uint8)
    for seg in segmentations:
        if isinstance(seg, list):  # polygons [[x1, y1, x2, y2, ...], ...]
            polygons = [p for p in seg if len(p) >= 6]
            if not polygons:
                continue
            rle = mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))
        elif isinstance(seg.get("counts"), list):  # uncompressed RLE (crowd regions)
            rle = mask_utils.frPyObjects(seg, height, width)
        else:
            rle = seg
        out |= mask_utils.decode(rle).astype(np.uint8)
    return out
