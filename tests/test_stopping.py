"""harness.training.stopping: the Keras-style float32 monitor, the one early-stopping rule, and
the protocol=keras preset; a replication alone and in a pack stops at the same epoch,
and every stopping epoch recomputes from what the database recorded."""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest

from harness.training import pack
from harness.data import load_splits
from harness.training.stopping import EarlyStopping, EpochValidation, keras_val_loss, monitored_value, replay
from harness.study import PRESETS, Replication, Study, StudyError, build_config, flatten
from harness.training.loop import train


def keras_by_hand(losses, batch_size, lam, term):
    """tf.keras 2.x's val_loss, one float32 scalar operation at a time: per batch
    mean(task) + λ·term, then Mean(sample_weight=batch size)."""
    f = np.float32
    total, count = f(0), f(0)
    reg = f(lam) * f(term)
    for start in range(0, len(losses), batch_size):
        batch = np.asarray(losses[start : start + batch_size], dtype=np.float32)
        s = f(0)
        for v in batch:
            s = f(s + v)
        value = f(f(s / f(len(batch))) + reg)
        total = f(total + f(value * f(len(batch))))
        count = f(count + f(len(batch)))
    return float(f(total / count))


def test_keras_val_loss_is_the_float32_batch_by_batch_mean():
    rng = np.random.default_rng(0)
    losses = rng.uniform(0.005, 0.03, size=1003).astype(np.float32)  # a short last batch
    for lam, term in ((0.0, 0.0), (1e-3, 1e4), (1.0, 1e4), (1.0, 1e7)):
        value, task, reg = keras_val_loss(losses, 32, lam, term)
        assert value == keras_by_hand(losses, 32, lam, term)
        assert reg == float(np.float32(lam) * np.float32(term))
        assert task == keras_by_hand(losses, 32, 0.0, 0.0)
    # the float64 mean differs from the float32 total by float32 rounding only
    assert keras_val_loss(losses, 32, 0.0, 0.0)[0] == pytest.approx(float(losses.astype(np.float64).mean()), rel=1e-6)


def test_a_constant_float32_total_stops_at_patience_while_the_float64_total_improves():
    """λ/ε = 1e4 added to an MSE that improves by 1e-6 an epoch: the float32 total cannot
    see it (its resolution near 1e4 is 1e-3) and stops `patience` epochs after the first;
    the float64 total sees every improvement and runs to the cap."""
    n, patience, cap = 10_000, 7, 30
    f32 = EarlyStopping("total_float32", patience, 0.0, cap, False, lam=1.0, batch_size=32)
    f64 = EarlyStopping("total", patience, 0.0, cap, False, lam=1.0, batch_size=32)
    stops = {}
    for epoch in range(1, cap + 1):
        mse = 0.01 - 1e-6 * epoch
        val = EpochValidation(val_loss=mse, term=1e4, term32=1e4, example_losses32=np.full(n, mse, np.float32))
        for name, rule in (("f32", f32), ("f64", f64)):
            if name not in stops:
                rule.observe(epoch, val)
                if rule.should_stop(epoch):
                    stops[name] = (epoch, rule.best_epoch, rule.hit_max_epochs)
    assert stops["f32"] == (patience + 1, 1, False)
    assert stops["f64"] == (cap, cap, True)


def test_monitored_values_and_the_history_fields_they_leave():
    val = EpochValidation(val_loss=0.5, val_acc=0.9, term=2.0, term32=2.0, example_losses32=np.full(64, 0.5, np.float32))
    assert monitored_value("task", 0.1, 32, val) == (0.5, {"monitored": 0.5})
    assert monitored_value("total", 0.1, 32, val)[0] == pytest.approx(0.7)
    assert monitored_value("acc", 0.1, 32, val)[0] == -0.9
    value, fields = monitored_value("total_float32", 0.1, 32, val)
    assert set(fields) == {"monitored", "monitor_task", "monitor_term"} and fields["monitored"] == value
    assert fields["monitor_term"] == float(np.float32(0.1) * np.float32(2.0))
    with pytest.raises(ValueError, match="unknown monitor"):
        monitored_value("nosuch", 0.1, 32, val)


def test_replay_is_the_rule():
    values = [5.0, 4.0, 4.0, 3.9, 4.1, 4.2, 4.3]
    assert replay(values, patience=3) == (7, 4)
    assert replay(values, patience=3, min_delta=0.2) == (5, 2)  # 3.9 is not 0.2 below 4.0
    assert replay(values, patience=10) == (7, 4)  # ran out of epochs


