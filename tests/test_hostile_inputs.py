"""What a user can get wrong, through the CLI: each is refused (or survived) with exit code
2 and one line on stderr, never a traceback, and leaves the database as it was: a reader
never writes, a dry run creates nothing, a run refused for its settings or its data
records nothing, and a run whose database fails mid-sweep keeps what it recorded.

Small and fast: dry runs where nothing needs training, else the quickstart study on
scikit-learn's digits at latent 8, one epoch."""

import hashlib
import os
import shutil
import sqlite3
import subprocess
from contextlib import contextmanager
from pathlib import Path

import pytest

from harness.cli import main

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = str(ROOT / "studies" / "quickstart.py")
TINY = ["latent=8", "train.max_epochs=1"]


def refused(capsys, argv: list[str], *message: str) -> str:
    """Run the CLI: exit 2, one line on stderr holding every ``message``, no traceback."""
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    for part in message:
        assert part in err, err
    return err


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def rows(db: Path, sql: str) -> list[tuple]:
    with sqlite3.connect(db) as conn:
        return conn.execute(sql).fetchall()


@contextmanager
def read_only(path: Path):
    """``path`` (a file or a folder) read-only. Root writes through permissions, so for
    root it is also made immutable (chattr +i), or the test is skipped."""
    mode = path.stat().st_mode
    os.chmod(path, 0o555 if path.is_dir() else 0o444)
    immutable = False
    try:
        if os.geteuid() == 0:
            if not shutil.which("chattr") or subprocess.run(["chattr", "+i", path], capture_output=True).returncode:
                pytest.skip("running as root where chattr +i does not work: nothing is read-only to root")
            immutable = True
        yield path
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", path], check=True)
        os.chmod(path, mode)


@pytest.fixture
def recorded(tmp_path) -> Path:
    """A harness database holding one recorded replication of the quickstart, as a run
    leaves it (written through the store, no training)."""
    from harness.store import Store
    from harness.study import load_study

    study = load_study(QUICKSTART).with_overrides([*TINY, "seed=0", "lam=0"])
    rep = study.replications()[0]
    store = Store(str(tmp_path / "h.db"))
    store.record_study(study)
    store.record({
        "id": rep.id, "study": rep.study, "status": "done", "config": rep.params(),
        "metrics": {"val_mse": 0.05, "stop_epoch": 1.0},
        "history": [{"epoch": 1, "train_loss": 0.06, "val_loss": 0.05}],
        "device": "cpu", "host": "test", "started_at": "2026-01-01T00:00:00", "finished_at": "2026-01-01T00:00:01",
        "wall_s": 1.0,
    })
    store.engine.dispose()
    return tmp_path / "h.db"


# -- readers never write ---------------------------------------------------------------

def test_status_refuses_an_empty_file_and_leaves_it_empty(tmp_path, capsys):
    empty = tmp_path / "empty.db"
    empty.touch()
    refused(capsys, ["status", "--db", str(empty)], "not a harness results database")
    assert empty.stat().st_size == 0 and sorted(p.name for p in tmp_path.iterdir()) == ["empty.db"]


def test_analyze_refuses_another_programs_database_and_leaves_it_as_it_was(tmp_path, capsys):
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE customers (name TEXT)")
    before = digest(other)
    refused(capsys, ["analyze", "--db", str(other), "--out", str(tmp_path / "out")], "not a harness results database")
    assert digest(other) == before and rows(other, "SELECT name FROM sqlite_master") == [("customers",)]
    assert not (tmp_path / "out").exists()


# -- a line, not a traceback -----------------------------------------------------------

def test_run_on_a_read_only_database_is_one_line(recorded, capsys):
    before = digest(recorded)
    with read_only(recorded):
        refused(capsys, ["run", QUICKSTART, "--db", str(recorded), "-q", *TINY, "seed=1", "lam=0"],
                "attempt to write a readonly database")
    assert digest(recorded) == before


def test_analyze_into_a_file_is_one_line(recorded, tmp_path, capsys):
    target = tmp_path / "report.txt"
    target.write_text("mine")
    refused(capsys, ["analyze", "--db", str(recorded), "--out", str(target)], "cannot write the report", "Not a directory")
    assert target.read_text() == "mine"


def test_analyze_into_a_read_only_folder_is_one_line(recorded, tmp_path, capsys):
    folder = tmp_path / "locked"
    folder.mkdir()
    with read_only(folder):
        refused(capsys, ["analyze", "--db", str(recorded), "--out", str(folder)], "cannot write the report", str(folder))
    assert list(folder.iterdir()) == []


@pytest.mark.parametrize("dry_run", [["--dry-run"], []], ids=["dry run", "run"])
def test_a_scheduler_address_that_is_not_one_is_one_line(tmp_path, capsys, dry_run):
    db = tmp_path / "h.db"
    refused(capsys, ["run", QUICKSTART, "--db", str(db), "--scheduler", "not a url", *dry_run],
            "bad --scheduler address 'not a url'", "tcp://host:8786")
    assert not db.exists()


@pytest.mark.parametrize("dry_run", [["--dry-run"], []], ids=["dry run", "run"])
def test_an_analysis_that_is_not_a_spec_is_one_line(tmp_path, capsys, dry_run):
    study = tmp_path / "bad.py"
    study.write_text('from harness.study import Study\n'
                     'study = Study(name="bad", settings={"latent": 8}, analyses=["notaspec"])\n')
    db = tmp_path / "h.db"
    refused(capsys, ["run", str(study), "--db", str(db), *dry_run], "analyses[0] is 'notaspec', not an analysis spec",
            "SignificanceTable")
    assert not db.exists()


