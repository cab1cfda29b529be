"""Reading a results database back: studies, their definitions, ids and counts, and the
replications, per-epoch history and entropy profiles as DataFrames. A table an older file
lacks reads as empty."""

from __future__ import annotations

import json
from typing import Any, Iterable

import pandas as pd
import sqlalchemy as sa

from harness.store.errors import StoreError
from harness.store.schema import (
    EPOCH_COLUMNS,
    FINISHED,
    _epoch_columns,
    _legacy_history,
    _legacy_tables,
    epochs_table,
    hosts_table,
    metrics_table,
    profiles_table,
    replications_table,
    studies_table,
)


class Reader:
    """The Store's reading methods."""

    def hosts(self) -> dict[str, dict]:
        """{host name: machine description} of every host that recorded a result."""
        if hosts_table.name in self._absent:
            return {}
        with self.engine.connect() as conn:
            return {h: json.loads(d) for h, d in conn.execute(sa.select(hosts_table.c.host, hosts_table.c.description))}

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

    def counts(self, study: str) -> dict[str, int]:
        """Recorded replications per status."""
        query = (
            sa.select(replications_table.c.status, sa.func.count())
            .where(replications_table.c.study == study)
            .group_by(replications_table.c.status)
        )
        with self.engine.connect() as conn:
            return {status: n for status, n in conn.execute(query)}


def _config_frame(reps: pd.DataFrame) -> pd.DataFrame:
    """The replications' JSON configs as columns, on the same index."""
    return pd.DataFrame([_config_row(json.loads(c)) for c in reps["config"]], index=reps.index)


def _config_row(config: dict[str, Any]) -> dict[str, Any]:
    """Config as frame columns: arch (a list) becomes "32-64" so it can be grouped on."""
    row = dict(config)
    if isinstance(row.get("arch"), list):
        row["arch"] = "-".join(str(w) for w in row["arch"])
    return row
