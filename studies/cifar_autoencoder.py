"""E2 (Fig. 5-6): dense autoencoders on CIFAR-10 (3072 inputs), the entropy term on the encoder's weights.

13 latent widths x 7 λ x 10 seeds = 910 replications. Early stopping after 7 epochs
without improvement of the validation loss, as in the paper; what it monitors (the task
loss, or the total loss with the entropy term as Keras' add_loss would) is
`train.monitor`, an open choice of the paper (PAPER.md §4).

    harness run studies/cifar_autoencoder.py
    harness run studies/cifar_autoencoder.py latent=20,80,180,260 seed=0:10
"""

from harness.analysis.spec import CIPlot, ProfilePlot, SignificanceTable
from harness.study import Study

LAMBDAS = [0.0, 1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0]

study = Study(
    name="cifar_autoencoder",
    description="E2: CIFAR-10 dense autoencoder, val MSE and stopping epoch vs latent width and λ1.",
    settings={
        "dataset": "cifar10",
        "model": "dense_ae",
        "task": "reconstruction",
        "placement": "first",
        "train.patience": 7,
    },
    grid={
        "latent": list(range(20, 261, 20)),
        "lam": LAMBDAS,
        "seed": range(10),
    },
    analyses=[
        SignificanceTable("val_mse", at={"latent": 80}, published="fig5b"),
        SignificanceTable("stop_epoch", at={"latent": 80}, published="fig6b"),
        CIPlot("val_mse"),
        CIPlot("stop_epoch"),
        ProfilePlot(at={"latent": 80}, split_by="lam"),
    ],
)
