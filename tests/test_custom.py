"""A study file's own pieces (harness.custom): its model, data set, task with metrics and
train function, trained for real through `harness run` by worker processes (and a Dask
LocalCluster of processes) that hold nothing of the study file until they run it; the
example study studies/dropout_mlp.py end to end; and the one-line errors."""

import json
import os
import sqlite3
import textwrap
from pathlib import Path

import pytest
import torch

from harness import custom
from harness.cli import main
from harness.data import splits_for
from harness.study import build_config, load_study

ROOT = Path(__file__).resolve().parents[1]


def rows(db: Path, sql: str):
    with sqlite3.connect(db) as conn:
        return conn.execute(sql).fetchall()


def run(*args) -> int:
    return main(["run", *map(str, args)])


def ran_elsewhere(folder: Path) -> bool:
    """Did a process other than this one (a worker) run the study file OWN?"""
    return bool({int(pid) for pid in (folder / "ran_by.txt").read_text().split()} - {os.getpid()})


def study_file(tmp_path: Path, name: str, body: str) -> Path:
    path = tmp_path / f"{name}.py"
    path.write_text(textwrap.dedent(body))
    return path


# Every piece at once: a data set (flattened digits, as tensors), a linear model, a task
# whose metrics go both ways, on two learning rates x 2 seeds.
OWN = """
    import os
    from pathlib import Path

    import torch
    from sklearn.datasets import load_digits
    from torch import nn

    from harness.analysis.spec import SignificanceTable
    from harness.custom import Metric, dataset, model, task
    from harness.study import Study

    @dataset("flat_digits")
    def flat_digits(config, data_dir):
        digits = load_digits()
        x, y = torch.tensor(digits.data, dtype=torch.float32) / 16, torch.tensor(digits.target)
        return x[:1400], y[:1400], x[1400:], y[1400:]

    def linear(config, input_shape, n_classes):
        return nn.Linear(input_shape[0], n_classes)

    model("linear", linear)  # the call form: the same as @model("linear")

    task("digit_error", loss=nn.functional.cross_entropy, metrics=[
        Metric("error", lambda out, y: (out.argmax(1) != y).float().mean(), higher_is_better=False),
        Metric("acc", lambda out, y: (out.argmax(1) == y).float().mean(), higher_is_better=True),
    ])

    with open(Path(__file__).with_name("ran_by.txt"), "a") as log:  # which processes ran this file
        log.write(f"{os.getpid()}\\n")

    study = Study(
        name="own",
        settings={"dataset": "flat_digits", "model": "linear", "task": "digit_error", "train.max_epochs": 3},
        grid={"train.lr": [0.01, 0.1], "seed": [0, 1]},
        analyses=[SignificanceTable("val_error", factor="train.lr", alpha=0.05)],
    )
"""


def test_own_model_data_set_and_task_train_in_worker_processes_and_analyze(tmp_path, capsys):
    path, db, out = study_file(tmp_path, "own", OWN), tmp_path / "h.db", tmp_path / "out"
    assert run(path, "--db", f"sqlite:///{db}", "--backend", "processes", "--workers", "2", "-q") == 0
    recorded = rows(db, "SELECT id, status, config FROM replications")
    assert len(recorded) == 4 and {r[1] for r in recorded} == {"done"}
    assert ran_elsewhere(tmp_path)  # the workers ran the study file to hold its pieces
    config = json.loads(recorded[0][2])
    assert (config["model"], config["dataset"], config["task"]) == ("linear", "flat_digits", "digit_error")
    metrics = dict(rows(db, "SELECT name, value FROM metrics WHERE rep_pk = 1"))
    assert 0 < metrics["val_error"] < 0.5 and metrics["val_acc"] == pytest.approx(1 - metrics["val_error"])
    assert {"train_error", "train_acc", "val_loss", "stop_epoch"} <= set(metrics)
    assert rows(db, "SELECT count(*) FROM epochs WHERE val_acc IS NOT NULL")[0][0] == 12  # the task's acc, per epoch
    definition = json.loads(rows(db, "SELECT definition FROM studies")[0][0])
    assert definition["higher_is_better"] == {"val_error": False, "train_error": False, "val_acc": True, "train_acc": True}
    # the ids are the configs' own: the same grid again trains nothing
    assert {r.id for r in load_study(path).replications()} == {r[0] for r in recorded}
    capsys.readouterr()
    assert run(path, "--db", f"sqlite:///{db}", "-q") == 0
    assert "4 already recorded, 0 to train" in capsys.readouterr().out

    assert main(["analyze", "own", "--db", f"sqlite:///{db}", "--out", str(out)]) == 0
    report = (out / "own" / "report.md").read_text()
    assert "val_error (lower is better)" in report and "val_acc (higher is better)" in report
    assert (out / "own" / "sig_val_error_by_train.lr.csv").is_file()


