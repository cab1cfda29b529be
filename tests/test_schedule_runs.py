"""Real tiny runs of `harness run` (the quickstart study on scikit-learn digits, a few
epochs, latent 8): killed with SIGKILL, interrupted with Ctrl-C, run twice at once against
one SQLite file, and run on every backend; the database is read back with plain sqlite3."""

import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.cli import main
from harness.store import Claimant, Store
from harness.study import load_study

ROOT = Path(__file__).resolve().parents[1]
TINY = ["train.max_epochs=3", "latent=8"]


def harness(db: Path, *args) -> list[str]:
    # one replication per task, so results arrive one by one and an interruption lands
    # between them (packs would finish these tiny grids before the signal); a key of TINY
    # that args give is theirs (a key given twice is refused)
    given = {a.partition("=")[0] for a in args if "=" in a}
    return [
        sys.executable, "-m", "harness.cli", "run", "studies/quickstart.py", "--db", f"sqlite:///{db}",
        *(t for t in TINY if t.partition("=")[0] not in given), "--pack-size", "1", *args,
    ]


def rows(db: Path, sql: str):
    with sqlite3.connect(db) as conn:
        return conn.execute(sql).fetchall()


def count(db: Path, table: str) -> int:
    """Rows in ``table``; 0 before the run has created the database or its tables."""
    if not db.exists():
        return 0
    try:
        return rows(db, f"SELECT count(*) FROM {table}")[0][0]
    except sqlite3.OperationalError:  # the run has not created its tables yet
        return 0


def recorded(db: Path) -> int:
    return count(db, "replications")


