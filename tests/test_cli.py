"""`harness run` end to end on real data, through the CLI, read back from SQLite."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.cli import main

ROOT = Path(__file__).resolve().parents[1]
MNIST_DIR = Path(os.environ.get("HARNESS_DATA_DIR", ROOT.parent / "shared" / "data"))
needs_mnist = pytest.mark.skipif(
    not (MNIST_DIR / "MNIST" / "raw" / "train-images-idx3-ubyte").exists(), reason=f"MNIST not under {MNIST_DIR}"
)


def rows(db: Path, sql: str):
    """Read the database with plain sqlite3, independently of harness.store."""
    with sqlite3.connect(db) as conn:
        return conn.execute(sql).fetchall()


def run(*args) -> int:
    return main(["run", *map(str, args)])


QUICK = ["seed=0", "latent=8", "train.max_epochs=3"]


def test_quickstart_subset_records_every_replication_and_rerun_trains_nothing(tmp_path, capsys):
    db = tmp_path / "h.db"
    assert run("studies/quickstart.py", "--db", f"sqlite:///{db}", "-q", *QUICK) == 0
    recorded = rows(db, "SELECT id, status, config FROM replications")
    assert len(recorded) == 2 and {r[1] for r in recorded} == {"done"}
    assert {json.loads(r[2])["lam"] for r in recorded} == {0.0, 1e-3}
    metrics = dict(rows(db, f"SELECT name, value FROM metrics WHERE rep_pk = 1"))
    assert 0 < metrics["val_mse"] < 0.2 and metrics["stop_epoch"] == 3 and metrics["hit_max_epochs"] == 1
    assert rows(db, "SELECT count(*) FROM epochs WHERE val_loss IS NOT NULL")[0][0] == 6  # 2 reps x 3 epochs

    capsys.readouterr()
    assert run("studies/quickstart.py", "--db", f"sqlite:///{db}", "-q", *QUICK) == 0
    assert "2 already recorded, 0 to train" in capsys.readouterr().out
    assert len(rows(db, "SELECT id FROM replications")) == 2

    # a changed training setting is a different replication
    assert run("studies/quickstart.py", "--db", f"sqlite:///{db}", "-q", *QUICK, "train.lr=0.05", "lam=0") == 0
    assert len(rows(db, "SELECT id FROM replications")) == 3


@needs_mnist
def test_mnist_study_runs_end_to_end_on_the_real_data(tmp_path):
    db = tmp_path / "h.db"
    code = run(
        "studies/mnist_autoencoder.py", "--db", f"sqlite:///{db}", "--data-dir", MNIST_DIR, "-q",
        "latent=20", "lam=0,1e-3", "seed=0", "train.max_epochs=2", "data.n_train=2000", "data.n_val=500",
    )
    assert code == 0
    recorded = rows(
        db,
        "SELECT r.status, r.config, m.value FROM replications r JOIN metrics m ON m.rep_pk = r.pk "
        "WHERE m.name = 'val_mse' ORDER BY json_extract(r.config, '$.lam')",  # two workers: either may end first
    )
    assert [r[0] for r in recorded] == ["done", "done"]
    configs = [json.loads(r[1]) for r in recorded]
    assert [c["lam"] for c in configs] == [0.0, 1e-3] and {c["dataset"] for c in configs} == {"mnist"}
    assert all(0 < r[2] < 0.12 for r in recorded)  # MNIST pixels in [0,1]: a real reconstruction
    # entropy diagnostics are recorded for the guided (encoder) layer
    logdets = rows(db, "SELECT value FROM metrics WHERE name = 'logdet_mean'")
    assert len(logdets) == 2 and all(v[0] < 0 for v in logdets)
    ratio = rows(db, "SELECT value FROM metrics m JOIN replications r ON r.pk = m.rep_pk WHERE m.name='grad_ratio'")
    assert sorted(v[0] for v in ratio)[0] == 0.0  # λ = 0: the guidance contributes no gradient
    profile = rows(db, "SELECT DISTINCT stage FROM profiles")
    assert {p[0] for p in profile} == {"init", "final"}
    study = rows(db, "SELECT definition FROM studies")[0][0]
    assert json.loads(study)["grid"]["lam"] == [0.0, 1e-3]


def test_classification_with_a_cnn_records_accuracy(tmp_path):
    db = tmp_path / "h.db"
    code = run(
        "studies/quickstart.py", "--db", f"sqlite:///{db}", "-q", "model=cnn", "task=classification",
        "arch=8", "latent=0", "placement=all", "lam=0,0.1", "seed=0", "train.max_epochs=2",
    )
    assert code == 0
    accs = rows(db, "SELECT value FROM metrics WHERE name = 'val_acc'")
    assert len(accs) == 2 and all(0.3 < a[0] <= 1.0 for a in accs)  # digits: well above chance (0.1)
    stats = rows(db, "SELECT count(*) FROM metrics WHERE name = 'log_c11_mean'")[0][0]
    assert stats == 2


def test_diverged_training_is_a_recorded_outcome(tmp_path):
    db = tmp_path / "h.db"
    # plain SGD with an absurd step on an unbounded (linear) output: the loss leaves the floats
    code = run(
        "studies/quickstart.py", "--db", f"sqlite:///{db}", "-q", "seed=0", "latent=8", "lam=0",
        "net.output_activation=linear", "train.optimizer=sgd", "train.lr=1e10", "train.max_epochs=5",
    )
    assert code == 0
    status, error = rows(db, "SELECT status, error FROM replications")[0]
    assert status == "diverged" and "non-finite" in error


def test_failed_replication_is_recorded_with_its_traceback_and_the_sweep_goes_on(tmp_path, capsys):
    db = tmp_path / "h.db"
    # three valid-padded blocks collapse an 8x8 digit to nothing: that replication fails
    code = run(
        "studies/quickstart.py", "--db", f"sqlite:///{db}", "-q", "model=cnn", "task=classification",
        "arch=4,4-4-4", "latent=0", "lam=0", "seed=0", "train.max_epochs=1",
    )
    assert code == 1
    recorded = dict(rows(db, "SELECT status, error FROM replications"))
    assert set(recorded) == {"done", "failed"} and "Traceback" in recorded["failed"]
    assert "failed" in capsys.readouterr().err


@pytest.mark.parametrize(
    "override, message",
    [("lamb=1", "did you mean 'lam'"), ("train.batch_size=x", "bad value 'x'"), ("seed=a:b", "bad range")],
)
def test_bad_override_is_one_line_and_nonzero(tmp_path, capsys, override, message):
    assert run("studies/quickstart.py", "--db", f"sqlite:///{tmp_path}/h.db", override) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


@pytest.mark.parametrize("option", [["--workers", "0"], ["--devices", "tpu:0"]])
def test_bad_worker_options_fail_before_the_database_is_touched(tmp_path, capsys, option):
    assert run("studies/quickstart.py", "--db", f"sqlite:///{tmp_path}/h.db", *option) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "h.db").exists()


def test_missing_data_names_the_path_and_records_nothing(tmp_path, capsys):
    db = tmp_path / "h.db"
    empty = tmp_path / "nodata"
    empty.mkdir()
    code = run("studies/mnist_autoencoder.py", "--db", f"sqlite:///{db}", "--data-dir", empty, "latent=20", "lam=0", "seed=0")
    assert code == 2
    err = capsys.readouterr().err
    assert str(empty) in err and err.count("\n") == 1
    assert rows(db, "SELECT count(*) FROM replications")[0][0] == 0


def test_status_counts_against_the_grid(tmp_path, capsys):
    db = f"sqlite:///{tmp_path}/h.db"
    assert run("studies/quickstart.py", "--db", db, "-q", *QUICK) == 0
    capsys.readouterr()
    assert main(["status", "--db", db]) == 0
    line = [l for l in capsys.readouterr().out.splitlines() if l.startswith("quickstart")][0]
    assert line.split()[1:6] == ["2", "2", "0", "0", "0"]


def test_export_writes_the_recorded_results_as_csv(tmp_path, capsys):
    import io

    import pandas as pd

    db = tmp_path / "h.db"
    assert run("studies/quickstart.py", "--db", f"sqlite:///{db}", "-q", *QUICK) == 0
    out = tmp_path / "reps.csv"
    assert main(["export", "quickstart", "--db", str(db), "--out", str(out)]) == 0
    reps = pd.read_csv(out)
    val_mse = dict(rows(db, "SELECT r.id, m.value FROM replications r JOIN metrics m ON m.rep_pk = r.pk "
                            "WHERE m.name = 'val_mse'"))
    assert dict(zip(reps["id"], reps["val_mse"])) == pytest.approx(val_mse)
    assert sorted(reps["lam"]) == [0.0, 1e-3] and set(reps["status"]) == {"done"} and "wall_s" in reps

    capsys.readouterr()
    assert main(["export", "quickstart", "--db", str(db), "--epochs"]) == 0  # to standard output
    epochs = pd.read_csv(io.StringIO(capsys.readouterr().out))
    val_loss = {(i, e): v for i, e, v in rows(db, "SELECT r.id, h.epoch, h.val_loss FROM replications r "
                                                      "JOIN epochs h ON h.rep_pk = r.pk")}
    assert len(epochs) == 6 and {(i, e): v for i, e, v in zip(epochs["id"], epochs["epoch"], epochs["val_loss"])} == pytest.approx(val_loss)
    assert set(epochs["lam"]) == {0.0, 1e-3} and "val_mse" not in epochs  # config per epoch, no final metrics

    from harness.store import Store

    Store(str(db)).record_study_dict({"name": "empty", "settings": {}, "grid": {}, "analyses": [], "source": ""})
    for argv, message in ((["export", "quickstrat"], "no study named 'quickstrat'"),
                          (["export", "empty", "--epochs"], "study 'empty' has nothing recorded"),
                          (["export", "quickstart", "--out", str(tmp_path / "no" / "x.csv")], "cannot write")):
        assert main([*argv, "--db", str(db)]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1


def test_plan_sizes_a_comparison_from_a_real_pilot(tmp_path, capsys):
    """A pilot of 3 seeds at 2 λ: `harness plan` reads their spread from the database and
    says how many seeds find a given difference; checked with numpy and statsmodels on the
    values read back by plain sqlite3."""
    import numpy as np
    import pandas as pd
    from statsmodels.stats.power import TTestIndPower

    db = tmp_path / "h.db"
    assert run("studies/quickstart.py", "--db", f"sqlite:///{db}", "-q", "latent=8", "seed=0:3", "train.max_epochs=3") == 0
    recorded = rows(db, "SELECT r.config, m.value FROM replications r JOIN metrics m ON m.rep_pk = r.pk "
                        "WHERE m.name = 'val_mse'")
    by_lam = {lam: np.array([v for c, v in sorted(recorded) if json.loads(c)["lam"] == lam]) for lam in (0.0, 1e-3)}
    sd = np.sqrt((by_lam[0.0].var(ddof=1) + by_lam[1e-3].var(ddof=1)) / 2)
    effect = 2 * sd
    out = tmp_path / "plan.csv"
    capsys.readouterr()
    assert main(["plan", "quickstart", "val_mse", "--db", str(db), "latent=8.0", "--effect", str(effect),
                 "--alpha", "0.05", "--out", str(out)]) == 0  # key=value after an option, as in harness run
    printed = capsys.readouterr().out
    assert "\n| latent | lam | vs | n |" in printed and "\n| 8 | 0.001 | 0 | 3 |" in printed
    assert "as few as 3 seeds" in printed
    plan = pd.read_csv(out)
    assert len(plan) == 1 and plan["n"][0] == 3 and plan["sd"][0] == pytest.approx(sd)
    assert plan["seeds"][0] == np.ceil(TTestIndPower().solve_power(effect_size=2.0, alpha=0.05, power=0.8))
    for argv, message in ((["plan", "quickstart", "val_acc"], "no metric 'val_acc'"),
                          (["plan", "quickstart", "val_mse", "width=8"], "'width=8': expected key=value"),
                          (["plan", "quickstart", "val_mse", "--by", "depth"], "--by depth: no such setting"),
                          (["plan", "quickstart", "val_mse", "lam=0"], "nothing to compare"),
                          (["plan", "quickstart", "val_mse", "lam=none"], "lam is a number"),
                          (["plan", "quickstart", "val_mse", "--power", "1.5"], "between 0 and 1"),
                          (["plan", "quickstart", "val_mse", "--power", "0.005"], "--power above --alpha"),
                          (["plan", "quickstart", "val_mse", "--effect", "0"], "finite nonzero"),
                          (["plan", "quickstart", "val_mse", "--rel-effect", "inf"], "finite nonzero"),
                          (["plan", "quickstart", "dataset"], "a setting, not a metric")):
        assert main([*argv, "--db", str(db)]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1


def test_help_is_fast_and_imports_nothing_heavy():
    out = subprocess.run([sys.executable, "-m", "harness.cli", "--help"], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0 and "run" in out.stdout and "analyze" in out.stdout
    probe = "import sys, harness.cli; harness.cli.main(['--help']) if False else None; print(sorted(m for m in ('torch','pandas','sqlalchemy') if m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True).stdout.strip() == "[]"


def test_a_listing_piped_into_head_ends_quietly(tmp_path):
    """`harness run STUDY --dry-run | head`: the reader stops after a few lines; no traceback."""
    cmd = [sys.executable, "-m", "harness.cli", "run", "studies/mnist_autoencoder.py", "--dry-run", "--db", str(tmp_path / "h.db")]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
    first = proc.stdout.readline()
    proc.stdout.close()  # 910 lines do not fit in the pipe: the writer meets a closed pipe
    stderr = proc.stderr.read().decode()
    assert proc.wait() == 0 and b"910 replications in the grid" in first
    assert "Traceback" not in stderr and "BrokenPipe" not in stderr, stderr

    # `harness export … --epochs | head` on the committed E1 database (tens of thousands of rows)
    cmd = [sys.executable, "-m", "harness.cli", "export", "mnist_autoencoder", "--epochs",
           "--db", str(ROOT / "results" / "mnist_autoencoder" / "harness.db")]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
    first = proc.stdout.readline()
    proc.stdout.close()
    stderr = proc.stderr.read().decode()
    assert proc.wait() == 0 and first.startswith(b"id,status,") and stderr == "", stderr


# What the interpreter does at exit after a run: it joins the worker pool's threads (loky
# shuts its reusable pool down then). Here a non-daemon thread stands for them.
_EXITING = """
import threading, time
import harness.cli as cli

