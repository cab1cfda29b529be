"""E3's protocol on MNIST (the paper mentions it), the entropy term on the first conv layer, and in
a second set on all conv layers.

9 architectures (1-3 blocks of conv3x3 + LeakyReLU + maxpool2, width 32/64/128 in every
block) x 7 λ2 x 10 seeds, the first-layer placement for all and the all-layers one for the 2-
and 3-block ones (on one block "all" is "first": not trained twice) = 1050 replications. The paper gives neither the
number of epochs nor an early-stopping rule for E3: we stop after 7 epochs without
improvement of the validation loss (train.patience) and evaluate the best weights.

    harness run studies/mnist_cnn.py
    harness run studies/mnist_cnn.py arch=32,32-32 placement=first seed=0:3

The committed evidence (results/mnist_cnn/, docs/evidence_cnn.md) is its width-32 part:

    harness run studies/mnist_cnn.py --db sqlite:///results/mnist_cnn/harness.db arch=32,32-32,32-32-32
"""

from harness.analysis.spec import ProfilePlot, ProtocolEffect, Table1
from harness.study import Study

LAMBDAS = [0.0, 1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0]
ARCHS = [(w,) * depth for depth in (1, 2, 3) for w in (32, 64, 128)]

study = Study(
    name="mnist_cnn",
    description="E3 protocol on MNIST: CNN classifiers, train/val accuracy vs λ2, first-layer and all-layer placement.",
    settings={
        "dataset": "mnist",
        "model": "cnn",
        "task": "classification",
        "train.patience": 7,
    },
    grid={
        "arch": ARCHS,
        "placement": ["first", "all"],
        "lam": LAMBDAS,
        "seed": range(10),
    },
    exclude=[{"arch": arch, "placement": "all"} for arch in ARCHS if len(arch) == 1],
    analyses=[
        Table1(),
        # the paper: all conv layers give no significant gain; here each λ2 of the two
        # placements compared seed by seed, per architecture with more than one conv layer
        ProtocolEffect(metric="val_acc", protocol="placement", alpha=0.05),
        ProfilePlot(at={"lam": 0.0}, split_by="arch"),
    ],
)
