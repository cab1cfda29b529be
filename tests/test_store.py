"""Round trips through the real SQLite store."""

import math
import re
import sqlite3
from contextlib import closing

import pytest

from harness.store import Store, StoreError
from harness.study import Study


def make_result(rep, status="done", **metrics):
    return {
        "id": rep.id,
        "study": rep.study,
        "status": status,
        "error": None if status != "failed" else "Traceback...\nValueError: boom",
        "config": {k: list(v) if isinstance(v, tuple) else v for k, v in rep.params().items()},
        "metrics": metrics,
        "history": [
            {"epoch": 1, "train_loss": 0.5, "val_loss": 0.6, "entropy_loss": 3.0, "train_acc": None, "val_acc": None},
            {"epoch": 2, "train_loss": 0.4, "val_loss": 0.5, "entropy_loss": 2.0, "train_acc": None, "val_acc": None},
        ],
        "profiles": [
            {"stage": "init", "layer": 1, "name": "encoder", "kind": "dense", "filter": 0, "value": -40.0},
            {"stage": "final", "layer": 1, "name": "encoder", "kind": "dense", "filter": 0, "value": -10.0},
        ],
        "device": "cpu",
        "host": "test",
        "started_at": "2026-01-01T00:00:00",
        "finished_at": "2026-01-01T00:00:01",
        "wall_s": 1.5,
        "versions": {"harness": "0.1.0", "torch": "2.x", "git_commit": "abc"},
    }


@pytest.fixture
def study():
    return Study("st", settings={"latent": 4, "arch": (8, 16)}, grid={"lam": [0.0, 1.0], "seed": [0, 1]})


@pytest.fixture
def store(tmp_path):
    return Store(f"sqlite:///{tmp_path}/sub/h.db")


def test_record_and_read_back_one_row_per_replication(store, study):
    store.record_study(study)
    reps = study.replications()
    for i, rep in enumerate(reps):
        store.record(make_result(rep, val_mse=0.01 * i, stop_epoch=2.0))
    frame = store.frame("st")
    assert list(frame["id"]) == [r.id for r in reps]
    assert list(frame["val_mse"]) == pytest.approx([0.0, 0.01, 0.02, 0.03])
    assert list(frame["lam"]) == [0.0, 0.0, 1.0, 1.0] and list(frame["seed"]) == [0, 1, 0, 1]
    assert set(frame["arch"]) == {"8-16"}
    assert frame.loc[0, "train.batch_size"] == 32 and frame.loc[0, "device"] == "cpu"
    assert frame.loc[0, "git_commit"] == "abc" and frame.loc[0, "wall_s"] == 1.5
    assert store.ids("st") == {r.id for r in reps}


def test_history_and_profiles_round_trip(store, study):
    store.record_study(study)
    rep = study.replications()[0]
    store.record(make_result(rep, val_mse=0.1))
    history = store.history("st")
    assert list(history["epoch"]) == [1, 2] and list(history["val_loss"]) == [0.6, 0.5]
    assert history["train_acc"].isna().all()
    profiles = store.profiles("st")
    assert list(profiles["stage"]) == ["final", "init"] and list(profiles["value"]) == [-10.0, -40.0]


def test_rerecording_replaces_and_failed_is_not_finished(store, study):
    store.record_study(study)
    rep = study.replications()[0]
    store.record(make_result(rep, status="failed"))
    assert store.ids("st") == set() and store.ids("st", ["failed"]) == {rep.id}
    store.record(make_result(rep, val_mse=0.2))
    frame = store.frame("st")
    assert len(frame) == 1 and frame.loc[0, "status"] == "done" and frame.loc[0, "val_mse"] == 0.2
    assert len(store.history("st")) == 2  # the failed attempt's history is gone
    assert store.counts("st") == {"done": 1}


def test_nan_and_missing_metrics_read_as_nan(store, study):
    store.record_study(study)
    a, b = study.replications()[:2]
    store.record(make_result(a, status="diverged", stop_epoch=3.0, val_mse=float("nan")))
    store.record(make_result(b, val_mse=0.1, stop_epoch=9.0))
    frame = store.frame("st").set_index("id")
    assert math.isnan(frame.loc[a.id, "val_mse"]) and frame.loc[a.id, "status"] == "diverged"
    assert frame.loc[b.id, "stop_epoch"] == 9.0


