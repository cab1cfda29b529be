"""E4 (Table 2, VGG rows): torchvision's VGG-16 trained from scratch on Imagenette.

Three training strategies as in the paper (plain; augmentation; augmentation + head
dropout 0.5) x the entropy term on conv layer [1] or [1, 2] x 7 λ2 = 42 replications per
seed. SGD, lr 0.01 divided by 10 after 10 epochs without a gain in validation accuracy;
early stopping after 25 such epochs (the best epoch's weights are evaluated). Images are
squashed to 224x224 (the paper gives no size). Each row has its own λ2 = 0 run, as the
paper's table does. Imagenette (imagenette2/train|val/<wnid>/) must be under --data-dir.

    harness run studies/imagenette_vgg.py
    harness run studies/imagenette_vgg.py seed=0:5          # CIs and tests per cell
    harness run studies/imagenette_vgg.py data.image_size=64 data.n_train=500 train.max_epochs=1
"""

from harness.analysis.spec import ProfilePlot, Table2
from harness.study import Study

LAMBDAS = [0.0, 1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0]

study = Study(
    name="imagenette_vgg",
    description="E4: VGG-16 on Imagenette, validation accuracy vs λ2 by augmentation, dropout and placement (Table 2).",
    settings={
        "dataset": "imagenette",
        "model": "vgg16",
        "task": "classification",
        "data.image_size": 224,
        "train.optimizer": "sgd",
        "train.lr": 0.01,
        "train.lr_patience": 10,
        "train.monitor": "acc",
        "train.patience": 25,
        "train.max_epochs": 200,
    },
    grid={
        "data.augment": ["none", "flip_rotate_zoom"],
        "net.dropout": [0.0, 0.5],
        "placement": ["1", "1,2"],
        "lam": LAMBDAS,
        "seed": [0],
    },
    exclude=[{"data.augment": "none", "net.dropout": 0.5}],  # the paper's three strategies
    analyses=[
        Table2(),
        ProfilePlot(at={"lam": 0.0}, split_by="placement", kind="conv"),
    ],
)
