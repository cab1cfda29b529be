"""E1 (Fig. 3-4): dense autoencoders on MNIST, the entropy term on the encoder's weights.

13 latent widths x 7 λ x 10 seeds = 910 replications. Early stopping after 7 epochs
without improvement of the validation loss, as in the paper; what it monitors (the task
loss, or the total loss with the entropy term as Keras' add_loss would) is
`train.monitor`, an open choice of the paper (PAPER.md §4).

    harness run studies/mnist_autoencoder.py
    harness run studies/mnist_autoencoder.py latent=20,80,180,260 seed=0:10
    harness run studies/mnist_autoencoder.py latent=80,180,20,260 train.monitor=task,total_float32

(the last is the run behind results/mnist_autoencoder/: the monitor as a protocol axis)
"""

from harness.analysis.spec import CIPlot, Claims, CurvePlot, ProfilePlot, ProtocolEffect, SignificanceTable
from harness.study import Study

LAMBDAS = [0.0, 1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0]

study = Study(
    name="mnist_autoencoder",
    description="E1: MNIST dense autoencoder, val MSE and stopping epoch vs latent width and λ1.",
    settings={
        "dataset": "mnist",
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
        SignificanceTable("val_mse", at={"latent": 80}, published="fig3b"),
        SignificanceTable("stop_epoch", at={"latent": 180}, published="fig4b"),
        CIPlot("val_mse"),
        CIPlot("stop_epoch"),
        # the monitors' histories are the same epoch by epoch (one model): one set of curves
        CurvePlot("val_loss", at={"train.monitor": "task"}, logy=True),
        ProfilePlot(at={"latent": 80}, split_by="lam"),
        Claims("e1"),  # the headline numbers: stopping epochs, the speed-up, val MSE levels
        # with train.monitor=task,total_float32 as an axis: the protocol's effect beside λ's
        ProtocolEffect("stop_epoch", "train.monitor"),
        ProtocolEffect("val_mse", "train.monitor"),
    ],
)