def main():
    threading.Thread(target=time.sleep, args=(60,)).start()
    print("trained 4: 4 done")  # buffered (a pipe): the exit must flush it
    return 130

cli.main = main
cli.entry()
"""


def test_ctrl_c_while_the_command_exits_ends_it_at_once_without_a_traceback():
    """A second Ctrl-C that comes just after a drained run has ended, while the process
    shuts its workers down, must not print a KeyboardInterrupt traceback under the
    summary nor change the exit code."""
    proc = subprocess.Popen([sys.executable, "-c", _EXITING], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=ROOT)
    try:
        first = proc.stdout.readline()  # flushed by entry() before it exits
        time.sleep(0.5)  # now in the interpreter's exit, joining the thread
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)  # not the thread's 60 s
    finally:
        proc.kill()
    assert first == "trained 4: 4 done\n"
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err


_BUSY = """
import sys, time
import harness.cli as cli

def main():
    print("busy", flush=True)
    time.sleep(60)  # a command with no Ctrl-C handling of its own (analyze, export, ...)
    return 0

cli.main = main
cli.entry()
"""


def test_ctrl_c_in_a_command_without_its_own_handling_is_one_line_and_130():
    proc = subprocess.Popen([sys.executable, "-c", _BUSY], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=ROOT)
    try:
        assert proc.stdout.readline() == "busy\n"
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert proc.returncode == 130 and err.strip() == "harness: interrupted", err


@pytest.mark.parametrize(
    "study, overrides, metric",
    [
        ("studies/cifar_autoencoder.py", ["latent=20"], "val_mse"),
        ("studies/cifar_cnn.py", ["arch=8,8-8", "placement=first"], "val_acc"),
    ],
)
def test_cifar_studies_run_on_cifar10_files_in_the_real_format(tmp_path, cifar_dir, study, overrides, metric):
    root, _ = cifar_dir
    db = tmp_path / "h.db"
    # one worker, this process: the fixture's checksums are patched here, not in worker processes
    code = run(study, "--db", f"sqlite:///{db}", "--data-dir", root, "-q", "--workers", "1", *overrides, "lam=0,1e-3",
               "seed=0", "train.max_epochs=1")
    assert code == 0
    recorded = rows(db, f"SELECT r.status, m.value FROM replications r JOIN metrics m ON m.rep_pk = r.pk WHERE m.name = '{metric}'")
    assert len(recorded) == 2 * (2 if "cnn" in study else 1) and {r[0] for r in recorded} == {"done"}
    assert {json.loads(c[0])["dataset"] for c in rows(db, "SELECT config FROM replications")} == {"cifar10"}


@needs_mnist
def test_mnist_cnn_study_runs_on_the_real_data(tmp_path):
    db = tmp_path / "h.db"
    code = run(
        "studies/mnist_cnn.py", "--db", f"sqlite:///{db}", "--data-dir", MNIST_DIR, "-q", "arch=8-8", "placement=all",
        "lam=0,1e-2", "seed=0", "train.max_epochs=1", "data.n_train=1000", "data.n_val=300",
    )
    assert code == 0
    accs = rows(db, "SELECT value FROM metrics WHERE name = 'val_acc'")
    assert len(accs) == 2 and all(a[0] > 0.3 for a in accs)  # one epoch on 1000 digits: well above chance


@needs_mnist
def test_keras_style_float32_total_monitor_is_a_constant_offset_while_det_underflows(tmp_path):
    """monitor=total_float32 adds λ·1/(|det W|+ε) computed in float32, as a Keras model's
    add_loss would: while |det W| of the MNIST encoder underflows float32 the term is the
    constant λ/ε, so early stopping behaves exactly as with the task loss alone."""
    db = tmp_path / "h.db"
    code = run(
        "studies/mnist_autoencoder.py", "--db", f"sqlite:///{db}", "--data-dir", MNIST_DIR, "-q", "latent=80",
        "lam=1e-3", "seed=0", "train.monitor=task,total_float32", "train.max_epochs=4", "train.patience=1",
        "data.n_train=1000", "data.n_val=300",
    )
    assert code == 0
    got = rows(
        db,
        "SELECT json_extract(r.config, '$.\"train.monitor\"'), m.name, m.value FROM replications r "
        "JOIN metrics m ON m.rep_pk = r.pk WHERE m.name IN ('best_epoch', 'stop_epoch', 'val_mse', 'logdet_mean')",
    )
    by = {(monitor, name): value for monitor, name, value in got}
    assert by[("total_float32", "logdet_mean")] < -104  # far below float32's smallest subnormal, e^-103.3
    for name in ("best_epoch", "stop_epoch", "val_mse"):
        assert by[("task", name)] == pytest.approx(by[("total_float32", name)], rel=1e-6)
