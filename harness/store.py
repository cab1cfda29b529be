"""The results store: SQLAlchemy schema, recording, and reading back as DataFrames.

Only the driver process writes. Each replication is written in one transaction, with its
final metrics, per-epoch history and entropy profile, so a store never holds a partial
replication and a rerun resumes from what is there. SQLite (the default) runs in WAL
mode from a store's first write on; any SQLAlchemy URL works (``--db postgresql://...``).

Runs that share a database coordinate through claims: a run claims a replication before
it trains it and holds the claim under a lease it keeps renewing; a claim is released in
the transaction that records the final result. Another run skips claimed replications,
and takes over a claim whose lease ran out or whose run is a dead process on this host.
"""

from __future__ import annotations

import json
import os
import re
import socket
import sqlite3
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Iterator

import pandas as pd
import sqlalchemy as sa
from sqlalchemy import event

from harness.errors import UserError

DEFAULT_DB = "sqlite:///results/harness.db"
STATUSES = ("done", "diverged", "failed")
# Statuses that count as finished: a diverged training is an outcome, not something to retry.
FINISHED = ("done", "diverged")

metadata = sa.MetaData()

studies_table = sa.Table(
    "studies",
    metadata,
    sa.Column("name", sa.String(200), primary_key=True),
    sa.Column("definition", sa.Text, nullable=False),  # JSON: settings, grid, analyses, source
    sa.Column("updated_at", sa.String(40), nullable=False),
)

