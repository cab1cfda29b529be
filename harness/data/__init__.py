"""Data sets by name, and the batches a training loop reads from them: the public API.

The package, bottom up (no module imports one above it):

* ``names``   the registry of data set names (DATASETS), DataError, the data directory,
              the shared argument checks and ``load_splits``, the front door by name;
* ``tensors`` the data sets that fit in memory (mnist, fashion_mnist, cifar10, digits),
              handed out as tensors on the device (Splits);
* ``folders`` the image-folder data sets (imagenette*, coco), indexed here and decoded
              from their files on the fly (ImageSplits);
* ``batches`` batching of either kind (TensorBatches, LoaderBatches, batch_source) and
              the on-device augmentation (augment_batch).

Importing the package imports all four, so the registry always holds every data set.
"""

from harness.data.names import DATASETS, DataError, DataSet, data_dir_from_env, dataset, load_splits, splits_for, streamed_names
from harness.data.tensors import Splits, TensorSet, _download_timeout, _load_raw  # noqa: F401 (private: harness.profile, tests)
from harness.data.folders import COCO_YEAR, FolderSet, ImageSplits, foreground_mask, load_image_splits
from harness.data.batches import EVAL_BATCH, LoaderBatches, TensorBatches, eval_slices, augment_batch, batch_source, loader_workers

# The image-folder data sets, read from files by a DataLoader rather than held as tensors
# (harness.training.pack and harness.perf.bench train only the others). Taken once both kinds have
# registered above.
IMAGE_DATASETS: tuple[str, ...] = streamed_names()

__all__ = [
    "DATASETS", "IMAGE_DATASETS", "DataError", "DataSet", "data_dir_from_env", "dataset", "load_splits", "splits_for",
    "streamed_names", "Splits", "TensorSet", "COCO_YEAR", "FolderSet", "ImageSplits", "foreground_mask",
    "load_image_splits", "EVAL_BATCH", "LoaderBatches", "TensorBatches", "augment_batch", "batch_source",
    "loader_workers",
]