def wait_for(db: Path, proc: subprocess.Popen, table: str, n: int = 1, timeout: float = 240) -> int:
    """Until ``table`` holds ``n`` rows or more (the run still going); how many it holds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        have = count(db, table)
        if have >= n:
            return have
        assert proc.poll() is None, proc.communicate()[0]
        time.sleep(0.02)
    raise AssertionError(f"not {n} {table} rows in time")


def wait_for_rows(db: Path, proc: subprocess.Popen) -> int:
    return wait_for(db, proc, "replications")


def check_complete(db: Path, grid: int) -> None:
    """Every grid point exactly once, done, with all its parts; nothing else; no claims."""
    assert rows(db, "PRAGMA integrity_check") == [("ok",)]
    reps = rows(db, "SELECT id, status FROM replications")
    assert len(reps) == grid and len({r[0] for r in reps}) == grid and {r[1] for r in reps} == {"done"}
    assert rows(db, "SELECT count(*) FROM replications r WHERE (SELECT count(*) FROM metrics m WHERE m.rep_pk = r.pk) = 0")[0][0] == 0
    stops = rows(db, "SELECT r.pk, m.value FROM replications r JOIN metrics m ON m.rep_pk = r.pk WHERE m.name = 'stop_epoch'")
    epochs = dict(rows(db, "SELECT rep_pk, count(*) FROM epochs WHERE val_loss IS NOT NULL GROUP BY rep_pk"))
    assert all(epochs[pk] == stop for pk, stop in stops) and len(stops) == grid  # a full history per replication
    for table in ("metrics", "epochs", "profiles"):
        assert rows(db, f"SELECT count(*) FROM {table} WHERE rep_pk NOT IN (SELECT pk FROM replications)")[0][0] == 0
    assert rows(db, "SELECT count(*) FROM claims") == [(0,)]


def kill_group(proc: subprocess.Popen) -> None:
    """Stop what is left of a run started in its own session (orphaned workers)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def workers_exit(proc: subprocess.Popen, timeout: float = 30) -> bool:
    """True once no process is left in the session the run was started in."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.5)
    return False


def test_sigkill_of_the_driver_mid_run_then_rerun_records_every_point_once(tmp_path):
    db = tmp_path / "h.db"
    cmd = harness(db, "seed=0:2", "--workers", "2", "--log", "plain")  # 4 replications
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        wait_for_rows(db, proc)
        os.kill(proc.pid, signal.SIGKILL)  # the driver alone, as the OOM killer or `kill -9 PID` would
        proc.wait()
        before = recorded(db)
        assert before < 4, "the run ended before it could be killed"
        assert workers_exit(proc), "worker processes went on training after their driver died"
        # the dead run's claims are left behind; a rerun on this host takes them over at once
        rerun = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    finally:
        kill_group(proc)
    assert rerun.returncode == 0, rerun.stderr
    assert f"{before} already recorded, {4 - before} to train" in rerun.stdout
    assert f"trained {4 - before}:" in rerun.stdout
    check_complete(db, 4)


def test_two_runs_at_once_share_the_grid_without_duplicates_or_locks(tmp_path):
    db = tmp_path / "h.db"
    cmd = harness(db, "seed=0:2", "--log", "plain")  # 4 replications, one in-process worker each
    procs = [subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    for proc, (out, err) in zip(procs, outs):
        assert proc.returncode == 0, err
        assert "locked" not in err and "Traceback" not in err
    trained = [int(m) for out, _ in outs for m in re.findall(r"trained (\d+):", out)]
    assert sum(trained) == 4  # each replication trained by exactly one of the runs
    check_complete(db, 4)


def test_ctrl_c_lets_what_is_training_finish_starts_nothing_new_and_the_rerun_finishes(tmp_path):
    db = tmp_path / "h.db"
    cmd = harness(db, "seed=0:3", "--workers", "2", "--log", "plain")  # 6 replications, 2 at a time
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        wait_for_rows(db, proc)
        os.killpg(proc.pid, signal.SIGINT)  # what a terminal sends on Ctrl-C: the driver and its workers
        out, err = proc.communicate(timeout=120)
    finally:
        kill_group(proc)
    assert proc.returncode == 130, err
    assert "stopping: the" in err and "Ctrl-C again to stop them now" in err and "Traceback" not in err
    n = recorded(db)
    assert 0 < n < 6 and f"trained {n}:" in out, (out, err)  # what was training when it was asked to stop: recorded
    assert f"stopped on Ctrl-C: {6 - n} of 6 replications not started" in err
    assert rows(db, "SELECT count(*) FROM replications WHERE status != 'done'") == [(0,)]  # nothing cut short
    assert rows(db, "SELECT count(*) FROM claims") == [(0,)]
    rerun = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert f"trained {6 - n}:" in rerun.stdout
    check_complete(db, 6)


def test_ctrl_c_twice_stops_what_is_training_at_once(tmp_path):
    db = tmp_path / "h.db"
    # replications far too long to end by themselves here: 1,000 epochs each, no early stopping
    cmd = harness(db, "seed=0:3", "--workers", "2", "--log", "plain", "train.max_epochs=1000", "train.patience=2000")
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        wait_for(db, proc, "claims", 2)  # both workers are training
        os.killpg(proc.pid, signal.SIGINT)
        time.sleep(1.5)  # the driver says it is stopping (it looks once a second)
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        kill_group(proc)
    assert proc.returncode == 130, err
    assert "stopping: the" in err and "interrupted:" in err and "run the same command again" in err
    assert "Traceback" not in err
    assert recorded(db) < 6  # what was training was stopped, not waited for
    assert rows(db, "SELECT count(*) FROM claims") == [(0,)]


def test_ctrl_c_in_the_in_process_backend_says_so_at_once_and_records_the_replication_training(tmp_path):
    db = tmp_path / "h.db"
    # one worker: the driver trains, so its loop does not come round until the replication ends
    cmd = harness(db, "seed=0:2", "--workers", "1", "--log", "plain", "train.max_epochs=30", "train.patience=100")
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        before = wait_for_rows(db, proc)
        deadline = time.monotonic() + 60
        while rows(db, "SELECT count(*) FROM claims") != [(1,)] and time.monotonic() < deadline:
            time.sleep(0.02)  # the next replication claimed: it trains in a moment, for about 5 s
        time.sleep(0.5)
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=600)  # the replication finishes first: seconds idle, minutes on a loaded machine
    finally:
        kill_group(proc)
    assert proc.returncode == 130, err
    assert "stopping: the 1 replication(s) training finish" in err, err
    # the message came before the replication in flight ended (its result line follows it)
    assert err.index("stopping: the 1") < err.index(f"[{before + 1}/4]"), err
    assert recorded(db) == before + 1 and f"stopped on Ctrl-C: {3 - before} of 4" in err
    assert rows(db, "SELECT count(*) FROM claims") == [(0,)]


METRICS = "SELECT r.id, m.name, m.value FROM replications r JOIN metrics m ON m.rep_pk = r.pk ORDER BY r.id, m.name"
SMALL = ["latent=8", "seed=0", "train.max_epochs=2", "--log", "plain"]


@pytest.fixture(scope="module")
def in_process_metrics(tmp_path_factory):
    db = tmp_path_factory.mktemp("reference") / "h.db"
    assert main(["run", "studies/quickstart.py", "--db", f"sqlite:///{db}", *SMALL, "--workers", "1"]) == 0
    return rows(db, METRICS)


@pytest.mark.parametrize(
    "backend, devices",
    [(["--backend", "processes", "--devices", "cpu,cpu"], {"cpu:0", "cpu:1"}), (["--backend", "dask", "--workers", "2"], {"cpu"})],
)
def test_every_backend_gives_the_in_process_numbers(tmp_path, in_process_metrics, backend, devices):
    db = tmp_path / "h.db"
    assert main(["run", "studies/quickstart.py", "--db", f"sqlite:///{db}", *SMALL, *backend]) == 0
    got = rows(db, METRICS)
    assert [r[:2] for r in got] == [r[:2] for r in in_process_metrics] and len(got) > 10
    assert [r[2] for r in got] == pytest.approx([r[2] for r in in_process_metrics], rel=1e-5, nan_ok=True)
    assert {d for (d,) in rows(db, "SELECT device FROM replications")} <= devices


def test_the_default_layout_is_a_worker_per_core_and_gives_the_in_process_numbers(tmp_path, in_process_metrics, capsys):
    """No --workers: one worker per core (a thread each), no more than there are models to
    train; what they record is what one in-process worker records."""
    db = tmp_path / "h.db"
    capsys.readouterr()
    assert main(["run", "studies/quickstart.py", "--db", f"sqlite:///{db}", *SMALL]) == 0
    models = 2  # λ ∈ {0, 1e-3} at latent 8, seed 0
    workers = min(len(os.sched_getaffinity(0)), models)
    layout = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("backend"))
    if workers > 1:
        assert layout == f"backend processes: {workers} worker(s) on {workers} x cpu, 1 torch thread(s) each", layout
    else:
        assert layout.startswith("backend inprocess: 1 worker(s) on cpu"), layout
    got = rows(db, METRICS)
    assert [r[:2] for r in got] == [r[:2] for r in in_process_metrics]
    assert [r[2] for r in got] == pytest.approx([r[2] for r in in_process_metrics], rel=1e-5, nan_ok=True)


def test_status_counts_the_grid_and_the_time(tmp_path, capsys):
    db = tmp_path / "h.db"
    url = f"sqlite:///{db}"
    assert main(["run", "studies/quickstart.py", "--db", url, "-q", *TINY, "seed=0", "lam=0"]) == 0
    # the study's grid is now 1 point; ask about the full quickstart grid at latent 8 by file
    capsys.readouterr()
    assert main(["status", "--db", url]) == 0
    line = next(l for l in capsys.readouterr().out.splitlines() if l.startswith("quickstart"))
    assert line.split()[1:7] == ["1", "1", "0", "0", "0", "0"]
    # a second narrowed run adds its point to what the study spans, by name
    assert main(["run", "studies/quickstart.py", "--db", url, "-q", *TINY, "seed=1", "lam=0", "--time-limit", "0"]) == 0
    capsys.readouterr()
    assert main(["status", "quickstart", "--db", url]) == 0
    line = next(l for l in capsys.readouterr().out.splitlines() if l.startswith("quickstart"))
    assert line.split()[1:7] == ["2", "1", "0", "0", "1", "0"]
    assert Store(url).study_definition("quickstart")["grid"]["seed"] == [0, 1]
    assert re.fullmatch(r"\d+:\d\d:\d\d", line.split()[7])
    # by file: the file's grid (latent 16, 32), where a live run is training one replication
    study = load_study("studies/quickstart.py")
    Store(url).claim(study.name, [study.replications()[0].id], Claimant.this_process(), lease_s=60)
    assert main(["status", "studies/quickstart.py", "--db", url]) == 0
    line = next(l for l in capsys.readouterr().out.splitlines() if l.startswith("quickstart"))
    assert line.split()[1:7] == ["12", "0", "0", "0", "12", "1"]


def test_plain_logs_show_each_pack_epoch(tmp_path, capsys):
    """A pack trains for long before its first member's result: plain logs show its epochs."""
    db = tmp_path / "h.db"
    assert main(["run", "studies/quickstart.py", "--db", f"sqlite:///{db}", "--workers", "1", *SMALL]) == 0
    err = capsys.readouterr().err
    epochs = re.findall(r"pack of (\d+) \(dataset=digits model=dense_ae latent=8 .*\): epoch (\d) took [\d.]+s, (\d+) still", err)
    assert [e[1] for e in epochs] == ["1", "2"] and int(epochs[0][0]) > 1, err
    assert "HARNESS_PACK_PROGRESS" not in os.environ  # the setting ends with the run
    assert main(["run", "studies/quickstart.py", "--db", f"sqlite:///{tmp_path}/q.db", *SMALL[:-2], "-q"]) == 0
    assert "pack of" not in capsys.readouterr().err


