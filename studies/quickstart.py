"""Quickstart: the paper's dense autoencoder with and without entropy guidance on
scikit-learn's 8x8 digits (ships with scikit-learn, no download), 2 λ x 2 latent widths x
3 seeds = 12 replications, about a minute on 2 CPU cores.

    harness run studies/quickstart.py
    harness analyze quickstart
"""

from harness.analysis.spec import CIPlot, ProfilePlot, SignificanceTable
from harness.study import Study

study = Study(
    name="quickstart",
    description="Dense autoencoder on 8x8 digits, λ ∈ {0, 1e-3}, latent ∈ {16, 32}, 3 seeds.",
    settings={
        "dataset": "digits",
        "model": "dense_ae",
        "task": "reconstruction",
        "placement": "first",  # the entropy term on the encoder's weight matrix (E1)
        "train.lr": 3e-2,  # digits converge slowly at Keras' 1e-3; a demo should stop early within a minute
        "train.max_epochs": 150,
        "train.patience": 7,
    },
    grid={
        "latent": [16, 32],
        "lam": [0.0, 1e-3],
        "seed": range(3),
    },
    analyses=[
        SignificanceTable("val_mse"),
        SignificanceTable("stop_epoch"),
        CIPlot("val_mse"),
        CIPlot("stop_epoch"),
        ProfilePlot(split_by="lam"),
    ],
)
