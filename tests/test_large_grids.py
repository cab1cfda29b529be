"""Issue #30.3: making large grids fast changes no replication id, and a grid over
CONFIRM_OVER replications asks before training when stdin is a terminal."""

import hashlib
import io
import sqlite3
from pathlib import Path

import pytest

from harness.schedule import RunOptions, run_study
from harness.study import Study, load_study

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("overrides, n, first, last, digest", [
    (["train.monitor=task,total_float32"], 1820, "f325cae9b4dc94fd", "286a290ece41ff5d", "16d90f52eb3919af"),
    (["latent=80,180", "protocol=keras", "entropy.eps=1e-4,1e-7"], 280, "71cd60117c6edd87", "07dc17b0d97ccd59", "ac9971dd8e2e3249"),
])
def test_replication_ids_are_unchanged(overrides, n, first, last, digest):
    ids = [r.id for r in load_study(ROOT / "studies/mnist_autoencoder.py").with_overrides(overrides).replications()]
    assert (len(ids), ids[0], ids[-1]) == (n, first, last)
    assert hashlib.sha256(" ".join(ids).encode()).hexdigest()[:16] == digest


class Terminal(io.StringIO):
    def isatty(self):
        return True


def tiny():
    return Study(name="tiny", settings={"dataset": "digits", "latent": 8, "train.max_epochs": 1}, grid={"seed": [0, 1]})


@pytest.mark.parametrize("stdin, yes, trained", [(Terminal("n\n"), False, 0), (Terminal("y\n"), False, 2),
                                                 (Terminal(""), True, 2), (io.StringIO(""), False, 2)])
def test_a_large_grid_asks_first_on_a_terminal(tmp_path, monkeypatch, stdin, yes, trained):
    run_module = __import__("harness.schedule.run", fromlist=["CONFIRM_OVER"])
    monkeypatch.setattr(run_module, "CONFIRM_OVER", 1)  # "large": over one replication
    monkeypatch.setattr("sys.stdin", stdin)
    db = tmp_path / "x.db"
    code = run_study(tiny(), f"sqlite:///{db}", options=RunOptions(log="quiet", yes=yes))
    assert code == (1 if trained == 0 else 0)
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM replications").fetchone()[0] == trained
