"""Grid expansion and replications: a study's grid points as frozen :class:`Replication`
objects, each with an id that hashes its full resolved config, and the seeds derived from
a replication's seed."""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
from dataclasses import dataclass
from typing import Any

from harness.study.overrides import build_config, expand_presets
from harness.study.settings import CONFIG_VERSION, LATE_KEYS, Config, flatten


def derive_seed(seed: int, stream: str) -> int:
    """One independent seed per source of randomness ("init", "data"), from the
    replication's seed alone: the same seed gives the same initial weights and data order
    at every λ, so λ levels are compared on common random numbers."""
    digest = hashlib.sha256(f"{seed}:{stream}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


_DEFAULTS = flatten(Config())
_LATE_DEFAULTS = {k: v for k, v in _DEFAULTS.items() if k in LATE_KEYS}


def _late_default(key: str, value: Any) -> bool:
    return key in LATE_KEYS and value == _LATE_DEFAULTS[key]


def _canonical(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_canonical(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return value  # json writes 1.0 and 1 differently; keep floats as floats
    return value


@dataclass(frozen=True)
class Replication:
    """One training run: a study name and a fully resolved config."""

    study: str
    config: Config

    @functools.cached_property  # hashed once: a large grid asks each replication several times
    def id(self) -> str:
        """Stable hash of everything that affects the result (not the study's name,
        the device or the time)."""
        flat = {k: _canonical(v) for k, v in flatten(self.config).items() if not _late_default(k, v)}
        payload = json.dumps({"v": CONFIG_VERSION, "config": flat}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    def params(self) -> dict[str, Any]:
        return flatten(self.config)


def expand_grid(name: str, settings: dict[str, Any], grid: dict[str, list], exclude: list) -> list[Replication]:
    """The replications of study ``name``: the grid's product in a stable order (axes as
    declared, last axis fastest), each point over ``settings``, less those ``exclude``
    matches."""
    keys = list(grid)
    reps = []
    for combo in itertools.product(*(grid[k] for k in keys)):
        values = {**settings, **dict(zip(keys, combo))}
        expanded = expand_presets(values)
        if any(all(expanded.get(k, _DEFAULTS.get(k)) == v for k, v in entry.items()) for entry in exclude):
            continue
        reps.append(Replication(name, build_config(values)))
    return reps
