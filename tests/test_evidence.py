"""The committed evidence (results/<study>/): E1 on MNIST (mnist_autoencoder) and E3's
protocol on MNIST (mnist_cnn). Each database still belongs to this code, and `harness
analyze` regenerates the committed report from it."""

import json
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from harness.analysis.report import analyze
from harness.store import Store
from harness.study import Replication, build_config, load_study

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results"

# study -> the override lists of the grids its committed runs asked for (README, Evidence)
GRIDS = {
    "mnist_autoencoder": [
        ["train.monitor=task,total_float32"],
        # the protocol arm: what a tf.keras model would have done, at two ε
        ["latent=80,180", "protocol=keras", "entropy.eps=1e-4,1e-7"],
    ],
    "mnist_cnn": [["arch=32,32-32,32-32-32"]],  # Table 1's width-32 architectures
}
AT_LEAST = {"mnist_autoencoder": 296, "mnist_cnn": 1}


@pytest.fixture(params=sorted(GRIDS))
def committed(request):
    db = RESULTS / request.param / "harness.db"
    if not db.is_file():
        pytest.fail(f"{db} is missing: the {request.param} evidence is part of the repository")
    if db.with_name("harness.db-wal").exists():
        pytest.skip("a run is writing into the evidence database (its report is regenerated when it stops)")
    return request.param, db


def test_every_recorded_replication_keeps_its_id(committed):
    """A new setting must not change the id of a replication trained before it existed:
    the grid resumes from these ids, and a changed id would train them all again."""
    name, db = committed
    with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        rows = conn.execute("SELECT study, id, config FROM replications").fetchall()
    assert len(rows) >= AT_LEAST[name]
    changed = [rid for study, rid, config in rows if Replication(study, build_config(json.loads(config))).id != rid]
    assert changed == []
    study = load_study(ROOT / "studies" / f"{name}.py")
    grid = {r.id for overrides in GRIDS[name] for r in study.with_overrides(overrides).replications()}
    assert {rid for _, rid, _ in rows} <= grid  # every recorded replication is a point of the study's grids


def test_the_committed_database_is_compacted(committed):
    """Committed as `harness compact` leaves a file: one file in today's layout, results only."""
    _, db = committed
    with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
        assert conn.execute("SELECT count(*) FROM claims").fetchone()[0] == 0
        assert conn.execute("PRAGMA freelist_count").fetchone()[0] == 0
    assert "epochs" in tables and "history" not in tables  # compact moved the older history


def test_analyze_regenerates_the_committed_tables(committed, tmp_path):
    name, db = committed
    evidence = db.parent
    analyze(Store(str(db), reader=True), [name], tmp_path)
    fresh = tmp_path / name
    tables = sorted(p.name for p in evidence.iterdir() if p.suffix in (".csv", ".tex", ".md"))
    assert "report.md" in tables and len(tables) > 20
    assert sorted(p.name for p in fresh.iterdir() if p.suffix in (".csv", ".tex", ".md")) == tables
    for table in tables:
        old, new = (evidence / table).read_text(), (fresh / table).read_text()
        if table == "report.md":  # its one line with the time it was generated
            old, new = ("\n".join(line for line in text.splitlines() if not line.startswith("_Generated ")) for text in (old, new))
        assert new == old, f"{table} differs from the committed one"
