"""The :class:`Store`: a results database opened to record, claim and read, its parts
gathered from ``engine``, ``writer``, ``claims`` and ``reader``; ``existing`` opens one
to read where there is one."""

from __future__ import annotations

from harness.store.claims import Claims
from harness.store.engine import Database
from harness.store.errors import NoDatabase, NotHarnessDatabase
from harness.store.reader import Reader
from harness.store.writer import Writer


class Store(Database, Writer, Claims, Reader):
    """A results database at a SQLAlchemy URL.

    ``reader=True`` (harness status, analyze) opens a database that must exist and leaves
    its file as it is: a mistyped path is an error, not a new empty database, a file that
    is not a harness database is refused (no table is created in it), and a committed
    database stays byte for byte what was committed. Once open, a database that fails
    (a full disk, a read-only file, a lost server) is a StoreError of one line."""


def existing(url: str) -> Store | None:
    """The harness database at ``url`` opened to read, or None where there is none yet (no
    such SQLite file, or a database without the harness's tables): what ``harness run
    --dry-run`` reads, creating nothing."""
    try:
        return Store(url, reader=True)
    except (NoDatabase, NotHarnessDatabase):
        return None
