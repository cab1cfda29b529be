"""Shared fixtures: CIFAR-10 generated in its real on-disk format."""

from __future__ import annotations

import hashlib
import pickle
from pathlib import Path

import numpy as np
import pytest
import torchvision.datasets


CIFAR_LABEL_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _py2_pickle(obj: dict, py2_strings: list[str]) -> bytes:
    """Pickle like the Python 2 pickles of the CIFAR-10 release: the given strings become
    py2 `str` (SHORT_BINSTRING), which load as bytes with encoding='bytes' (b'data', as in
    the official recipe) and as str with encoding='latin1' (what torchvision uses)."""
    payload = pickle.dumps(obj, protocol=2)
    for s in py2_strings:
        raw = s.encode("latin1")
        unicode_op = b"X" + len(raw).to_bytes(4, "little") + raw  # protocol 2's BINUNICODE
        assert payload.count(unicode_op) == 1, s
        payload = payload.replace(unicode_op, b"U" + bytes([len(raw)]) + raw)
    return payload


def _write_cifar(root: Path, n_per_batch: int = 4, n_test: int = 6) -> dict[str, tuple[np.ndarray, list[int]]]:
    """Write cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta} with random
    uint8 rows (N, 3072) laid out as CIFAR's: 1024 red, 1024 green, 1024 blue, each a
    row-major 32x32 image. Returns {file: (rows, labels)}."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    written = {}
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in names:
        n = n_test if name == "test_batch" else n_per_batch
        rows = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, size=n)]
        batch = {"batch_label": f"{name} of 6", "labels": labels, "data": rows,
                 "filenames": [f"img_{name}_{i}.png" for i in range(n)]}
        strings = ["batch_label", f"{name} of 6", "labels", "data", "filenames"]
        (folder / name).write_bytes(_py2_pickle(batch, strings))
        written[name] = (rows, labels)
    meta = {"num_cases_per_batch": n_per_batch, "label_names": CIFAR_LABEL_NAMES, "num_vis": 3072}
    (folder / "batches.meta").write_bytes(_py2_pickle(meta, list(meta) + CIFAR_LABEL_NAMES))
    return written


@pytest.fixture
def cifar_dir(tmp_path, monkeypatch):
    """Generated CIFAR-10 files that the unmodified torchvision.datasets.CIFAR10 accepts.

    The class pins the md5 of each released file in its class attributes train_list,
    test_list and meta; we point those checksums at the generated files for the duration
    of the test. The production path (harness.data) stays exactly what runs on real data
    and torchvision's integrity check still runs; only the expected digests change.
    Subclassing to skip the check would instead test a class the harness never uses."""
    written = _write_cifar(tmp_path)
    folder = tmp_path / "cifar-10-batches-py"

    def md5(name: str) -> str:
        return hashlib.md5((folder / name).read_bytes()).hexdigest()

    cls = torchvision.datasets.CIFAR10
    monkeypatch.setattr(cls, "train_list", [[name, md5(name)] for name, _ in cls.train_list])
    monkeypatch.setattr(cls, "test_list", [[name, md5(name)] for name, _ in cls.test_list])
    monkeypatch.setattr(cls, "meta", {**cls.meta, "md5": md5(cls.meta["filename"])})
    return tmp_path, written