def test_study_definition_round_trip_and_unknown_study(store, study):
    store.record_study(study)
    definition = store.study_definition("st")
    assert definition["grid"] == {"lam": [0.0, 1.0], "seed": [0, 1]}
    assert definition["settings"]["arch"] == [8, 16] and definition["settings"]["entropy.eps"] == 1e-4
    assert store.studies() == ["st"]
    with pytest.raises(StoreError, match="no study named 'nope'"):
        store.study_definition("nope")
    assert store.frame("nope").empty


def test_sqlite_runs_in_wal_mode_and_is_intact(store, study, tmp_path):
    store.record_study(study)
    store.record(make_result(study.replications()[0], val_mse=0.1))
    with sqlite3.connect(tmp_path / "sub" / "h.db") as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"



def test_the_wal_stays_bounded_over_many_small_writes(store, study, tmp_path):
    """Issue #30.5: SQLite checkpoints a WAL at 1000 pages (4 MB) by default and never
    shrinks it, so a run's small writes (here 1500 claim renewals, a heartbeat's) left a
    4 MB WAL beside a database of a few pages. Checkpointed sooner and truncated after a
    checkpoint, it stays near WAL_LIMIT_BYTES (512 KiB), on every connection."""
    from harness.store import Claimant
    from harness.store.engine import WAL_CHECKPOINT_PAGES, WAL_LIMIT_BYTES

    wal = tmp_path / "sub" / "h.db-wal"
    store.record_study(study)
    claimant = Claimant.this_process()
    assert store.claim("st", [study.replications()[0].id], claimant, lease_s=60)
    peak = 0
    for _ in range(1500):
        store.renew(claimant, 60)
        peak = max(peak, wal.stat().st_size)
    assert WAL_LIMIT_BYTES // 2 < peak < 1024 * 1024  # it filled up to a checkpoint, and no further
    with store.engine.connect() as conn:
        pragma = conn.connection.driver_connection.execute
        assert pragma("PRAGMA journal_size_limit").fetchone()[0] == WAL_LIMIT_BYTES
        assert pragma("PRAGMA wal_autocheckpoint").fetchone()[0] == WAL_CHECKPOINT_PAGES
    with sqlite3.connect(tmp_path / "sub" / "h.db") as conn:  # nothing lost to the checkpoints
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert conn.execute("SELECT count(*) FROM claims").fetchone()[0] == 1

def test_bad_url_is_a_one_line_error():
    for url in ("://x", "a b://c", "sqlite://:x:/"):
        with pytest.raises(StoreError, match="bad database URL"):
            Store(url)
    with pytest.raises(StoreError, match="cannot open database"):
        Store("postgresql+nosuchdriver://u@localhost/x")


def test_status_by_name_counts_against_the_stored_grid_without_excluded_points(store):
    from harness.schedule import study_status

    study = Study("ex", settings={"latent": 4}, grid={"lam": [0.0, 1.0], "seed": [0, 1]}, exclude=[{"lam": 1.0, "seed": 1}])
    store.record_study(study)
    store.record(make_result(study.replications()[0], val_mse=0.1))
    status = study_status(store, "ex")
    assert (status.grid, status.done, status.remaining) == (3, 1, 2)


def test_status_estimates_the_training_time_left_from_recorded_cells(store):
    """Each remaining replication counts the mean wall time of its recorded cell (config
    but seed); a λ not recorded yet counts that of its config but seed and λ."""
    from harness.schedule import format_status, study_status

    study = Study("eta", settings={"latent": 4, "arch": (8, 16)}, grid={"lam": [0.0, 1.0, 2.0], "seed": [0, 1, 2]})
    reps = {(r.config.lam, r.config.seed): r for r in study.replications()}
    store.record_study(study)
    for (lam, seed), wall in {(0.0, 0): 10.0, (0.0, 1): 20.0, (1.0, 0): 40.0}.items():
        store.record({**make_result(reps[lam, seed], val_mse=0.1), "wall_s": wall})
    status = study_status(store, "eta")
    cell0, cell1, any_lam = 15.0, 40.0, (10.0 + 20.0 + 40.0) / 3
    assert status.remaining == 6
    assert status.left_s == pytest.approx(1 * cell0 + 2 * cell1 + 3 * any_lam)
    assert format_status([status]).splitlines()[1].split()[-1] == "0:02:45"
    # a width never trained has nothing to go by
    wider = Study("eta", settings={"latent": 9, "arch": (8, 16)}, grid={"lam": [0.0], "seed": [0]})
    store.record_study(wider)
    assert study_status(store, "eta").left_s is None


