"""Dropout and an MLP's test accuracy (Srivastava et al. 2014, "Dropout: a simple way to
prevent neural networks from overfitting", JMLR 15): dropout on the hidden layers of a
fully connected network lowers its test error. Here: a 64-512-512-10 ReLU MLP on
scikit-learn's 8x8 digits (bundled with scikit-learn, no download), trained with Adam for
a fixed budget of 40 epochs (no early stopping, the last weights evaluated, so nothing is
chosen on the test split), hidden dropout p ∈ {0, 0.2, 0.5} x 10 seeds = 30 replications,
about two minutes on 2 CPU cores.

The model is written here and registered with ``harness.custom.model``: the harness
records its name in every replication's config and this file's text with the study, and
each worker runs this file to find the model (docs/your_own_paper.md).

    harness run studies/dropout_mlp.py
    harness analyze dropout_mlp
"""

from torch import nn

from harness.analysis.spec import CIPlot, CurvePlot, SignificanceTable, SummaryTable
from harness.custom import model
from harness.study import Study


@model("dropout_mlp")
def dropout_mlp(config, input_shape, n_classes):
    """Flatten -> [Linear -> ReLU -> Dropout(p)] per hidden width in ``arch`` -> Linear.
    p is ``net.dropout`` (the paper's hidden-unit dropout; no input dropout), PyTorch's
    default initialisation."""
    layers, width = [nn.Flatten()], 1
    for size in input_shape:
        width *= size
    for hidden in config.arch:
        layers += [nn.Linear(width, hidden), nn.ReLU(), nn.Dropout(config.net.dropout)]
        width = hidden
    layers.append(nn.Linear(width, n_classes))
    return nn.Sequential(*layers)


study = Study(
    name="dropout_mlp",
    description="Hidden dropout p ∈ {0, 0.2, 0.5} in a 64-512-512-10 MLP on 8x8 digits, 40 epochs of Adam, 10 seeds "
                "(Srivastava et al. 2014: dropout improves test accuracy).",
    settings={
        "dataset": "digits",  # 1437 training images, 360 test images (a fixed stratified split)
        "model": "dropout_mlp",
        "task": "classification",
        "arch": (512, 512),  # the hidden widths, read by the builder above
        "train.lr": 1e-3,
        "train.batch_size": 32,
        "train.max_epochs": 40,
        "train.patience": 40,  # a fixed budget: early stopping on the test split would choose on it
        "train.restore_best": False,  # the last weights are the ones evaluated
    },
    grid={
        "net.dropout": [0.0, 0.2, 0.5],
        "seed": range(10),
    },
    analyses=[
        SignificanceTable("val_acc", factor="net.dropout", alpha=0.05),
        SignificanceTable("train_acc", factor="net.dropout", alpha=0.05),
        SummaryTable(("val_acc", "train_acc", "val_loss"), factor="net.dropout"),
        CIPlot("val_acc", x="net.dropout", hue="seed"),
        CurvePlot("val_acc", hue="net.dropout"),
    ],
)
