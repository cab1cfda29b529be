"""Opening a results database: the engine, SQLite's pragmas and write transactions, WAL
mode at the first write, PostgreSQL's write lock, the tables a new or older file lacks,
and a failing database reported as one line."""

from __future__ import annotations

import sqlite3
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import sqlalchemy as sa
from sqlalchemy import event

from harness.store.errors import NoDatabase, NotHarnessDatabase, StoreError
from harness.store.schema import CORE_TABLES, DEFAULT_DB, _missing_tables, metadata
from harness.store.urls import _first_line, masked_url

# Key of the PostgreSQL advisory lock every write transaction holds ("harness" in ASCII).
WRITE_LOCK = 0x68_61_72_6E_65_73_73

WAL_CHECKPOINT_PAGES = 128  # a checkpoint once the WAL holds this many pages (512 KiB at 4 KiB a page)
WAL_LIMIT_BYTES = 512 * 1024  # the WAL file is truncated to this after a checkpoint


def _sqlite_pragmas(dbapi_connection, _record):
    # SQLAlchemy, not the sqlite3 module, starts transactions (see _sqlite_begin).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    # The busy timeout makes concurrent writers wait for each other instead of failing
    # with "database is locked", and makes the switch to WAL (Store._writing) wait too.
    cursor.execute("PRAGMA busy_timeout=60000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    # A bounded WAL: SQLite checkpoints when the WAL passes 1000 pages (4 MB) and then
    # reuses the file without shrinking it, so a run's small writes left a 4 MB WAL beside
    # a 100 KB database, held on a full disk too. Checkpoint sooner, and truncate the WAL
    # back to WAL_LIMIT_BYTES when it restarts after a checkpoint. Both are settings of
    # this connection, not of the file: a reader that sets them changes no byte.
    cursor.execute(f"PRAGMA wal_autocheckpoint={WAL_CHECKPOINT_PAGES}")
    cursor.execute(f"PRAGMA journal_size_limit={WAL_LIMIT_BYTES}")
    cursor.close()


def _sqlite_begin(conn):
    # A write transaction takes SQLite's write lock at BEGIN. A deferred one that reads
    # first and writes later fails at once with "database is locked" when another process
    # wrote in between (the busy timeout does not apply to that case), which is what two
    # runs claiming replications of one study would do.
    write = conn.get_execution_options().get("harness_write", False)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


class Database:
    """An open database at a SQLAlchemy URL: its engine, its tables created where missing
    (by a writer), its failures as one line, and its write transaction (``_writing``).
    :class:`harness.store.Store` documents ``reader``."""

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