def test_machine_descriptions_are_kept_per_host(store, study, tmp_path):
    """A result's machine description is saved under its host; a later one replaces it;
    the table appears in a database made before it existed."""
    store.record_study(study)
    reps = study.replications()
    store.record({**make_result(reps[0]), "machine": {"cpu": "A", "cpus": 2, "gpus": []}})
    store.record({**make_result(reps[1]), "host": "gpu-box", "machine": {"cpu": "B", "cpus": 16, "gpus": ["H200"]}})
    store.record(make_result(reps[2]))  # no description: the host's stays
    assert store.hosts() == {"test": {"cpu": "A", "cpus": 2, "gpus": []},
                             "gpu-box": {"cpu": "B", "cpus": 16, "gpus": ["H200"]}}
    store.record_host("test", {"cpu": "A2"})
    assert store.hosts()["test"] == {"cpu": "A2"}
    old = tmp_path / "old.db"
    with sqlite3.connect(old) as conn:
        conn.execute("CREATE TABLE studies (name VARCHAR(200) PRIMARY KEY, definition TEXT NOT NULL, updated_at VARCHAR(40) NOT NULL)")
    assert Store(f"sqlite:///{old}").hosts() == {}


def test_a_plain_path_is_a_sqlite_file(tmp_path, study):
    """`harness analyze --db results/x/harness.db`: a path works as well as a URL."""
    Store(str(tmp_path / "plain.db")).record_study(study)
    assert Store(f"sqlite:///{tmp_path}/plain.db").studies() == ["st"]


# The per-replication tables as versions before WITHOUT ROWID created them (rowid tables
# with their primary key kept again in an index), for compact's upgrade.
_ROWID_DDL = [
    "CREATE TABLE metrics (rep_pk INTEGER NOT NULL, name VARCHAR(64) NOT NULL, value FLOAT, PRIMARY KEY (rep_pk, name), "
    "FOREIGN KEY(rep_pk) REFERENCES replications (pk) ON DELETE CASCADE)",
    "CREATE TABLE history (rep_pk INTEGER NOT NULL, epoch INTEGER NOT NULL, name VARCHAR(64) NOT NULL, value FLOAT, "
    "PRIMARY KEY (rep_pk, epoch, name), FOREIGN KEY(rep_pk) REFERENCES replications (pk) ON DELETE CASCADE)",
    "CREATE TABLE profiles (rep_pk INTEGER NOT NULL, stage VARCHAR(16) NOT NULL, layer INTEGER NOT NULL, "
    '"filter" INTEGER NOT NULL, name VARCHAR(200), kind VARCHAR(16), value FLOAT, PRIMARY KEY (rep_pk, stage, layer, "filter"), '
    "FOREIGN KEY(rep_pk) REFERENCES replications (pk) ON DELETE CASCADE)",
]


