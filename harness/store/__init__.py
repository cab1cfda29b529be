"""The results store: SQLAlchemy schema, recording, and reading back as DataFrames; the
names other modules import from ``harness.store``.

Only the driver process writes. Each replication is written in one transaction, with its
final metrics, per-epoch history and entropy profile, so a store never holds a partial
replication and a rerun resumes from what is there. SQLite (the default) runs in WAL
mode from a store's first write on; any SQLAlchemy URL works (``--db postgresql://...``).

Runs that share a database coordinate through claims: a run claims a replication before
it trains it and holds the claim under a lease it keeps renewing; a claim is released in
the transaction that records the final result. Another run skips claimed replications,
and takes over a claim whose lease ran out or whose run is a dead process on this host.

- ``schema``: the tables, and the upgrades of files older versions wrote
- ``errors``: ``StoreError`` and the reader's refusals
- ``urls``: URL parsing, the password masked, in-memory SQLite
- ``engine``: opening a database, SQLite's pragmas, the write transaction
- ``writer``, ``claims``, ``reader``: the parts of :class:`Store`
- ``store``: :class:`Store` and ``existing``
- ``compaction``: ``harness compact``
"""

from harness.store.claims import Claimant, claim_is_live
from harness.store.compaction import compact
from harness.store.engine import WRITE_LOCK
from harness.store.errors import NoDatabase, NotHarnessDatabase, StoreError
from harness.store.schema import (
    CORE_TABLES,
    DEFAULT_DB,
    EPOCH_COLUMNS,
    FINISHED,
    ROWID_FREE,
    STATUSES,
    claims_table,
    epochs_table,
    hosts_table,
    legacy_history_table,
    metadata,
    metrics_table,
    profiles_table,
    replications_table,
    studies_table,
)
from harness.store.store import Store, existing
from harness.store.urls import in_memory, masked_url

__all__ = [
    "CORE_TABLES", "DEFAULT_DB", "EPOCH_COLUMNS", "FINISHED", "ROWID_FREE", "STATUSES", "WRITE_LOCK",
    "Claimant", "NoDatabase", "NotHarnessDatabase", "Store", "StoreError", "claim_is_live",
    "claims_table", "compact", "epochs_table", "existing", "hosts_table", "in_memory",
    "legacy_history_table", "masked_url", "metadata", "metrics_table", "profiles_table",
    "replications_table", "studies_table",
]