# ------------------------------------------------------------------ the keras preset


def test_protocol_keras_expands_into_recorded_keys():
    config = build_config({"protocol": "keras", "entropy.eps": 1e-7})
    flat = flatten(config)
    assert {k: flat[k] for k in PRESETS["keras"]} == PRESETS["keras"]
    assert flat["entropy.eps"] == 1e-7 and "protocol" not in flat
    same = build_config({**PRESETS["keras"], "entropy.eps": 1e-7})
    assert Replication("s", config).id == Replication("s", same).id  # a preset is its keys, nothing more
    assert build_config({"protocol": "default"}) == build_config({})
    with pytest.raises(StudyError, match="protocol=keras sets train.monitor='total_float32'"):
        build_config({"protocol": "keras", "train.monitor": "task"})
    with pytest.raises(StudyError, match="bad value 'tf' for protocol"):
        build_config({"protocol": "tf"})


def test_protocol_is_a_grid_axis_and_old_ids_stay():
    study = Study("s", settings={"latent": 8}, grid={"protocol": ["default", "keras"], "seed": [0]})
    default, keras = study.replications()
    assert default.config == build_config({"latent": 8, "seed": 0})
    assert keras.config.train.adam_eps == 1e-7 and not keras.config.train.restore_best
    # train.adam_eps is a late key: a config that never set it keeps the id it had before
    assert Replication("s", build_config({"latent": 8})).id == Replication("s", build_config({"latent": 8, "train.adam_eps": 1e-8})).id
    assert study.with_overrides(["protocol=keras"]).replications()[0].config == keras.config


# ------------------------------------------------------------ one rule, both paths


@pytest.fixture(scope="module")
def digits():
    return load_splits("digits", None, n_train=300, n_val=150)


def test_alone_and_packed_stop_at_the_same_epoch_under_the_keras_protocol(digits):
    common = {"protocol": "keras", "model": "dense_ae", "dataset": "digits", "latent": 16, "train.patience": 2,
              "train.max_epochs": 12, "train.batch_size": 16}
    cfgs = [build_config({**common, "lam": lam, "seed": seed}) for lam in (0.0, 1e-3, 1.0) for seed in (0, 1)]
    packed = pack.train_pack(cfgs, digits, "cpu")
    for config, member in zip(cfgs, packed):
        lone = train(config, digits, "cpu")
        assert member.metrics["stop_epoch"] == lone.metrics["stop_epoch"]
        assert member.metrics["best_epoch"] == lone.metrics["best_epoch"]
        for a, b in zip(lone.history, member.history):
            assert {"monitored", "monitor_task", "monitor_term"} <= a.keys() == b.keys()
            for key in ("monitored", "monitor_task", "monitor_term"):  # batched LU and matmuls: last bits
                assert a[key] == pytest.approx(b[key], rel=1e-5), key


def test_every_stopping_epoch_recomputes_from_the_database(tmp_path):
    """A real run through the CLI; from the recorded history alone: the rule replayed on
    `monitored` gives each stop and best epoch, and `monitored` is the float32 sum of the
    task part and the term part to within float32 accumulation over the batches."""
    from harness.cli import main

    db = tmp_path / "h.db"
    code = main(["run", "studies/quickstart.py", "--db", f"sqlite:///{db}", "-q", "protocol=keras",
                 "lam=0,1e-3,1", "seed=0:2", "train.max_epochs=10", "train.patience=2"])
    assert code == 0
    con = sqlite3.connect(db)
    reps = con.execute("SELECT r.pk, r.config, s.value, b.value FROM replications r "
                       "JOIN metrics s ON s.rep_pk = r.pk AND s.name = 'stop_epoch' "
                       "JOIN metrics b ON b.rep_pk = r.pk AND b.name = 'best_epoch'").fetchall()
    assert len(reps) >= 6
    import json

    for pk, config, stop, best in reps:
        config = json.loads(config)
        rows = con.execute("SELECT monitored, monitor_task, monitor_term FROM epochs WHERE rep_pk = ? ORDER BY epoch",
                           (pk,)).fetchall()
        monitored = [r[0] for r in rows]
        assert replay(monitored, config["train.patience"], config["train.min_delta"], config["train.max_epochs"]) == (stop, best)
        n_batches = -(-int(config.get("data.n_val") or 360) // config["train.batch_size"])
        for value, task, term in rows:
            recomputed = np.float32(task) + np.float32(term)
            assert abs(value - float(recomputed)) <= n_batches * np.spacing(np.float32(value))
