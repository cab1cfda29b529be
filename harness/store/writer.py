"""Recording (the driver only): a study's definition, and each replication's result,
metrics, per-epoch history, entropy profile and host, each in one transaction."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

import sqlalchemy as sa

from harness.store.claims import Claimant, _own_claims
from harness.store.schema import (
    EPOCH_COLUMNS,
    STATUSES,
    _add_epoch_columns,
    _legacy_tables,
    claims_table,
    epochs_table,
    hosts_table,
    metrics_table,
    profiles_table,
    replications_table,
    studies_table,
)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _json_default(value):
    if isinstance(value, tuple):
        return list(value)
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")


def _epoch_row(rep_pk: int, epoch: dict[str, Any]) -> dict[str, Any]:
    unknown = set(epoch) - {"epoch", *EPOCH_COLUMNS}
    if unknown:  # a quantity the training loop records needs its column here
        raise ValueError(f"no history column for {', '.join(sorted(unknown))}")
    return {"rep_pk": rep_pk, "epoch": int(epoch["epoch"]), **{c: _float(epoch.get(c)) for c in EPOCH_COLUMNS}}


def _float(value) -> float | None:
    if value is None:
        return None
    return float(value)


class Writer:
    """The Store's writing methods (the driver only)."""

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