def test_own_pieces_train_on_a_dask_local_cluster_of_processes(tmp_path):
    pytest.importorskip("distributed")
    path, db = study_file(tmp_path, "own", OWN), tmp_path / "h.db"
    assert run(path, "--db", f"sqlite:///{db}", "--backend", "dask", "--workers", "2", "-q", "seed=0") == 0
    assert [r[0] for r in rows(db, "SELECT status FROM replications")] == ["done", "done"]
    assert ran_elsewhere(tmp_path)


TRAINER = """
    import torch

    from harness.custom import train_function
    from harness.study import Study

    @train_function("least_squares")
    def least_squares(config, device, data_dir):
        # gradient descent on a seeded least-squares problem: what no built-in loop runs
        g = torch.Generator().manual_seed(config.seed)
        x, w_true = torch.randn(200, 5, generator=g), torch.randn(5, generator=g)
        y = x @ w_true
        w = torch.zeros(5, requires_grad=True)
        for _ in range(config.train.max_epochs):
            loss = ((x @ w - y) ** 2).mean()
            (grad,) = torch.autograd.grad(loss, w)
            w = (w - config.train.lr * grad).detach().requires_grad_()
        return {"final_mse": ((x @ w - y) ** 2).mean().item(), "steps": config.train.max_epochs}

    @train_function("returns_a_list")
    def returns_a_list(config, device, data_dir):
        return [1.0, 2.0]

    study = Study(name="solver", settings={"model": "least_squares", "train.max_epochs": 50},
                  grid={"train.lr": [0.01, 0.1], "seed": [0, 1]})
"""


def test_a_train_function_records_its_metrics_and_a_bad_return_is_one_failed_line(tmp_path, capsys):
    path, db = study_file(tmp_path, "solver", TRAINER), tmp_path / "h.db"
    assert run(path, "--db", f"sqlite:///{db}", "--backend", "processes", "--workers", "2", "-q") == 0
    recorded = rows(db, "SELECT r.config, m.value FROM replications r JOIN metrics m ON m.rep_pk = r.pk "
                        "WHERE m.name = 'final_mse'")
    by_lr = {}
    for config, mse in recorded:
        by_lr.setdefault(json.loads(config)["train.lr"], []).append(mse)
    assert len(recorded) == 4 and max(by_lr[0.1]) < min(by_lr[0.01])  # the larger step gets further in 50 steps
    capsys.readouterr()
    # a train function that returns a list: failed, its one line shown and recorded; exit 1; the rest kept
    assert run(path, "--db", f"sqlite:///{db}", "-q", "model=returns_a_list", "train.lr=0.1", "seed=0") == 1
    err = capsys.readouterr().err
    assert "returned list, not a dict of metric name -> number" in err and "Traceback" not in err
    status = dict(rows(db, "SELECT status, error FROM replications WHERE status = 'failed'"))
    assert status["failed"].count("\n") == 0 and "returned list" in status["failed"]
    assert rows(db, "SELECT count(*) FROM replications WHERE status = 'done'")[0][0] == 4


def test_a_builder_that_raises_is_a_failed_replication_with_one_line_and_the_sweep_goes_on(tmp_path, capsys):
    body = OWN.replace("return nn.Linear(input_shape[0], n_classes)",
                       "if config.seed == 1:\n            raise ValueError('no model for seed 1')\n"
                       "        return nn.Linear(input_shape[0], n_classes)")
    path, db = study_file(tmp_path, "own", body), tmp_path / "h.db"
    assert run(path, "--db", f"sqlite:///{db}", "-q", "train.lr=0.1") == 1
    err = capsys.readouterr().err
    assert "(train.lr=0.1 seed=1): ValueError: no model for seed 1" in [line for line in err.splitlines() if "failed" in line][0]
    assert sorted(r[0] for r in rows(db, "SELECT status FROM replications")) == ["done", "failed"]