def test_a_monitor_axis_is_trained_once_and_recorded_for_each_monitor(tmp_path, capsys):
    """train.monitor=task,total: each (λ, seed) is one model in the pack, stopped for each
    monitor; the recorded results are the ones each monitor gives in a run of its own."""
    both, alone = tmp_path / "both.db", tmp_path / "alone.db"
    args = ["run", "studies/quickstart.py", "--workers", "1", "--log", "plain", "latent=8", "train.max_epochs=6", "entropy.form=log",
            "train.patience=1", "seed=0,1"]
    assert main([*args, "--db", str(both), "train.monitor=task,total"]) == 0
    err = capsys.readouterr().err
    assert re.search(r"pack of 4 models \(8 replications\)", err), err
    for monitor in ("task", "total"):
        assert main([*args, "--db", str(alone), f"train.monitor={monitor}", "-q"]) == 0
    sql = ("SELECT r.id, m.name, m.value FROM replications r JOIN metrics m ON m.rep_pk = r.pk "
           "WHERE m.name IN ('stop_epoch', 'val_mse', 'best_epoch') ORDER BY r.id, m.name")
    shared, separate = rows(both, sql), rows(alone, sql)
    assert len(shared) == 8 * 3 and [r[:2] for r in shared] == [r[:2] for r in separate]
    assert [r[2] for r in shared] == pytest.approx([r[2] for r in separate], rel=1e-5)
