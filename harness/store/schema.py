"""The results database's SQLAlchemy schema, and the upgrades of files older versions
wrote: the epochs columns added later, the legacy per-quantity history read and moved."""

from __future__ import annotations

import pandas as pd
import sqlalchemy as sa

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


# Tables without which a database is not a harness database (a reader refuses it); the
# others came later, and a reader reads an older file that lacks them as empty.
CORE_TABLES = ("studies", "replications")

ROWID_FREE = (metrics_table, epochs_table, profiles_table)


def _missing_tables(engine: sa.Engine) -> set[str]:
    return set(metadata.tables) - set(sa.inspect(engine).get_table_names())


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
