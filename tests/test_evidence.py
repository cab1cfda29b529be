"""The committed evidence (results/<study>/): E1 on MNIST (mnist_autoencoder) and E3's
protocol on MNIST (mnist_cnn). Each database still belongs to this code, and `harness
analyze` regenerates the committed report from it."""

import json
import sqlite3
from contextlib import closing
from pathlib import Path

import numpy as np
import pytest

from harness.analysis.report import analyze
from harness.store import Store
from harness.study import Replication, build_config, load_study
from harness.training.stopping import replay

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


def test_every_stopping_epoch_of_the_keras_arm_recomputes_from_its_history():
    """#23: the protocol arm's early stopping replayed on the recorded float32 `monitored`
    gives each replication's recorded stop and best epoch, and `monitored` is the float32
    sum of the recorded task part and term part (to float32 accumulation over the batches)."""
    db = RESULTS / "mnist_autoencoder" / "harness.db"
    with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        reps = conn.execute(
            "SELECT r.pk, r.config, s.value, b.value FROM replications r "
            "JOIN metrics s ON s.rep_pk = r.pk AND s.name = 'stop_epoch' "
            "JOIN metrics b ON b.rep_pk = r.pk AND b.name = 'best_epoch' "
            "WHERE r.status = 'done'").fetchall()
        arm = [(pk, json.loads(c), stop, best) for pk, c, stop, best in reps
               if json.loads(c).get("train.monitor") == "total_float32"
               and json.loads(c).get("entropy.precision") == "float32"]
        assert len(arm) == 280
        for pk, config, stop, best in arm:
            rows = conn.execute("SELECT monitored, monitor_task, monitor_term FROM epochs WHERE rep_pk = ? "
                                "ORDER BY epoch", (pk,)).fetchall()
            monitored = [r[0] for r in rows]
            assert replay(monitored, config["train.patience"], config["train.min_delta"],
                          config["train.max_epochs"]) == (stop, best), config
            batches = -(-10_000 // config["train.batch_size"])  # the 10k MNIST test split
            for value, task, term in rows:
                assert abs(value - float(np.float32(task) + np.float32(term))) <= batches * np.spacing(np.float32(value))


def test_the_sample_report_in_the_docs_is_the_committed_one():
    """docs/analysis.md shows E1's first screen; it must be what the committed report says,
    not an older run's numbers (its links point into results/, the report's at itself)."""
    doc = (ROOT / "docs" / "analysis.md").read_text()
    sample = doc[doc.index("### Verdict\n"):doc.index("## From Python")].strip()
    base = "../results/mnist_autoencoder/"
    as_in_report = sample.replace("### ", "## ").replace(f"]({base}report.md#", "](#").replace(f"]({base}", "](")
    report = (RESULTS / "mnist_autoencoder" / "report.md").read_text()
    assert as_in_report in report
