"""`harness export` to Parquet and to a real local MLflow store, read back with pandas and
with MLflow's own client, and compared with what the results database holds."""

import math
import os
import sqlite3
import sys

import pandas as pd
import pytest

from harness.cli import main
from harness.store import Store

QUICK = ["seed=0", "latent=8", "train.max_epochs=3"]


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """One quickstart study with every status a replication can have, trained for real:
    two done autoencoders, a done and a failed CNN (three valid-padded blocks collapse an
    8x8 digit to nothing), and a diverged one (an absurd SGD step)."""
    db = tmp_path_factory.mktemp("export") / "h.db"
    url = f"sqlite:///{db}"
    assert main(["run", "studies/quickstart.py", "--db", url, "-q", *QUICK]) == 0
    assert main(["run", "studies/quickstart.py", "--db", url, "-q", "model=cnn", "task=classification",
                 "arch=4,4-4-4", "latent=0", "lam=0", "seed=0", "train.max_epochs=1"]) == 1
    assert main(["run", "studies/quickstart.py", "--db", url, "-q", "seed=0", "latent=8", "lam=0",
                 "net.output_activation=linear", "train.optimizer=sgd", "train.lr=1e10", "train.max_epochs=5"]) == 0
    store = Store(url, reader=True)
    assert set(store.frame("quickstart")["status"]) == {"done", "failed", "diverged"}
    return db


def copy_of(db, tmp_path):
    """The database copied through SQLite's own backup (its write-ahead log included)."""
    copy = tmp_path / "copy.db"
    with sqlite3.connect(db) as src, sqlite3.connect(copy) as dst:
        src.backup(dst)
    return copy


def test_parquet_holds_the_same_rows_as_the_store(recorded, tmp_path, capsys):
    store = Store(str(recorded), reader=True)
    out = tmp_path / "reps.parquet"
    assert main(["export", "quickstart", "--db", str(recorded), "--out", str(out)]) == 0  # by its suffix
    assert f"{out}: 5 rows" in capsys.readouterr().err
    pd.testing.assert_frame_equal(pd.read_parquet(out), store.frame("quickstart"))

    out = tmp_path / "epochs.bin"
    assert main(["export", "quickstart", "--db", str(recorded), "--epochs", "--format", "parquet", "--out", str(out)]) == 0
    epochs = pd.read_parquet(out)
    expected = store.configs("quickstart").merge(store.history("quickstart"), on="id")
    pd.testing.assert_frame_equal(epochs, expected)
    assert set(epochs.groupby("id")["epoch"].max()) >= {1, 3}  # the CNN's one epoch, the autoencoders' three


def run_by_replication(client, experiment: str) -> dict:
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    by_id = {r.data.tags["harness.replication_id"]: r for r in runs}
    assert len(by_id) == len(runs)  # one run per replication
    return by_id


def test_mlflow_runs_hold_the_config_metrics_history_and_provenance(recorded, tmp_path, capsys):
    from mlflow import MlflowClient

    uri = (tmp_path / "mlruns").as_uri()  # file:///…: MLflow's folder store
    assert main(["export", "quickstart", "--db", str(recorded), "--mlflow", uri]) == 0
    assert f"5 runs exported to MLflow experiment 'quickstart' at {uri}" in capsys.readouterr().out

    store = Store(str(recorded), reader=True)
    frame, history = store.frame("quickstart"), store.history("quickstart")
    configs = store.configs("quickstart").set_index("id").drop(columns="status")
    client = MlflowClient(tracking_uri=uri)
    runs = run_by_replication(client, "quickstart")
    assert set(runs) == set(frame["id"])
    for row in frame.to_dict("records"):
        run = runs[row["id"]]
        assert run.info.status == ("FAILED" if row["status"] == "failed" else "FINISHED")
        assert run.data.params == {k: str(v) for k, v in configs.loc[row["id"]].items() if pd.notna(v)}
        assert f"lam={row['lam']}" in run.info.run_name and f"seed={row['seed']}" in run.info.run_name  # grid axes
        tags = run.data.tags
        assert tags["harness.status"] == row["status"] and tags["harness.study"] == "quickstart"
        for key in ("host", "device", "harness_version", "torch_version", "git_commit", "started_at", "finished_at"):
            assert tags[f"harness.{key}"] == row[key]
        assert tags["mlflow.source.git.commit"] == row["git_commit"]
        if row["status"] != "done":  # the traceback (failed) or the non-finite loss (diverged)
            assert tags["harness.error"] == row["error"][-8000:]
        final = {k: v for k, v in row.items() if k not in configs.columns and isinstance(v, float)
                 and math.isfinite(v) and k not in ("id", "study", "status")}
        assert run.data.metrics.keys() - final.keys() == {f"epoch/{c}" for c in history.columns[2:]
                                                          if history[history["id"] == row["id"]][c].notna().any()}
        assert {k: run.data.metrics[k] for k in final} == pytest.approx(final)
        mine = history[history["id"] == row["id"]]
        for column in ("train_loss", "val_loss"):
            logged = {m.step: m.value for m in client.get_metric_history(run.info.run_id, f"epoch/{column}")}
            recorded_values = {e: v for e, v in zip(mine["epoch"], mine[column]) if math.isfinite(v)}
            assert logged == pytest.approx(recorded_values)
    assert any(r["status"] == "diverged" and not math.isfinite(r["val_mse"]) for r in frame.to_dict("records"))