def _table_sql(path) -> dict[str, str]:
    with closing(sqlite3.connect(path)) as conn:
        return dict(conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'table'"))


def test_per_replication_tables_keep_their_key_once(store, study, tmp_path):
    store.record_study(study)
    tables = _table_sql(tmp_path / "sub" / "h.db")
    for name in ("metrics", "epochs", "profiles"):
        assert tables[name].rstrip().endswith("WITHOUT ROWID"), tables[name]
    assert "history" not in tables  # the older per-quantity layout is never created
    with sqlite3.connect(tmp_path / "sub" / "h.db") as conn:
        indexes = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")]
    assert not [i for i in indexes if any(t in i for t in ("metrics", "epochs", "profiles"))]


def _as_older_versions_wrote_it(path) -> None:
    """Move the epochs rows into the older history table, a row per non-missing quantity."""
    from harness.store import EPOCH_COLUMNS

    with closing(sqlite3.connect(path)) as conn, conn:
        for c in EPOCH_COLUMNS:
            conn.execute(f"INSERT INTO history SELECT rep_pk, epoch, '{c}', {c} FROM epochs WHERE {c} IS NOT NULL")
        conn.execute("DELETE FROM epochs")


def test_history_is_one_row_per_epoch_with_a_column_per_quantity(store, study, tmp_path):
    store.record_study(study)
    rep = study.replications()[0]
    result = make_result(rep)
    result["history"][1].update(val_acc=0.75, val_iou=float("nan"))
    store.record(result)
    with closing(sqlite3.connect(tmp_path / "sub" / "h.db")) as conn:
        rows = conn.execute("SELECT epoch, train_loss, val_loss, entropy_loss, train_acc, val_acc, val_iou FROM epochs").fetchall()
    assert rows == [(1, 0.5, 0.6, 3.0, None, None, None), (2, 0.4, 0.5, 2.0, None, 0.75, None)]
    history = store.history("st")
    assert history["val_acc"].tolist()[1] == 0.75 and math.isnan(history["val_iou"][1])
    result["history"][0]["lr"] = 0.1
    with pytest.raises(ValueError, match="no history column for lr"):
        store.record(result)
    assert store.history("st").equals(history)  # the refused write changed nothing


def test_compact_upgrades_an_older_file_and_loses_nothing(tmp_path, study, capsys):
    """An older database: its rowid tables are rebuilt and its per-quantity history moves
    to a row per epoch; every row reads back the same before and after, the file shrinks
    to one file (no WAL beside it), and a later run records into it as before."""
    from harness.store import compact

    path = tmp_path / "old.db"
    with closing(sqlite3.connect(path)) as conn:
        for ddl in _ROWID_DDL:
            conn.execute(ddl)
    store = Store(str(path))
    store.record_study(study)
    reps = study.replications()
    for i, rep in enumerate(reps[:3]):
        store.record(make_result(rep, val_mse=0.01 * i, stop_epoch=2.0))
    _as_older_versions_wrote_it(path)
    store.record(make_result(reps[3], val_mse=0.5))  # a newer run beside the older rows
    store.record(make_result(reps[1], val_mse=0.2))  # a retry replaces the older rows
    frame, history, profiles = store.frame("st"), store.history("st"), store.profiles("st")
    store.engine.dispose()
    assert history["val_loss"].tolist() == [0.6, 0.5] * 4 and history["train_acc"].isna().all()
    with closing(sqlite3.connect(path)) as conn:
        assert conn.execute("SELECT count(*) FROM history").fetchone()[0] == 12  # 2 reps x 2 epochs x 3
        assert conn.execute("SELECT count(*) FROM epochs").fetchone()[0] == 4

    before, after, upgraded = compact(str(path))
    assert upgraded == ["metrics rebuilt without rowids", "profiles rebuilt without rowids", "history moved to one row per epoch"]
    assert after <= before
    tables = _table_sql(path)
    assert "history" not in tables
    assert all(tables[t].rstrip().endswith("WITHOUT ROWID") for t in ("metrics", "epochs", "profiles"))
    assert not (tmp_path / "old.db-wal").exists()
    with closing(sqlite3.connect(path)) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
        assert conn.execute("SELECT count(*) FROM epochs").fetchone()[0] == 8

    again = Store(f"sqlite:///{path}")
    assert again.frame("st").equals(frame)
    assert again.history("st").equals(history) and len(history) == 8
    assert again.profiles("st").equals(profiles) and len(profiles) == 8
    again.record(make_result(reps[0], val_mse=0.7))  # a retried replication replaces its epochs
    assert again.history("st").shape[0] == 8
    again.engine.dispose()
    assert compact(str(path))[2] == []  # already compact: nothing to upgrade
    from harness.cli import main

    capsys.readouterr()
    assert main(["compact", "--db", str(path)]) == 0
    assert re.fullmatch(r".*old\.db: \d+\.\d MiB -> \d+\.\d MiB\n", capsys.readouterr().out)


def test_compact_drops_the_claims_of_dead_runs(store, study, tmp_path):
    """A run killed mid-training leaves its claims; the compacted file carries none."""
    from harness.store import Claimant, compact

    store.record_study(study)
    dead = Claimant(key="gone", host=Claimant.this_process().host, pid=2**22 + 1)
    store.claim("st", [r.id for r in study.replications()[:2]], dead, lease_s=600)
    assert len(store.claims("st")) == 2
    store.engine.dispose()
    compact(str(tmp_path / "sub" / "h.db"))
    assert Store(str(tmp_path / "sub" / "h.db"), reader=True).claims("st") == []


def test_compact_refuses_a_database_in_use_or_missing(store, study, tmp_path):
    from harness.cli import main
    from harness.store import Claimant, compact

    store.record_study(study)
    store.claim("st", [study.replications()[0].id], Claimant.this_process(), lease_s=600)
    with pytest.raises(StoreError, match="a run is training st"):
        compact(str(tmp_path / "sub" / "h.db"))
    assert store.claims("st")  # the claim is untouched
    assert main(["compact", "--db", str(tmp_path / "none.db")]) == 2
    assert not (tmp_path / "none.db").exists()
    with pytest.raises(StoreError, match="works on SQLite files"):
        compact("postgresql://u@localhost/x")


def _committed_database(path, study):
    """A database as one is committed: one result recorded, then `harness compact`."""
    from harness.store import compact

    writer = Store(str(path))
    writer.record_study(study)
    writer.record(make_result(study.replications()[0], val_mse=0.1))
    writer.engine.dispose()
    compact(str(path))
    return path


def _digest(path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_reader_needs_the_database_and_leaves_its_file_as_it_is(tmp_path, study):
    """`harness status/analyze --db typo.db` is an error that creates nothing; reading a
    compacted (committed) database does not change a byte of it."""
    from harness.cli import main

    missing = tmp_path / "nope" / "typo.db"
    with pytest.raises(StoreError, match="no database at .*typo.db"):
        Store(str(missing), reader=True)
    for command in ("status", "analyze"):
        assert main([command, "--db", str(missing)]) == 2
    assert not missing.parent.exists()

    path = _committed_database(tmp_path / "results.db", study)
    digest = _digest(path)
    reader = Store(str(path), reader=True)
    assert reader.frame("st")["val_mse"].tolist() == [0.1] and len(reader.history("st")) == 2
    assert reader.hosts() == {} and reader.counts("st") == {"done": 1}
    reader.engine.dispose()
    assert main(["status", "--db", str(path)]) == 0
    assert _digest(path) == digest
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.db"]  # no -wal, -shm left


def test_a_store_that_only_reads_leaves_a_committed_database_as_it_is(tmp_path, study):
    """The README's notebook recipe, `Store(url).frame(study)`, opens the store as a
    writer would; until it records something the file (a compacted one: no WAL) keeps
    every byte, its journal mode included. Its first write switches the file to WAL."""
    path = _committed_database(tmp_path / "results.db", study)
    digest = _digest(path)

    store = Store(str(path))
    assert store.frame("st")["val_mse"].tolist() == [0.1] and len(store.history("st")) == 2
    assert store.studies() == ["st"]
    store.engine.dispose()
    assert _digest(path) == digest
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.db"]

    store = Store(str(path))
    store.record(make_result(study.replications()[1], val_mse=0.2))
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert sorted(store.frame("st")["val_mse"].tolist()) == [0.1, 0.2]
    store.engine.dispose()


def test_a_file_without_the_stopping_columns_reads_as_nan_and_gets_them_at_its_first_write(tmp_path, study):
    """A database written before the epochs table had monitored/monitor_task/monitor_term
    (the committed E1 file): a reader leaves it byte for byte and reads NaN there; the
    first record adds the columns and keeps every older row."""
    path = tmp_path / "old.db"
    store = Store(str(path))
    store.record_study(study)
    first, second = study.replications()[:2]
    store.record(make_result(first))
    store.engine.dispose()
    with closing(sqlite3.connect(path)) as conn:  # the epochs table as an older version made it
        for column in ("monitored", "monitor_task", "monitor_term"):
            conn.execute(f"ALTER TABLE epochs DROP COLUMN {column}")
        conn.commit()
    before = path.read_bytes()
    history = Store(str(path), reader=True).history("st")
    assert path.read_bytes() == before
    assert history["monitored"].isna().all() and list(history["val_loss"]) == [0.6, 0.5]
    result = make_result(second)
    result["history"][0].update(monitored=0.6, monitor_task=0.5, monitor_term=0.1)
    Store(str(path)).record(result)
    history = Store(str(path), reader=True).history("st").set_index("id")
    assert history.loc[first.id, "monitored"].isna().all() and list(history.loc[first.id, "val_loss"]) == [0.6, 0.5]
    assert history.loc[second.id, "monitor_term"].tolist()[0] == 0.1


def test_a_database_password_never_appears_in_output(tmp_path, capsys):
    """A PostgreSQL URL's password is masked in every message (SQLAlchemy's
    render_as_string(hide_password=True)): here, the connection error of a server that is
    not there, and the run summary's "results in" line."""
    from harness.store import masked_url

    url = "postgresql+psycopg://harness:s3cr3t-pw@127.0.0.1:1/none"
    assert masked_url(url) == "postgresql+psycopg://harness:***@127.0.0.1:1/none"
    assert "s3cr3t" not in masked_url("not a url://harness:s3cr3t-pw@host/db")
    with pytest.raises(StoreError) as err:
        Store(url)
    assert "s3cr3t" not in str(err.value) and "harness:***@" in str(err.value)
    store = Store(f"sqlite:///{tmp_path}/h.db")
    assert store.shown_url == f"sqlite:///{tmp_path}/h.db"
