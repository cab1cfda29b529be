"""What a stored study spans: the grids its runs asked for (``requests``), their
replications and ids, and the definition a database holds after another run."""

from __future__ import annotations

from typing import Any

from harness.study.grid import Replication
from harness.study.study import Study


def _request(definition: dict[str, Any]) -> dict[str, Any]:
    return {k: definition.get(k) or ({} if k != "exclude" else []) for k in ("settings", "grid", "exclude")}


def recorded_requests(definition: dict[str, Any]) -> list[dict[str, Any]]:
    """The grids a stored definition's runs asked for (one, from a definition saved before
    requests were kept)."""
    return list(definition.get("requests") or [_request(definition)])


def requested_replications(name: str, request: dict[str, Any]) -> list[Replication]:
    """The replications one recorded request (settings, grid, exclude) asks for."""
    return Study(name, settings=request["settings"], grid=request["grid"], exclude=request["exclude"]).replications()


def requested_ids(name: str, request: dict[str, Any]) -> set[str]:
    return {r.id for r in requested_replications(name, request)}


def merged_definition(old: dict[str, Any] | None, new: dict[str, Any]) -> dict[str, Any]:
    """The study as a database holds it after a run of ``new`` (a ``Study.definition()``):
    the last run's description, settings and analyses, and in ``requests`` every distinct
    grid the runs asked for (one that another contains is dropped), so that a run narrowed
    by overrides (``latent=180``) adds to what the study spans instead of shrinking it.
    ``grid`` spans them all: per key, every value any request gave it."""
    requests = recorded_requests(old) if old else []
    requests.append(_request(new))
    ids = [requested_ids(new["name"], r) for r in requests]
    # drop a request that another asks for all of (of two equal ones, the earlier goes)
    kept = [r for i, r in enumerate(requests)
            if not any(j != i and ids[i] <= ids[j] and (ids[i] != ids[j] or j > i) for j in range(len(requests)))]
    levels: dict[str, list] = {}
    for r in kept:
        for key in dict.fromkeys([*r["grid"], *r["settings"]]):
            for value in r["grid"].get(key, [r["settings"].get(key)]):
                if value not in levels.setdefault(key, []):
                    levels[key].append(value)
    grid = {k: vs for k, vs in levels.items() if len(vs) > 1 or any(k in r["grid"] for r in kept)}
    order = [*(k for k in new["grid"] if k in grid), *(k for k in grid if k not in new["grid"])]  # the last run's axes first
    return {**new, "grid": {k: grid[k] for k in order}, "requests": kept}