def test_exporting_again_adds_only_what_is_new(recorded, tmp_path, capsys):
    """Into an MLflow SQLite store: a second export adds nothing; a run an interrupted export
    left unfinished, and the run of a replication recorded again since, are replaced."""
    from mlflow import MlflowClient

    db = copy_of(recorded, tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    export = ["export", "quickstart", "--db", str(db), "--mlflow", uri, "--experiment", "e"]
    client = MlflowClient(tracking_uri=uri)
    experiment_id = client.create_experiment("e")
    frame = Store(str(db), reader=True).frame("quickstart")
    done = frame[frame["status"] == "done"]["id"].iloc[0]
    # what an export cut short after creating a run leaves behind
    client.create_run(experiment_id, tags={"harness.replication_id": done, "harness.study": "quickstart"})

    assert main(export) == 0
    assert "5 runs exported to MLflow experiment 'e'" in capsys.readouterr().out  # the unfinished one replaced
    assert main(export) == 0
    assert capsys.readouterr().out.startswith("0 runs exported to MLflow experiment 'e'")
    runs = run_by_replication(client, "e")
    assert len(runs) == 5 and all(r.info.status != "RUNNING" for r in runs.values())

    # the failed CNN trained again (it fails again, recorded anew): its run is replaced
    assert main(["run", "studies/quickstart.py", "--db", str(db), "-q", "--rerun-failed", "--retries", "0",
                 "model=cnn", "task=classification", "arch=4,4-4-4", "latent=0", "lam=0", "seed=0",
                 "train.max_epochs=1"]) == 1
    capsys.readouterr()
    assert main(export) == 0
    out = capsys.readouterr().out
    assert out.startswith("1 run exported") and "1 of them replacing an older or unfinished run; 4 already there" in out
    again = run_by_replication(client, "e")
    failed = frame[frame["status"] == "failed"]["id"].iloc[0]
    assert len(again) == 5 and again[failed].info.run_id != runs[failed].info.run_id
    assert again[done].info.run_id == runs[done].info.run_id


def test_a_second_export_says_what_it_skipped(recorded, tmp_path, capsys):
    uri = (tmp_path / "mlruns").as_uri()
    assert main(["export", "quickstart", "--db", str(recorded), "--mlflow", uri]) == 0
    capsys.readouterr()
    assert main(["export", "quickstart", "--db", str(recorded), "--mlflow", uri]) == 0
    assert capsys.readouterr().out.strip() == f"0 runs exported to MLflow experiment 'quickstart' at {uri}; 5 already there"


def test_a_password_in_the_tracking_uri_never_reaches_the_output(recorded, capsys, monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # nothing listens there: fail at once
    uri = "http://researcher:s3cret-pw@127.0.0.1:9/"
    assert main(["export", "quickstart", "--db", str(recorded), "--mlflow", uri]) == 2
    out, err = capsys.readouterr()
    assert "s3cret-pw" not in out + err and "researcher:***@127.0.0.1" in err and len(err.splitlines()) == 1


@pytest.mark.parametrize("module, argv, hint", [
    ("mlflow", ["--mlflow", "sqlite:///never.db"], "pip install -e '.[mlflow]'"),
    ("pyarrow", ["--out", "never.parquet"], "pip install -e '.[parquet]'"),
])
def test_a_missing_extra_is_one_line_naming_it(recorded, tmp_path, capsys, monkeypatch, module, argv, hint):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(sys.modules, module, None)  # what `import mlflow` finds where it is not installed
    assert main(["export", "quickstart", "--db", str(recorded), *argv]) == 2
    err = capsys.readouterr().err
    assert hint in err and len(err.splitlines()) == 1
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("argv, message", [
    (["--mlflow", "sqlite:///x.db", "--out", "x.csv"], "--mlflow writes runs, not a file"),
    (["--experiment", "e"], "give --mlflow URI too"),
])
def test_export_options_that_contradict_are_one_line(recorded, capsys, argv, message):
    assert main(["export", "quickstart", "--db", str(recorded), *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.splitlines()) == 1
