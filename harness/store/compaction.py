"""``harness compact``: a SQLite results file made one small, self-contained file,
older layouts upgraded on the way."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import sqlalchemy as sa

from harness.store.claims import claim_is_live
from harness.store.errors import StoreError
from harness.store.schema import ROWID_FREE, _add_epoch_columns, _legacy_tables, _move_legacy_history, claims_table
from harness.store.store import Store


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
