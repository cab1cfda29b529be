"""harness.data on real MNIST, on CIFAR-10 files generated in its real on-disk format, and
on scikit-learn's digits."""

from __future__ import annotations

import collections
import os
import pickle
import re
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch

from harness import data
from harness.data import DataError, Splits, data_dir_from_env, load_splits

MNIST_ROOT = Path(os.environ.get("HARNESS_DATA_DIR") or "/work/shared/data")
needs_mnist = pytest.mark.skipif(
    not (MNIST_ROOT / "MNIST" / "raw" / "train-images-idx3-ubyte").exists(),
    reason=f"real MNIST not found under {MNIST_ROOT}/MNIST/raw (set HARNESS_DATA_DIR)",
)


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Every download attempt fails at once, as it does offline: the tests neither hang on
    a firewall nor pass by quietly downloading on a machine that has network."""

    def refuse(*args, **kwargs):
        raise urllib.error.URLError("network disabled in tests")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)


def _listing(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(root.rglob("*"))}


def _row_counts(x: torch.Tensor, y: torch.Tensor) -> collections.Counter:
    flat = (x.flatten(1) * 255).round().to(torch.uint8).numpy()
    return collections.Counter((bytes(row), int(label)) for row, label in zip(flat, y.tolist()))


# --- MNIST ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mnist() -> Splits:
    if not (MNIST_ROOT / "MNIST" / "raw" / "train-images-idx3-ubyte").exists():
        pytest.skip(f"real MNIST not found under {MNIST_ROOT}/MNIST/raw (set HARNESS_DATA_DIR)")
    return load_splits("mnist", MNIST_ROOT)


@needs_mnist
def test_mnist_shapes_dtypes_and_ranges(mnist):
    assert mnist.train_x.shape == (60000, 1, 28, 28)
    assert mnist.val_x.shape == (10000, 1, 28, 28)
    assert mnist.train_y.shape == (60000,) and mnist.val_y.shape == (10000,)
    assert mnist.train_x.dtype == torch.float32 and mnist.train_y.dtype == torch.int64
    assert mnist.train_x.device.type == "cpu"
    assert mnist.train_x.min() == 0.0 and mnist.train_x.max() == 1.0
    assert mnist.val_x.min() == 0.0 and mnist.val_x.max() == 1.0
    assert sorted(mnist.train_y.unique().tolist()) == list(range(10))
    assert sorted(mnist.val_y.unique().tolist()) == list(range(10))
    assert mnist.n_classes == 10 and mnist.input_shape == (1, 28, 28)
    # Known facts of the real files: first training label is 5, first test label is 7.
    assert mnist.train_y[0] == 5 and mnist.val_y[0] == 7
    # Values are k/255 exactly, not resampled or normalised.
    k = mnist.train_x[:100] * 255
    assert torch.equal(k, k.round())


@needs_mnist
def test_mnist_subsets_are_nested_rows_of_the_full_splits(mnist):
    small = load_splits("mnist", MNIST_ROOT, n_train=100, n_val=30)
    larger = load_splits("mnist", MNIST_ROOT, n_train=200, n_val=50)
    assert small.train_x.shape == (100, 1, 28, 28) and small.val_x.shape == (30, 1, 28, 28)
    assert small.train_y.shape == (100,) and small.val_y.shape == (30,)
    # The same fixed permutation: the first n of a larger subset are the smaller subset.
    assert torch.equal(larger.train_x[:100], small.train_x) and torch.equal(larger.val_y[:30], small.val_y)
    perm = torch.randperm(60000, generator=torch.Generator().manual_seed(0))[:100]
    assert torch.equal(small.train_x, mnist.train_x[perm]) and torch.equal(small.train_y, mnist.train_y[perm])
    again = load_splits("mnist", MNIST_ROOT, n_train=100, n_val=30)
    assert torch.equal(again.train_x, small.train_x) and torch.equal(again.val_y, small.val_y)


@needs_mnist
def test_mnist_holdout_partitions_the_training_set(mnist):
    held = load_splits("mnist", MNIST_ROOT, val_split="holdout:0.1")
    assert held.train_x.shape == (54000, 1, 28, 28) and held.val_x.shape == (6000, 1, 28, 28)
    assert held.train_y.shape == (54000,) and held.val_y.shape == (6000,)
    # train + val is exactly the official training set (as a multiset of image/label
    # rows), so the two are disjoint and the test split is not used.
    together = _row_counts(held.train_x, held.train_y) + _row_counts(held.val_x, held.val_y)
    assert together == _row_counts(mnist.train_x, mnist.train_y)
    assert sorted(held.val_y.unique().tolist()) == list(range(10))
    again = load_splits("mnist", MNIST_ROOT, val_split="holdout:0.1", n_train=50, n_val=20)
    assert again.train_x.shape[0] == 50 and again.val_x.shape[0] == 20
    assert torch.equal(again.val_x, held.val_x[torch.randperm(6000, generator=torch.Generator().manual_seed(0))[:20]])


@needs_mnist
def test_loading_writes_nothing_under_the_data_dir():
    before = _listing(MNIST_ROOT)
    data._load_raw.cache_clear()  # force a real read of the files
    load_splits("mnist", MNIST_ROOT, n_train=10, n_val=10)
    load_splits("mnist", MNIST_ROOT, val_split="holdout:0.2", n_train=10, n_val=10)
    assert _listing(MNIST_ROOT) == before


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_splits_on_cuda_equal_those_on_cpu():
    splits = load_splits("digits", None, device="cuda", val_split="holdout:0.1", n_train=500, n_val=100)
    cpu = load_splits("digits", None, device="cpu", val_split="holdout:0.1", n_train=500, n_val=100)
    assert splits.train_x.is_cuda and splits.val_y.is_cuda
    assert torch.equal(splits.train_x.cpu(), cpu.train_x) and torch.equal(splits.val_y.cpu(), cpu.val_y)


# --- CIFAR-10 in its real on-disk format (files generated by conftest.cifar_dir) ---------

def test_generated_cifar_matches_the_official_reading_recipe(cifar_dir):
    root, written = cifar_dir
    with open(root / "cifar-10-batches-py" / "data_batch_1", "rb") as f:
        batch = pickle.load(f, encoding="bytes")  # the recipe on the CIFAR-10 web page
    assert batch[b"data"].dtype == np.uint8 and batch[b"data"].shape == (4, 3072)
    assert batch[b"labels"] == written["data_batch_1"][1]


def test_cifar10_pixels_round_trip_in_channel_order(cifar_dir):
    root, written = cifar_dir
    before = _listing(root)
    splits = load_splits("cifar10", root)
    assert splits.train_x.shape == (20, 3, 32, 32) and splits.val_x.shape == (6, 3, 32, 32)
    assert splits.train_x.dtype == torch.float32 and splits.train_y.dtype == torch.int64
    assert splits.n_classes == 10 and splits.input_shape == (3, 32, 32)

    rows = np.concatenate([written[f"data_batch_{i}"][0] for i in range(1, 6)])
    labels = sum((written[f"data_batch_{i}"][1] for i in range(1, 6)), [])
    expected = torch.from_numpy(rows).reshape(20, 3, 32, 32)  # [R plane, G plane, B plane]
    assert torch.equal((splits.train_x * 255).to(torch.uint8), expected)
    assert splits.train_y.tolist() == labels
    # One pixel by hand: image 3, green channel, row 5, column 7.
    assert splits.train_x[3, 1, 5, 7] * 255 == rows[3, 1024 + 5 * 32 + 7]
    test_rows, test_labels = written["test_batch"]
    assert torch.equal((splits.val_x * 255).to(torch.uint8), torch.from_numpy(test_rows).reshape(6, 3, 32, 32))
    assert splits.val_y.tolist() == test_labels
    assert _listing(root) == before


def test_cifar10_corrupt_file_is_a_data_error(cifar_dir):
    root, _ = cifar_dir
    path = root / "cifar-10-batches-py" / "data_batch_3"
    path.write_bytes(path.read_bytes()[:-1] + b"\x00")
    with pytest.raises(DataError, match="cifar-10-batches-py"):
        load_splits("cifar10", root)


# --- digits ---------------------------------------------------------------------------


def test_digits_shapes_range_and_stratified_split():
    splits = load_splits("digits", None)
    assert splits.train_x.shape == (1437, 1, 8, 8) and splits.val_x.shape == (360, 1, 8, 8)
    assert splits.train_y.shape == (1437,) and splits.val_y.shape == (360,)
    assert splits.n_classes == 10 and splits.input_shape == (1, 8, 8)
    assert splits.train_x.min() == 0.0 and splits.train_x.max() == 1.0
    sixteenths = splits.train_x * 16
    assert torch.equal(sixteenths, sixteenths.round())
    # Stratified: every class is 20% of its examples in the validation split, +-1.
    all_y = torch.cat([splits.train_y, splits.val_y])
    for c in range(10):
        assert abs(int((splits.val_y == c).sum()) - 0.2 * int((all_y == c).sum())) <= 1


def test_digits_is_deterministic_and_not_aliased_to_the_cache():
    first = load_splits("digits", None, n_train=100)
    first.train_x.fill_(7.0)  # a caller scribbling on its tensors must not reach the cache
    first.train_y.fill_(7)
    first.val_y.fill_(7)
    second = load_splits("digits", None, n_train=100)  # served from the cache
    assert second.train_x.max() <= 1.0 and (second.train_y != 7).any() and (second.val_y != 7).any()
    data._load_raw.cache_clear()
    third = load_splits("digits", None, n_train=100)  # decoded afresh
    assert torch.equal(second.train_x, third.train_x) and torch.equal(second.train_y, third.train_y)
    assert torch.equal(second.val_x, third.val_x) and torch.equal(second.val_y, third.val_y)


def test_digits_holdout_sizes():
    splits = load_splits("digits", None, val_split="holdout:0.25")
    assert splits.train_x.shape[0] == 1078 and splits.val_x.shape[0] == 359  # round(0.25 * 1437)


# --- errors and the data directory ----------------------------------------------------


@pytest.mark.parametrize("name,folder", [("mnist", "MNIST/raw"), ("fashion_mnist", "FashionMNIST/raw"),
                                         ("cifar10", "cifar-10-batches-py")])
def test_missing_data_without_network_names_the_path(tmp_path, name, folder):
    with pytest.raises(DataError) as err:
        load_splits(name, tmp_path)
    message = str(err.value)
    assert str(tmp_path / folder) in message and "\n" not in message
    assert "--data-dir" in message
    assert list(tmp_path.iterdir()) == []  # the folders torchvision made for the download are gone
    (tmp_path / "mine").mkdir()  # a data directory yet to be made, under a folder of the user's
    with pytest.raises(DataError):
        load_splits(name, tmp_path / "mine" / "data")
    assert [p.name for p in tmp_path.rglob("*")] == ["mine"]


def test_missing_data_dir_comes_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_DATA_DIR", str(tmp_path))
    with pytest.raises(DataError, match=re.escape(str(tmp_path / "MNIST" / "raw"))):
        load_splits("mnist", None)


def test_data_dir_precedence(monkeypatch):
    monkeypatch.delenv("HARNESS_DATA_DIR", raising=False)
    assert data_dir_from_env() == Path("data")
    monkeypatch.setenv("HARNESS_DATA_DIR", "/env/dir")
    assert data_dir_from_env() == Path("/env/dir")
    assert data_dir_from_env("/cli/dir") == Path("/cli/dir")


def test_unknown_dataset_suggests_the_closest_name():
    with pytest.raises(DataError, match="did you mean 'mnist'") as err:
        load_splits("mnsit", None)
    assert "cifar10" in str(err.value)
    with pytest.raises(DataError, match="did you mean 'cifar10'"):
        load_splits("CIFAR-10", None)


@pytest.mark.parametrize("val_split", ["holdout", "holdout:", "holdout:x", "holdout:0", "holdout:1.0",
                                       "holdout:-0.1", "heldout:0.1", "val", ""])
def test_malformed_val_split(val_split):
    with pytest.raises(DataError, match="val_split"):
        load_splits("digits", None, val_split=val_split)


def test_bad_subset_sizes():
    with pytest.raises(DataError, match="n_train"):
        load_splits("digits", None, n_train=-1)
    with pytest.raises(DataError, match="n_val=361 exceeds the 360"):
        load_splits("digits", None, n_val=361)
    with pytest.raises(DataError, match="holds out"):
        load_splits("digits", None, val_split="holdout:0.0001")


def test_data_error_is_a_user_error():
    from harness.errors import UserError

    assert issubclass(DataError, UserError)


def _idx(path: Path, magic: int, array: np.ndarray) -> None:
    """An IDX file as MNIST ships it: big-endian magic, the dimensions, the bytes."""
    dims = np.array(array.shape, dtype=">i4").tobytes()
    path.write_bytes(np.array([magic], dtype=">i4").tobytes() + dims + array.astype(np.uint8).tobytes())


def _fake_mnist(root: Path, n_train_labels: int = 20) -> Path:
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for prefix, n, n_labels in (("train", 20, n_train_labels), ("t10k", 10, 10)):
        _idx(raw / f"{prefix}-images-idx3-ubyte", 2051, np.zeros((n, 28, 28)))
        _idx(raw / f"{prefix}-labels-idx1-ubyte", 2049, np.arange(n_labels) % 10)
    return raw


def test_mnist_files_that_disagree_or_are_corrupt_are_one_line(tmp_path):
    """Image and label counts that differ (20 images, 19 labels), a bad header magic, and a
    truncated file: each a DataError saying the files are corrupt or truncated."""
    _fake_mnist(tmp_path)
    assert load_splits("mnist", tmp_path).train_x.shape[0] == 20  # the well-formed fake loads
    data._load_raw.cache_clear()
    mismatch = tmp_path / "mismatch"
    _fake_mnist(mismatch, n_train_labels=19)
    with pytest.raises(DataError, match="20 images but 19 labels.*corrupt or truncated"):
        load_splits("mnist", mismatch)
    bad = tmp_path / "bad"
    raw = _fake_mnist(bad)
    header = raw / "train-images-idx3-ubyte"
    header.write_bytes(b"\x00\x00\x09\x99" + header.read_bytes()[4:])
    with pytest.raises(DataError, match="corrupt or truncated") as err:
        load_splits("mnist", bad)
    assert "\n" not in str(err.value)
    cut = tmp_path / "cut"
    raw = _fake_mnist(cut)
    images = raw / "train-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:-100])
    with pytest.raises(DataError, match="corrupt or truncated"):
        load_splits("mnist", cut)
    data._load_raw.cache_clear()
