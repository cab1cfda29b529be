"""train.precision: bfloat16 autocast of the model, a recorded choice. A bf16 replication
has its own id, really computes in bfloat16 (its numbers move off float32's, a little),
still learns (the weights each step sees are the last optimizer step's: autocast's cache
of cast weights would hand it stale ones), and trains the same alone and in a pack."""

from __future__ import annotations

import math

import pytest

from harness.data import load_splits
from harness.errors import UserError
from harness.study import Replication, build_config
from harness.study.overrides import coerce
from harness.training.loop import train
from harness.training.pack import train_pack

CNN = {"dataset": "digits", "model": "cnn", "task": "classification", "arch": (4,), "net.padding": "same",
       "lam": 1e-3, "train.lr": 0.01, "train.max_epochs": 4, "train.patience": 10, "data.n_train": 300, "data.n_val": 150}


@pytest.fixture(scope="module")
def digits():
    return load_splits("digits", None, n_train=300, n_val=150)


def test_bf16_is_recorded_and_part_of_the_id():
    f32, bf16 = build_config(CNN), build_config({**CNN, "train.precision": "bf16"})
    assert bf16.train.precision == "bf16" and f32.train.precision == "float32"
    assert Replication("s", f32).id != Replication("s", bf16).id
    # a late key: the float32 default leaves every id recorded before it existed unchanged
    assert Replication("s", f32).id == Replication("s", build_config({**CNN, "train.precision": "float32"})).id


def test_bf16_computes_in_bfloat16_and_still_learns(digits):
    f32 = train(build_config(CNN), digits, "cpu")
    bf16 = train(build_config({**CNN, "train.precision": "bf16"}), digits, "cpu")
    a, b = [h["val_loss"] for h in f32.history], [h["val_loss"] for h in bf16.history]
    assert b[-1] < b[0]  # it learns: each step sees the weights the last step left
    assert a != b  # bfloat16 arithmetic, not float32's
    assert all(math.isclose(x, y, rel_tol=0.05) for x, y in zip(a, b))  # and close to it
    assert bf16.metrics["val_acc"] > 0.5


def test_a_bf16_member_trains_as_alone(digits):
    cfgs = [build_config({**CNN, "train.precision": "bf16", "seed": seed}) for seed in (0, 1)]
    for config, packed in zip(cfgs, train_pack(cfgs, digits, "cpu")):
        lone = train(config, digits, "cpu")
        assert [h["epoch"] for h in packed.history] == [h["epoch"] for h in lone.history]
        # bfloat16 rounds to 3 digits: the engine's and the module's kernels differ that much
        for p, q in zip(packed.history, lone.history):
            assert math.isclose(p["val_loss"], q["val_loss"], rel_tol=2e-2), (p, q)


def test_an_unknown_precision_is_refused_with_the_choices():
    with pytest.raises(UserError, match="choose one of float32, bf16"):
        coerce("train.precision", "fp8")
