"""The committed E1 evidence (results/mnist_autoencoder/): its database still belongs to
this code, and `harness analyze` regenerates the committed report from it."""

import json
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from harness.analysis.report import analyze
from harness.store import Store
from harness.study import Replication, build_config, load_study

ROOT = Path(__file__).resolve().parents[1]
EVIDENCE = ROOT / "results" / "mnist_autoencoder"
DB = EVIDENCE / "harness.db"


@pytest.fixture(scope="module")
def committed():
    if not DB.is_file():
        pytest.fail(f"{DB} is missing: the E1 evidence is part of the repository")
    if DB.with_name("harness.db-wal").exists():
        pytest.skip("a run is writing into the evidence database (its report is regenerated when it stops)")
    return DB


def test_every_recorded_replication_keeps_its_id(committed):
    """A new setting must not change the id of a replication trained before it existed:
    the grid resumes from these ids, and a changed id would train them all again."""
    with closing(sqlite3.connect(f"file:{committed}?mode=ro", uri=True)) as conn:
        rows = conn.execute("SELECT study, id, config FROM replications").fetchall()
    assert len(rows) >= 296
    changed = [rid for study, rid, config in rows if Replication(study, build_config(json.loads(config))).id != rid]
    assert changed == []
    study = load_study(ROOT / "studies" / "mnist_autoencoder.py")
    grid = {r.id for r in study.with_overrides(["train.monitor=task,total_float32"]).replications()}
    # the protocol arm (README, Evidence): what a tf.keras model would have done, at two ε
    grid |= {r.id for r in study.with_overrides(["latent=80,180", "protocol=keras", "entropy.eps=1e-4,1e-7"]).replications()}
    assert {rid for _, rid, _ in rows} <= grid  # every recorded replication is a point of the study's grids


def test_the_committed_database_is_compacted(committed):
    """Committed as `harness compact` leaves a file: one file in today's layout, results only."""
    with closing(sqlite3.connect(f"file:{committed}?mode=ro", uri=True)) as conn:
        tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
        assert conn.execute("SELECT count(*) FROM claims").fetchone()[0] == 0
        assert conn.execute("PRAGMA freelist_count").fetchone()[0] == 0
    assert "epochs" in tables and "history" not in tables  # compact moved the older history


def test_analyze_regenerates_the_committed_tables(committed, tmp_path):
    analyze(Store(str(committed), reader=True), ["mnist_autoencoder"], tmp_path)
    fresh = tmp_path / "mnist_autoencoder"
    tables = sorted(p.name for p in EVIDENCE.iterdir() if p.suffix in (".csv", ".tex", ".md"))
    assert "report.md" in tables and len(tables) > 50
    assert sorted(p.name for p in fresh.iterdir() if p.suffix in (".csv", ".tex", ".md")) == tables
    for name in tables:
        old, new = (EVIDENCE / name).read_text(), (fresh / name).read_text()
        if name == "report.md":  # its one line with the time it was generated
            old, new = ("\n".join(line for line in text.splitlines() if not line.startswith("_Generated ")) for text in (old, new))
        assert new == old, f"{name} differs from the committed one"
