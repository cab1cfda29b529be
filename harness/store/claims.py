"""Claims: how runs that share a database divide its replications. A run claims a
replication before it trains it and holds the claim under a lease it keeps renewing; a
claim is released in the transaction that records the final result. Another run skips
claimed replications, and takes over a claim whose lease ran out or whose run is a dead
process on this host."""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass
from typing import Any, Iterable

import sqlalchemy as sa

from harness.store.schema import claims_table, replications_table


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


def _own_claims(claimant: Claimant):
    return sa.delete(claims_table).where(claims_table.c.owner == claimant.key)


class Claims:
    """The Store's claims (driver only), and reading a study's claims."""

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

    def claims(self, study: str) -> list[dict[str, Any]]:
        """The study's claims: id, owner, host, pid, expires_at and whether it is live."""
        if claims_table.name in self._absent:
            return []
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(claims_table).where(claims_table.c.study == study)).mappings().all()
        now = time.time()
        return [{**r, "live": claim_is_live(r["host"], r["pid"], r["expires_at"], now)} for r in rows]
