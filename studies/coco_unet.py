"""E5 (Table 3): the original U-Net (Ronneberger et al.) segmenting COCO foreground, 256x256.

Binary masks are the union of each image's instance masks. The paper's 60k/10k images
are 60,000 training and 10,000 validation images held out of train2017 (the paper does
not say which). The entropy term acts on the paper's layers {19, 24, 29, 34, 39}: Keras
layer numbers, where the U-Net's convs stand at 2, 3, 6, 7, ..., 18, 19 (down path and
bottom), 23, 24, 28, 29, 33, 34, 38, 39 (up path) and 40 (output). They are the 10th,
12th, 14th, 16th and 18th conv in forward order: the bottom block's second conv and each
up block's second conv, the layers feeding the up path (the report lists the modules).
Early stopping: validation loss, min-delta 0.01, patience 10. Loss "MSE" as Table 3
names it (train.seg_loss), Adam at Keras' defaults (the paper gives no optimizer).

    harness run studies/coco_unet.py
    harness run studies/coco_unet.py seed=0:3
"""

from harness.analysis.spec import ProfilePlot, SummaryTable
from harness.study import Study

LAMBDAS = [0.0, 1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0]

study = Study(
    name="coco_unet",
    description="E5: U-Net on COCO 256x256 foreground masks, epochs / time / pixel accuracy / IoU vs λ2 (Table 3).",
    settings={
        "dataset": "coco",
        "model": "unet",
        "task": "segmentation",
        "net.padding": "same",
        "net.base_width": 64,
        "data.image_size": 256,
        "data.val_split": "holdout:0.1",
        "data.n_train": 60000,
        "data.n_val": 10000,
        "placement": "10,12,14,16,18",
        "train.seg_loss": "mse",
        "train.monitor": "task",
        "train.min_delta": 0.01,
        "train.patience": 10,
        "train.max_epochs": 200,
    },
    grid={
        "lam": LAMBDAS,
        "seed": [0],
    },
    analyses=[
        SummaryTable(("stop_epoch", "wall_s", "val_acc", "val_iou"), published="table3"),
        ProfilePlot(at={"lam": 0.0}, kind="conv"),
    ],
)