@pytest.mark.parametrize("override, message", [
    ("model=lineer", "unknown model 'lineer' (did you mean 'linear'?)"),
    ("dataset=flat_digit", "unknown dataset 'flat_digit' (did you mean 'flat_digits'?)"),
    ("task=digit_eror", "unknown task 'digit_eror' (did you mean 'digit_error'?)"),
])
def test_an_unknown_name_is_one_line_with_the_closest_and_records_nothing(tmp_path, capsys, override, message):
    path, db = study_file(tmp_path, "own", OWN), tmp_path / "h.db"
    assert run(path, "--db", f"sqlite:///{db}", override) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
    assert not db.exists()


def test_a_built_in_name_cannot_be_taken_and_the_study_file_error_is_one_line(tmp_path, capsys):
    path = study_file(tmp_path, "taken", """
        from harness.custom import model
        from harness.study import Study

        @model("cnn")
        def mine(config, input_shape, n_classes):
            pass

        study = Study(name="taken")
    """)
    assert run(path, "--db", f"sqlite:///{tmp_path}/h.db") == 2
    err = capsys.readouterr().err
    assert "model 'cnn' is built in; give yours another name" in err and err.count("\n") == 1


def test_a_torchvision_style_data_set_is_stacked_and_limited_by_n_train():
    def pairs(config, data_dir):
        x = torch.arange(40, dtype=torch.float32).view(10, 2, 2)
        y = torch.arange(10) % 3
        return torch.utils.data.TensorDataset(x[:8], y[:8]), torch.utils.data.TensorDataset(x[8:], y[8:])

    custom.dataset("pairs_for_test", pairs)
    splits = splits_for(build_config({"dataset": "pairs_for_test", "data.n_train": 5}), None)
    assert splits.train_x.shape == (5, 2, 2) and splits.train_x.dtype == torch.float32
    assert splits.val_y.tolist() == [2, 0] and splits.n_classes == 3 and splits.input_shape == (2, 2)

    custom.dataset("ragged_for_test", lambda config, data_dir: ([1, 2], [3]))
    with pytest.raises(custom.PieceError, match="cannot stack its examples"):
        splits_for(build_config({"dataset": "ragged_for_test"}), None)


def test_a_builder_must_return_a_module():
    custom.model("not_a_module_for_test", lambda config, input_shape, n_classes: "a string")
    from harness.training.loop import seeded_model

    with pytest.raises(custom.PieceError, match="returned str, not a torch.nn.Module"):
        seeded_model(build_config({"model": "not_a_module_for_test"}), (4,), 2)


def test_the_dropout_mlp_study_runs_end_to_end_and_its_report_holds_the_table(tmp_path):
    db, out = tmp_path / "h.db", tmp_path / "out"
    assert run(ROOT / "studies" / "dropout_mlp.py", "--db", f"sqlite:///{db}", "-q", "--backend", "processes",
               "--workers", "2", "seed=0:3", "net.dropout=0,0.5", "train.max_epochs=2") == 0
    recorded = rows(db, "SELECT status, config FROM replications")
    assert len(recorded) == 6 and {r[0] for r in recorded} == {"done"}
    assert {json.loads(r[1])["model"] for r in recorded} == {"dropout_mlp"}
    assert main(["analyze", "dropout_mlp", "--db", f"sqlite:///{db}", "--out", str(out)]) == 0
    report = (out / "dropout_mlp" / "report.md").read_text()
    assert "Validation accuracy across net.dropout" in report
    table = (out / "dropout_mlp" / "sig_val_acc_by_net.dropout.csv").read_text()
    assert "0.5" in table and table.count("\n") >= 2


class _LogisticRegression(torch.nn.Module):
    """No nn.Linear or nn.Conv2d: nothing for the entropy diagnostics to guide or profile."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(64, 10))

    def forward(self, x):
        return x.flatten(1) @ self.w


def test_a_model_without_dense_or_conv_layers_trains_unguided_and_cannot_be_guided():
    from harness.study import Replication
    from harness.training.loop import run_replication

    custom.model("logistic_for_test", lambda config, input_shape, n_classes: _LogisticRegression())
    settings = {"model": "logistic_for_test", "task": "classification", "train.max_epochs": 2}
    result = run_replication(Replication("t", build_config(settings)))
    assert result["status"] == "done" and result["metrics"]["val_acc"] > 0.5
    guided = run_replication(Replication("t", build_config({**settings, "lam": 1e-3})))
    assert guided["status"] == "failed" and "no nn.Conv2d or nn.Linear layer to guide" in guided["error"]