def test_a_full_disk_during_a_run_is_one_line_and_keeps_what_was_recorded(tmp_path, capsys, monkeypatch):
    """From the second result on, the database's driver reports a full disk (raised where
    the driver executes: the store sees what SQLite would send). The run stops with one
    line saying what was recorded, and the first result is there in full."""
    from sqlalchemy import event

    from harness.store import Store

    real_record = Store.record
    calls = []

    def disk_full(conn, cursor, statement, *_):
        if statement.lstrip().upper().startswith("INSERT INTO METRICS"):  # the replication's row is written by then
            raise sqlite3.OperationalError("database or disk is full")

    def record(self, result, release=None):
        calls.append(result["id"])
        if len(calls) == 2:
            event.listen(self.engine, "before_cursor_execute", disk_full)
        return real_record(self, result, release)

    monkeypatch.setattr(Store, "record", record)
    db = tmp_path / "h.db"
    refused(capsys, ["run", QUICKSTART, "--db", str(db), "-q", "--workers", "1", "--pack-size", "1", *TINY, "seed=0:2"],
            "database or disk is full", "1 of 4 replications recorded", "run the same command again")
    assert len(calls) == 2  # it stopped at the failure
    assert rows(db, "SELECT id, status FROM replications") == [(calls[0], "done")]
    assert rows(db, "SELECT count(*) FROM metrics")[0][0] > 0 and rows(db, "SELECT count(*) FROM epochs")[0][0] == 1
    assert rows(db, "SELECT count(*) FROM claims") == [(0,)]


# -- settings nobody can mean, refused when the study is read ---------------------------

def refused_setting(capsys, tmp_path, overrides: list[str], *message: str, study: str = QUICKSTART) -> None:
    db = tmp_path / "h.db"
    refused(capsys, ["run", study, "--db", str(db), "--dry-run", *overrides], *message)
    assert not db.exists()


def test_a_learning_rate_that_is_not_positive_is_refused(tmp_path, capsys):
    refused_setting(capsys, tmp_path, ["train.lr=-1"], "train.lr", "must be > 0")


@pytest.mark.parametrize("eps", ["0", "-1e-4"])
def test_an_entropy_eps_that_is_not_positive_is_refused(tmp_path, capsys, eps):
    refused_setting(capsys, tmp_path, [f"entropy.eps={eps}"], "entropy.eps", "must be > 0")


def test_a_negative_patience_is_refused(tmp_path, capsys):
    refused_setting(capsys, tmp_path, ["train.patience=-1"], "train.patience", "must be >= 0")


def test_negative_retries_are_refused(tmp_path, capsys):
    refused_setting(capsys, tmp_path, ["--retries", "-1"], "--retries must be 0 or more")


def test_a_batch_of_1e23_is_refused(tmp_path, capsys):
    study = tmp_path / "big.py"
    study.write_text('from harness.study import Study\n'
                     'study = Study(name="big", settings={"latent": 8, "train.batch_size": 1e23})\n')
    refused_setting(capsys, tmp_path, [], "train.batch_size", "must be >= 1 and <= 10000000", study=str(study))
    refused_setting(capsys, tmp_path, ["train.batch_size=1e23"], "train.batch_size", ">= 1 and <= 10000000")


def test_a_key_given_twice_on_the_command_line_is_refused(tmp_path, capsys):
    refused_setting(capsys, tmp_path, ["train.lr=0.1", "train.lr=0.2"], "train.lr is given twice")


def test_an_unknown_model_is_named_with_the_closest_match(tmp_path, capsys):
    refused_setting(capsys, tmp_path, ["model=nosuch"], "unknown model 'nosuch'", "dense_ae, cnn")
    refused_setting(capsys, tmp_path, ["model=dense-ae"], "unknown model 'dense-ae' (did you mean 'dense_ae'?)")


def test_a_grid_that_is_a_list_is_refused(tmp_path, capsys):
    study = tmp_path / "listgrid.py"
    study.write_text('from harness.study import Study\nstudy = Study(name="listgrid", grid=[1, 2])\n')
    refused_setting(capsys, tmp_path, [], "grid must be a dict", "not a list", study=str(study))


# -- nothing recorded by a run that is refused -----------------------------------------

def test_a_run_refused_for_its_data_records_no_study(tmp_path, capsys):
    """Before, the study's definition was recorded first, and `harness status` then showed
    its replications remaining forever."""
    db = tmp_path / "h.db"
    refused(capsys, ["run", QUICKSTART, "--db", str(db), "data.image_size=32"], "data.image_size")
    refused(capsys, ["run", QUICKSTART, "--db", str(db), "dataset=digitz"], "unknown dataset 'digitz'", "digits")
    assert not db.exists() or rows(db, "SELECT count(*) FROM studies") == [(0,)]
    if db.exists():
        capsys.readouterr()
        assert main(["status", "--db", str(db)]) == 0
        assert "no studies recorded" in capsys.readouterr().out


def test_a_dry_run_creates_nothing(tmp_path, capsys):
    db = tmp_path / "typo" / "h.db"
    assert main(["run", QUICKSTART, "--db", str(db), "--dry-run"]) == 0
    assert "12 replications in the grid, 0 already recorded" in capsys.readouterr().out
    assert list(tmp_path.iterdir()) == []


def test_an_in_memory_database_is_refused(tmp_path, capsys):
    refused(capsys, ["run", QUICKSTART, "--db", "sqlite://", *TINY, "seed=0"], "in memory", "--db results/harness.db")