replications_table = sa.Table(
    "replications",
    metadata,
    sa.Column("pk", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("study", sa.String(200), sa.ForeignKey("studies.name"), nullable=False),
    sa.Column("id", sa.String(64), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("error", sa.Text),
    sa.Column("config", sa.Text, nullable=False),  # JSON {dotted key: value}
    sa.Column("device", sa.String(64)),
    sa.Column("host", sa.String(200)),
    sa.Column("started_at", sa.String(40)),
    sa.Column("finished_at", sa.String(40)),
    sa.Column("wall_s", sa.Float),
    sa.Column("harness_version", sa.String(40)),
    sa.Column("torch_version", sa.String(40)),
    sa.Column("git_commit", sa.String(64)),
    sa.UniqueConstraint("study", "id", name="uq_study_replication"),
)

# The per-replication tables are keyed by their primary key alone. On SQLite they are
# WITHOUT ROWID tables: a rowid table keeps that key a second time in an index, which
# doubled the size of a study's per-epoch history (harness compact rewrites older files).
metrics_table = sa.Table(
    "metrics",
    metadata,
    sa.Column("rep_pk", sa.Integer, sa.ForeignKey("replications.pk", ondelete="CASCADE"), primary_key=True),
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("value", sa.Float),
    sqlite_with_rowid=False,
)

# One row per replication and epoch, a column per quantity the training loop records
# (train.py). Named rather than keyed by a name column: a (rep_pk, epoch, name, value) row
# spent more on its name than on its value, and the history was most of a study's file.
# The last three are what early stopping saw (harness.training.stopping): added after the first
# files were written, so an older file gets them at its first write (_add_epoch_columns)
# and reads as NaN where it has none.
EPOCH_COLUMNS = ["train_loss", "val_loss", "entropy_loss", "train_acc", "val_acc", "val_iou",
                 "monitored", "monitor_task", "monitor_term"]
epochs_table = sa.Table(
    "epochs",
    metadata,
    sa.Column("rep_pk", sa.Integer, sa.ForeignKey("replications.pk", ondelete="CASCADE"), primary_key=True),
    sa.Column("epoch", sa.Integer, primary_key=True),
    *(sa.Column(name, sa.Float) for name in EPOCH_COLUMNS),
    sqlite_with_rowid=False,
)

# The per-epoch history as versions before the epochs table wrote it: a row per quantity.
# Never created; read where an older file (or an older version's run) has it, and moved
# into epochs by harness compact.
legacy_metadata = sa.MetaData()
legacy_history_table = sa.Table(
    "history",
    legacy_metadata,
    sa.Column("rep_pk", sa.Integer, sa.ForeignKey(replications_table.c.pk, ondelete="CASCADE"), primary_key=True),
    sa.Column("epoch", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("value", sa.Float),
    sqlite_with_rowid=False,
)

profiles_table = sa.Table(
    "profiles",
    metadata,
    sa.Column("rep_pk", sa.Integer, sa.ForeignKey("replications.pk", ondelete="CASCADE"), primary_key=True),
    sa.Column("stage", sa.String(16), primary_key=True),  # "init" | "final"
    sa.Column("layer", sa.Integer, primary_key=True),
    sa.Column("filter", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(200)),
    sa.Column("kind", sa.String(16)),
    sa.Column("value", sa.Float),
    sqlite_with_rowid=False,
)

# Who is training what right now. No foreign key: a claim is taken before the replication
# has a row, and dropped in the transaction that writes it.
claims_table = sa.Table(
    "claims",
    metadata,
    sa.Column("study", sa.String(200), primary_key=True),
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("owner", sa.String(200), nullable=False),  # Claimant.key of the run
    sa.Column("host", sa.String(200), nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False),  # unix seconds; renewed while the run lives
)

# What each host that trained something is (harness.training.outcome.machine()): the report's "on
# what machine". Keyed by host name; a later description of the same host replaces it.
hosts_table = sa.Table(
    "hosts",
    metadata,
    sa.Column("host", sa.String(200), primary_key=True),
    sa.Column("description", sa.Text, nullable=False),  # JSON: cpu, cpus, memory_gib, gpus, torch threads
    sa.Column("updated_at", sa.String(40), nullable=False),
)


class StoreError(UserError):
    """The database cannot be opened or used: printed as one line."""


class NoDatabase(StoreError):
    """A reader's SQLite file is not there."""


class NotHarnessDatabase(StoreError):
    """A reader's database holds no harness results (an empty file, another program's)."""


# Tables without which a database is not a harness database (a reader refuses it); the
# others came later, and a reader reads an older file that lacks them as empty.
CORE_TABLES = ("studies", "replications")
# Key of the PostgreSQL advisory lock every write transaction holds ("harness" in ASCII).
WRITE_LOCK = 0x68_61_72_6E_65_73_73


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _sqlite_pragmas(dbapi_connection, _record):
    # SQLAlchemy, not the sqlite3 module, starts transactions (see _sqlite_begin).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    # The busy timeout makes concurrent writers wait for each other instead of failing
    # with "database is locked", and makes the switch to WAL (Store._writing) wait too.
    cursor.execute("PRAGMA busy_timeout=60000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _sqlite_begin(conn):
    # A write transaction takes SQLite's write lock at BEGIN. A deferred one that reads
    # first and writes later fails at once with "database is locked" when another process
    # wrote in between (the busy timeout does not apply to that case), which is what two
    # runs claiming replications of one study would do.
    write = conn.get_execution_options().get("harness_write", False)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


@dataclass(frozen=True)
class Claimant:
    """One run, as the owner of its claims."""

    key: str  # host:pid:random, unique per run
    host: str
    pid: int

    @classmethod
    def this_process(cls) -> "Claimant":
        host, pid = socket.gethostname(), os.getpid()
        return cls(f"{host}:{pid}:{os.urandom(4).hex()}", host, pid)


def claim_is_live(host: str, pid: int, expires_at: float, now: float | None = None) -> bool:
    """A claim holds while its lease runs and, on this host, while its process lives (a
    run killed with SIGKILL cannot release its claims; a rerun takes them over at once)."""
    if expires_at <= (time.time() if now is None else now):
        return False
    if host != socket.gethostname():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's
        return True
    return True


def _json_default(value):
    if isinstance(value, tuple):
        return list(value)
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")


class Store:
    """A results database at a SQLAlchemy URL.

    ``reader=True`` (harness status, analyze) opens a database that must exist and leaves
    its file as it is: a mistyped path is an error, not a new empty database, a file that
    is not a harness database is refused (no table is created in it), and a committed
    database stays byte for byte what was committed. Once open, a database that fails
    (a full disk, a read-only file, a lost server) is a StoreError of one line."""

    def __init__(self, url: str = DEFAULT_DB, *, reader: bool = False):
        if "://" not in str(url):  # a plain file path: a SQLite database there
            url = f"sqlite:///{url}"
        self.url = url
        self._epoch_columns_added = False
        try:
            parsed = sa.engine.make_url(url)
        except (sa.exc.ArgumentError, ValueError):
            raise StoreError(f"bad database URL {masked_url(url)!r}; e.g. sqlite:///results/harness.db") from None
        self.shown_url = masked_url(url)  # what output shows: never the password
        sqlite_file = parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:")
        self._wal = sqlite_file and not reader  # to switch at the first write; a reader leaves the mode as it finds it
        if sqlite_file and reader and not Path(parsed.database).is_file():
            raise NoDatabase(f"no database at {parsed.database} (`harness run STUDY --db {self.shown_url}` creates it)")
        if sqlite_file and not reader:
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        self._password = parsed.password or chr(0)
        try:
            self.engine = sa.create_engine(parsed)
            if parsed.get_backend_name() == "sqlite":
                event.listen(self.engine, "connect", _sqlite_pragmas)
                event.listen(self.engine, "begin", _sqlite_begin)
            # a new database, or one from before a table existed, gets its tables; a
            # complete one is not touched until something is recorded. A reader creates
            # nothing: a table an older file lacks reads as empty (self._absent).
            self._absent = _missing_tables(self.engine)
            if reader and self._absent & set(CORE_TABLES):
                self.engine.dispose()
                where = parsed.database if sqlite_file else self.shown_url
                raise NotHarnessDatabase(f"{where} is not a harness results database (no {' or '.join(CORE_TABLES)} "
                                         "table); give the --db that `harness run` recorded to")
            if self._absent and not reader:
                self._create_tables()
        except (sa.exc.SQLAlchemyError, ModuleNotFoundError) as err:
            raise StoreError(f"cannot open database {self.shown_url}: {err.__class__.__name__}: "
                             f"{_first_line(err).replace(self._password, '***')}") from None
        event.listen(self.engine, "handle_error", self._failed)

    def _failed(self, context) -> None:
        """SQLAlchemy's handle_error: an operational failure of the open database (disk
        full, read-only file, locked too long, server gone) is one line, not a traceback."""
        if isinstance(context.sqlalchemy_exception, sa.exc.OperationalError):
            raise StoreError(self._failure(context.original_exception)) from None

    def _failure(self, err: BaseException) -> str:
        return f"database {self.shown_url}: {_first_line(err).replace(self._password, '***')}"

    def _create_tables(self) -> None:
        """Create the tables a new database (or an older one) lacks. Runs starting at once
        on a new database create them once: each takes the write lock first (SQLite's, or
        PostgreSQL's advisory lock: ``_writing``), and create_all checks again under it; a
        database without such a lock, where another run won the race, has them by now."""
        try:
            with self._writing() as conn:
                metadata.create_all(conn)
        except sa.exc.DBAPIError:
            if _missing_tables(self.engine):
                raise
        self._absent = set()

    @contextmanager
    def _writing(self) -> Iterator[sa.Connection]:
        """One write transaction (on SQLite it holds the write lock from its start).

        A writer's SQLite file goes to WAL mode first, so that readers (harness status,
        analyze) work while a run writes. The mode is stored in the file, so it is switched
        here, at a write, and not when a store opens: reading a committed database, by
        ``harness analyze`` or ``Store(url).frame(study)`` in a notebook, leaves its file
        byte for byte as it was.

        On PostgreSQL each write transaction holds an advisory lock (WRITE_LOCK) to its end,
        as SQLite's write lock does: writers take turns, so runs starting at once on a new
        database create its tables once, and read-then-write steps (a study's merged
        definition, a host's row, claims) see each other's commits."""
        with self.engine.connect() as conn:
            if self._wal:  # outside a transaction (SQLite refuses the switch inside one); once:
                try:
                    conn.connection.driver_connection.execute("PRAGMA journal_mode=WAL")  # it stays in the file
                except sqlite3.OperationalError as err:  # a read-only file, a full disk
                    raise StoreError(self._failure(err)) from None
                self._wal = False
            conn.execution_options(harness_write=True)
            with conn.begin():
                if conn.dialect.name == "postgresql":
                    conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": WRITE_LOCK})
                yield conn

    # -- writing (driver only) -------------------------------------------------------
    def record_study(self, study) -> None:
        """Save a study's resolved definition, merged with what earlier runs of it asked
        for (``study.merged_definition``)."""
        from harness.study import merged_definition

        self.record_study_dict(study.definition(), merge=merged_definition)

    def record_study_dict(self, definition: dict[str, Any], merge=None) -> None:
        """Save a study's definition; with ``merge``, ``merge(stored, definition)`` is saved
        instead, read and written in one transaction (concurrent runs lose nothing)."""
        with self._writing() as conn:
            if merge is not None:
                old = conn.execute(sa.select(studies_table.c.definition).where(studies_table.c.name == definition["name"])).scalar()
                definition = merge(json.loads(old) if old else None, definition)
            text = json.dumps(definition, sort_keys=True, default=_json_default)
            updated = conn.execute(
                sa.update(studies_table)
                .where(studies_table.c.name == definition["name"])
                .values(definition=text, updated_at=_now())
            )
            if updated.rowcount == 0:
                conn.execute(sa.insert(studies_table).values(name=definition["name"], definition=text, updated_at=_now()))

    def record(self, result: dict[str, Any], release: Claimant | None = None) -> None:
        """Write one replication's result in one transaction, replacing an earlier
        attempt at the same replication (a retried failure). With ``release``, that run's
        claim on the replication is dropped in the same transaction, so another run sees
        the replication either claimed or recorded, never neither."""
        if result["status"] not in STATUSES:
            raise ValueError(f"unknown status {result['status']!r}")
        versions = result.get("versions", {})
        row = dict(
            study=result["study"],
            id=result["id"],
            status=result["status"],
            error=result.get("error"),
            config=json.dumps(result["config"], sort_keys=True, default=_json_default),
            device=result.get("device"),
            host=result.get("host"),
            started_at=result.get("started_at"),
            finished_at=result.get("finished_at"),
            wall_s=result.get("wall_s"),
            harness_version=versions.get("harness"),
            torch_version=versions.get("torch"),
            git_commit=versions.get("git_commit"),
        )
        with self._writing() as conn:
            if not self._epoch_columns_added:
                _add_epoch_columns(conn)
            old = sa.select(replications_table.c.pk).where(
                replications_table.c.study == row["study"], replications_table.c.id == row["id"]
            )
            old_pks = [r[0] for r in conn.execute(old)]
            for table in (metrics_table, epochs_table, profiles_table, *_legacy_tables(conn)):
                conn.execute(sa.delete(table).where(table.c.rep_pk.in_(old_pks)))
            conn.execute(sa.delete(replications_table).where(replications_table.c.pk.in_(old_pks)))
            pk = conn.execute(sa.insert(replications_table).values(**row)).inserted_primary_key[0]
            metrics = [
                {"rep_pk": pk, "name": k, "value": _float(v)} for k, v in result.get("metrics", {}).items()
            ]
            history = [_epoch_row(pk, h) for h in result.get("history", [])]
            profiles = [
                {"rep_pk": pk, **{k: p[k] for k in ("stage", "layer", "filter", "name", "kind")}, "value": _float(p["value"])}
                for p in result.get("profiles", [])
            ]
            for table, rows in ((metrics_table, metrics), (epochs_table, history), (profiles_table, profiles)):
                if rows:
                    conn.execute(sa.insert(table), rows)
            if result.get("machine") and row["host"]:
                self._upsert_host(conn, row["host"], result["machine"])
            if release is not None:
                conn.execute(_own_claims(release).where(claims_table.c.study == row["study"], claims_table.c.id == row["id"]))
        self._epoch_columns_added = True  # committed with this write

    def record_host(self, host: str, description: dict[str, Any]) -> None:
        """Save what machine ``host`` is (harness.training.outcome.machine())."""
        with self._writing() as conn:
            self._upsert_host(conn, host, description)

    @staticmethod
    def _upsert_host(conn, host: str, description: dict[str, Any]) -> None:
        values = dict(description=json.dumps(description, sort_keys=True), updated_at=_now())
        if conn.execute(sa.update(hosts_table).where(hosts_table.c.host == host).values(**values)).rowcount == 0:
            conn.execute(sa.insert(hosts_table).values(host=host, **values))

    def hosts(self) -> dict[str, dict]:
        """{host name: machine description} of every host that recorded a result."""
        if hosts_table.name in self._absent:
            return {}
        with self.engine.connect() as conn:
            return {h: json.loads(d) for h, d in conn.execute(sa.select(hosts_table.c.host, hosts_table.c.description))}

    # -- claims (driver only) ----------------------------------------------------------
    def claim(
        self, study: str, ids: Iterable[str], claimant: Claimant, lease_s: float, rerun_failed_upto: int | None = None
    ) -> list[str]:
        """Claim the replications that no other run holds and nobody has recorded; return
        the ids claimed, in the given order. A failed row blocks a claim unless its pk is
        at most ``rerun_failed_upto`` (failures recorded before this run began, which
        --rerun-failed retries; one recorded by another run since is left alone)."""
        ids = list(dict.fromkeys(ids))
        if not ids:
            return []
        now = time.time()
        claims, reps = claims_table.c, replications_table.c
        values = dict(owner=claimant.key, host=claimant.host, pid=claimant.pid, expires_at=now + lease_s)
        with self._writing() as conn:
            held = {r.id: r for r in conn.execute(sa.select(claims_table).where(claims.study == study, claims.id.in_(ids)))}
            won = [rid for rid in ids if self._take(conn, study, rid, held.get(rid), claimant, values, now)]
            # Checked after claiming: a run recording one of these now (and dropping its
            # claim in that transaction) has committed by the time this read runs, even
            # under PostgreSQL's read committed, so nothing recorded is claimed.
            recorded = conn.execute(sa.select(reps.id, reps.status, reps.pk).where(reps.study == study, reps.id.in_(won)))
            blocked = {
                rid for rid, status, pk in recorded if status != "failed" or rerun_failed_upto is None or pk > rerun_failed_upto
            }
            if blocked:
                conn.execute(_own_claims(claimant).where(claims.study == study, claims.id.in_(blocked)))
        return [rid for rid in won if rid not in blocked]

    @staticmethod
    def _take(conn, study: str, rid: str, old, claimant: Claimant, values: dict, now: float) -> bool:
        """Insert a claim, or take over one that is this run's, expired, or a dead run's."""
        claims = claims_table.c
        if old is None:
            try:
                with conn.begin_nested():  # a concurrent insert (PostgreSQL) fails only this one
                    conn.execute(sa.insert(claims_table).values(study=study, id=rid, **values))
                return True
            except sa.exc.IntegrityError:
                return False
        if old.owner != claimant.key and claim_is_live(old.host, old.pid, old.expires_at, now):
            return False
        taken = conn.execute(
            sa.update(claims_table).where(claims.study == study, claims.id == rid, claims.owner == old.owner).values(**values)
        )
        return taken.rowcount == 1

    def renew(self, claimant: Claimant, lease_s: float) -> None:
        """Extend the lease of every claim this run holds."""
        with self._writing() as conn:
            conn.execute(
                sa.update(claims_table).where(claims_table.c.owner == claimant.key).values(expires_at=time.time() + lease_s)
            )

    def release(self, claimant: Claimant) -> None:
        """Drop every claim this run holds (it stops; what it did not record is free)."""
        with self._writing() as conn:
            conn.execute(_own_claims(claimant))

    def max_pk(self) -> int:
        """The highest replication row number so far (0 for an empty store)."""
        with self.engine.connect() as conn:
            return conn.execute(sa.select(sa.func.max(replications_table.c.pk))).scalar() or 0

    # -- reading ---------------------------------------------------------------------
    def studies(self) -> list[str]:
        with self.engine.connect() as conn:
            return [r[0] for r in conn.execute(sa.select(studies_table.c.name).order_by(studies_table.c.name))]

    def study_definition(self, name: str) -> dict[str, Any]:
        with self.engine.connect() as conn:
            text = conn.execute(sa.select(studies_table.c.definition).where(studies_table.c.name == name)).scalar()
        if text is None:
            raise StoreError(f"no study named {name!r} in {self.shown_url}; studies there: {', '.join(self.studies()) or 'none'}")
        return json.loads(text)

    def ids(self, study: str, statuses: Iterable[str] = FINISHED) -> set[str]:
        """Ids of the study's replications recorded with one of these statuses."""
        query = sa.select(replications_table.c.id).where(
            replications_table.c.study == study, replications_table.c.status.in_(list(statuses))
        )
        with self.engine.connect() as conn:
            return {r[0] for r in conn.execute(query)}

    def frame(self, study: str) -> pd.DataFrame:
        """One row per replication: id, study, status, every config key, final metrics,
        and provenance. Metrics that do not apply are NaN."""
        reps = pd.read_sql(
            sa.select(replications_table).where(replications_table.c.study == study).order_by(replications_table.c.pk),
            self.engine,
        )
        if reps.empty:
            return reps.drop(columns=["pk", "config"])
        configs = _config_frame(reps)
        metrics = pd.DataFrame(columns=["rep_pk", "name", "value"])  # none in an older file without the table
        if metrics_table.name not in self._absent:
            metrics = pd.read_sql(
                sa.select(metrics_table.c.rep_pk, metrics_table.c.name, metrics_table.c.value)
                .join(replications_table)
                .where(replications_table.c.study == study),
                self.engine,
            )
        wide = metrics.pivot(index="rep_pk", columns="name", values="value") if not metrics.empty else pd.DataFrame()
        wide = wide.reindex(reps["pk"]).reset_index(drop=True)
        front = reps[["id", "study", "status"]]
        provenance = reps.drop(columns=["pk", "id", "study", "status", "config"])
        return pd.concat([front, configs, wide.set_index(reps.index), provenance], axis=1)

    def configs(self, study: str) -> pd.DataFrame:
        """One row per replication: id, status and every config key (Store.frame's left part)."""
        reps = pd.read_sql(
            sa.select(replications_table.c.id, replications_table.c.status, replications_table.c.config)
            .where(replications_table.c.study == study)
            .order_by(replications_table.c.pk),
            self.engine,
        )
        return pd.concat([reps[["id", "status"]], _config_frame(reps)], axis=1)

    def history(self, study: str) -> pd.DataFrame:
        """One row per (replication, epoch) with the per-epoch losses and accuracies."""
        columns = ["id", "epoch", *EPOCH_COLUMNS]
        frames = []
        with self.engine.connect() as conn:
            if epochs_table.name not in self._absent:  # a file older than the epochs table has the legacy rows only
                present = _epoch_columns(conn)  # an older file lacks the newer quantities
                query = (
                    sa.select(replications_table.c.id, epochs_table.c.epoch,
                              *(epochs_table.c[c] for c in EPOCH_COLUMNS if c in present))
                    .join(replications_table)
                    .where(replications_table.c.study == study)
                )
                frames.append(pd.read_sql(query, conn).reindex(columns=columns))
            if _legacy_tables(conn):  # an older file's rows, not yet moved by harness compact
                frames.append(_legacy_history(conn, study))
        frames = [f for f in frames if not f.empty]
        if not frames:
            return pd.DataFrame(columns=columns)
        wide = pd.concat(frames, ignore_index=True)[columns]
        wide.columns.name = None
        wide[EPOCH_COLUMNS] = wide[EPOCH_COLUMNS].astype(float)
        return wide.sort_values(["id", "epoch"]).reset_index(drop=True)

    def profiles(self, study: str) -> pd.DataFrame:
        """Per replication, stage, layer and filter: the entropy change (Fig. 1's data)."""
        cols = [profiles_table.c[c] for c in ("stage", "layer", "name", "kind", "filter", "value")]
        if profiles_table.name in self._absent:
            return pd.DataFrame(columns=["id", *(c.name for c in cols)])
        return pd.read_sql(
            sa.select(replications_table.c.id, *cols)
            .join(replications_table)
            .where(replications_table.c.study == study)
            .order_by(replications_table.c.pk, profiles_table.c.stage, profiles_table.c.layer, profiles_table.c.filter),
            self.engine,
        )

    def claims(self, study: str) -> list[dict[str, Any]]:
        """The study's claims: id, owner, host, pid, expires_at and whether it is live."""
        if claims_table.name in self._absent:
            return []
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(claims_table).where(claims_table.c.study == study)).mappings().all()
        now = time.time()
        return [{**r, "live": claim_is_live(r["host"], r["pid"], r["expires_at"], now)} for r in rows]

    def counts(self, study: str) -> dict[str, int]:
        """Recorded replications per status."""
        query = (
            sa.select(replications_table.c.status, sa.func.count())
            .where(replications_table.c.study == study)
            .group_by(replications_table.c.status)
        )
        with self.engine.connect() as conn:
            return {status: n for status, n in conn.execute(query)}


ROWID_FREE = (metrics_table, epochs_table, profiles_table)


def compact(url: str) -> tuple[int, int, list[str]]:
    """Make the SQLite database at ``url`` one small, self-contained file, ready to commit
    or share: per-replication tables written by older versions as rowid tables are rebuilt
    WITHOUT ROWID, free pages are dropped (VACUUM), and the write-ahead log is folded in
    and switched off (journal_mode DELETE; the next run switches it on again). Claims left
    by runs that died are dropped, so the file carries results only. Refused while a run
    holds live claims on it. An older file's history (a row per quantity) moves into the
    epochs table. ``url``: a sqlite:/// URL or a file's path. Returns (bytes before, bytes
    after, what was upgraded, a line each)."""
    path = Path(url)
    if "://" in str(url):
        parsed = sa.engine.make_url(url)
        if parsed.get_backend_name() != "sqlite":
            raise StoreError(f"compact works on SQLite files, not {parsed.get_backend_name()}: use the server's own VACUUM")
        path = Path(parsed.database or "")
    if not path.is_file():
        raise StoreError(f"no SQLite database at {path}")
    before = path.stat().st_size
    store = Store(f"sqlite:///{path}")
    try:
        with store.engine.connect() as conn:
            claims = conn.execute(sa.select(claims_table)).mappings().all()
        live = sorted({f"{c['study']} (pid {c['pid']} on {c['host']})" for c in claims if claim_is_live(c["host"], c["pid"], c["expires_at"])})
        if live:
            raise StoreError(f"a run is training {', '.join(live)}; compact {path} after it stops")
        upgraded = []
        with store._writing() as conn:
            conn.execute(sa.delete(claims_table))  # none is live (checked above)
            _add_epoch_columns(conn)  # before a rebuild copies every column
            for table in ROWID_FREE:
                ddl = conn.exec_driver_sql("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", (table.name,)).scalar()
                if ddl is None or "WITHOUT ROWID" in ddl.upper():
                    continue
                columns = ", ".join(c.name for c in table.columns)
                conn.exec_driver_sql(f"ALTER TABLE {table.name} RENAME TO {table.name}_rowid")
                table.create(conn)
                conn.exec_driver_sql(f"INSERT INTO {table.name} ({columns}) SELECT {columns} FROM {table.name}_rowid")
                conn.exec_driver_sql(f"DROP TABLE {table.name}_rowid")
                upgraded.append(f"{table.name} rebuilt without rowids")
            if _legacy_tables(conn):
                _move_legacy_history(conn)
                upgraded.append("history moved to one row per epoch")
        store.engine.dispose()  # VACUUM and the journal switch want the only connection
        raw = sqlite3.connect(path, isolation_level=None)
        try:
            raw.execute("PRAGMA busy_timeout=60000")
            raw.execute("VACUUM")
            raw.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            raw.execute("PRAGMA journal_mode=DELETE")
        finally:
            raw.close()
    except sqlite3.Error as err:
        raise StoreError(f"cannot compact {path}: {err} (close what else has it open)") from None
    finally:
        store.engine.dispose()
    return before, path.stat().st_size, upgraded


def _missing_tables(engine: sa.Engine) -> set[str]:
    return set(metadata.tables) - set(sa.inspect(engine).get_table_names())


def existing(url: str) -> Store | None:
    """The harness database at ``url`` opened to read, or None where there is none yet (no
    such SQLite file, or a database without the harness's tables): what ``harness run
    --dry-run`` reads, creating nothing."""
    try:
        return Store(url, reader=True)
    except (NoDatabase, NotHarnessDatabase):
        return None


def in_memory(url: str) -> bool:
    """Whether ``url`` is a SQLite database in memory (``sqlite://``), gone when its process ends."""
    try:
        parsed = sa.engine.make_url(url if "://" in str(url) else f"sqlite:///{url}")
    except (sa.exc.ArgumentError, ValueError):
        return False
    return parsed.get_backend_name() == "sqlite" and parsed.database in (None, "", ":memory:")


def _epoch_row(rep_pk: int, epoch: dict[str, Any]) -> dict[str, Any]:
    unknown = set(epoch) - {"epoch", *EPOCH_COLUMNS}
    if unknown:  # a quantity the training loop records needs its column here
        raise ValueError(f"no history column for {', '.join(sorted(unknown))}")
    return {"rep_pk": rep_pk, "epoch": int(epoch["epoch"]), **{c: _float(epoch.get(c)) for c in EPOCH_COLUMNS}}


def _epoch_columns(conn: sa.Connection) -> set[str]:
    return {c["name"] for c in sa.inspect(conn).get_columns(epochs_table.name)}


def _add_epoch_columns(conn: sa.Connection) -> None:
    """Add the epochs columns an older file lacks, in the caller's write transaction (so
    two runs add them once). Existing rows read NULL there."""
    present = _epoch_columns(conn)
    for name in EPOCH_COLUMNS:
        if name not in present:
            conn.execute(sa.text(f"ALTER TABLE {epochs_table.name} ADD COLUMN {name} FLOAT"))


def _legacy_tables(conn: sa.Connection) -> list[sa.Table]:
    """The older layout's history table, where this file has one."""
    return [legacy_history_table] if sa.inspect(conn).has_table(legacy_history_table.name) else []


def _legacy_history(conn: sa.Connection, study: str) -> pd.DataFrame:
    """A study's rows of the older history table, one row per (replication, epoch)."""
    h = legacy_history_table
    long = pd.read_sql(
        sa.select(replications_table.c.id, h.c.epoch, h.c.name, h.c.value)
        .join(replications_table, h.c.rep_pk == replications_table.c.pk)
        .where(replications_table.c.study == study),
        conn,
    )
    if long.empty:
        return long
    wide = long.pivot(index=["id", "epoch"], columns="name", values="value")
    return wide.reindex(columns=EPOCH_COLUMNS).reset_index()


def _move_legacy_history(conn: sa.Connection) -> None:
    """Move the older history table's rows into epochs, a row per (replication, epoch), and
    drop it. Epochs a newer run already wrote for the same replication are kept."""
    h = legacy_history_table
    pivoted = [sa.func.max(sa.case((h.c.name == c, h.c.value))).label(c) for c in EPOCH_COLUMNS]
    rows = sa.select(h.c.rep_pk, h.c.epoch, *pivoted).group_by(h.c.rep_pk, h.c.epoch)
    fresh = sa.select(epochs_table.c.rep_pk).where(epochs_table.c.rep_pk == h.c.rep_pk)
    conn.execute(
        sa.insert(epochs_table).from_select(["rep_pk", "epoch", *EPOCH_COLUMNS], rows.where(~fresh.exists()))
    )
    h.drop(conn)


def _own_claims(claimant: Claimant):
    return sa.delete(claims_table).where(claims_table.c.owner == claimant.key)


def _config_frame(reps: pd.DataFrame) -> pd.DataFrame:
    """The replications' JSON configs as columns, on the same index."""
    return pd.DataFrame([_config_row(json.loads(c)) for c in reps["config"]], index=reps.index)


def _config_row(config: dict[str, Any]) -> dict[str, Any]:
    """Config as frame columns: arch (a list) becomes "32-64" so it can be grouped on."""
    row = dict(config)
    if isinstance(row.get("arch"), list):
        row["arch"] = "-".join(str(w) for w in row["arch"])
    return row


def _float(value) -> float | None:
    if value is None:
        return None
    return float(value)


def masked_url(url: str) -> str:
    """``url`` as output may show it: the password replaced by ***."""
    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except (sa.exc.ArgumentError, ValueError):  # not a URL: hide whatever sits between ':' and '@'
        return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", str(url))


def _first_line(err: Exception) -> str:
    return str(err).strip().splitlines()[0] if str(err).strip() else ""
