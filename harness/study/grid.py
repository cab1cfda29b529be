"""Grid expansion and replications: a study's grid points as frozen :class:`Replication`
objects, each with an id that hashes its full resolved config, and the seeds derived from
a replication's seed."""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
import operator
from dataclasses import dataclass, fields
from typing import Any

from harness.study.overrides import PRESET_KEY, PRESETS, build_config, expand_presets
from harness.study.settings import CONFIG_VERSION, KEYS, LATE_KEYS, Config, flatten


def derive_seed(seed: int, stream: str) -> int:
    """One independent seed per source of randomness ("init", "data"), from the
    replication's seed alone: the same seed gives the same initial weights and data order
    at every λ, so λ levels are compared on common random numbers."""
    digest = hashlib.sha256(f"{seed}:{stream}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


_DEFAULTS = flatten(Config())
_LATE_DEFAULTS = {k: v for k, v in _DEFAULTS.items() if k in LATE_KEYS}

# json.dumps(..., sort_keys=True) builds this encoder at every call; the text is the same
_ENCODE = json.JSONEncoder(sort_keys=True).encode


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
        # The payload is json of the flattened config less the late keys at their default.
        # json writes a tuple as the list _canonical would make of it, so the text (and the
        # id) is the same without converting each value first: this is most of a large
        # grid's expansion, and the ids of recorded results must never change.
        flat = flatten(self.config)
        for key, default in _LATE_DEFAULTS.items():
            if flat[key] == default:
                del flat[key]
        return hashlib.sha256(_ENCODE({"v": CONFIG_VERSION, "config": flat}).encode()).hexdigest()[:16]

    def params(self) -> dict[str, Any]:
        return flatten(self.config)


def grid_values(config: Config, keys: list[str]) -> dict[str, Any]:
    """{key: value} of ``config`` for a grid's axes ``keys`` (dotted), read without
    flattening the config; the preset key (protocol), which the config holds only as the
    keys it stands for, as the name of the preset those keys match."""
    out = {}
    for key in keys:
        if key == PRESET_KEY:
            out[key] = next((name for name, keys in PRESETS.items()
                             if keys and all(operator.attrgetter(k)(config) == v for k, v in keys.items())), "default")
        else:
            out[key] = operator.attrgetter(key)(config)
    return out


# Config's fields but the seed, read in one C call (nested configs compare and hash whole)
_FIELDS = fields(Config)
_TOP_KEYS = frozenset(k for k in KEYS if "." not in k)  # the settings that are fields of Config itself
_BUT_SEED = operator.attrgetter(*(f.name for f in _FIELDS if f.name != "seed"))


def seedless(config: Config) -> tuple:
    """A hashable key that ``config`` shares with the configs that differ from it only in
    their seed: one grid cell's replications. Cheaper than a flattened config's items
    for the 100,000 replications of a large grid."""
    return _BUT_SEED(config)


def expand_grid(name: str, settings: dict[str, Any], grid: dict[str, list], exclude: list) -> list[Replication]:
    """The replications of study ``name``: the grid's product in a stable order (axes as
    declared, last axis fastest), each point over ``settings``, less those ``exclude``
    matches."""
    keys = list(grid)
    built: dict[str, dict[str, Any]] = {}
    reps = []
    for combo in itertools.product(*(grid[k] for k in keys)):
        values = {**settings, **dict(zip(keys, combo))}
        expanded = expand_presets(values)
        if any(all(expanded.get(k, _DEFAULTS.get(k)) == v for k, v in entry.items()) for entry in exclude):
            continue
        reps.append(Replication(name, _config(expanded, built)))
    return reps


def _config(values: dict[str, Any], built: dict[str, dict[str, Any]]) -> Config:
    """``build_config(values)`` (presets expanded), its nested configs (train, entropy,
    ...) built once for each set of their settings in ``built``: a grid's points differ
    mostly in top-level settings (λ, the seed), and building every nested config anew
    was most of expanding a large grid."""
    nested = sorted((k, v) for k, v in values.items() if "." in k)
    # by repr, not by value: 1, 1.0 and True are equal, 0.0 and -0.0 too, and json (the id) tells them apart
    fields_of = built.get(key := repr(nested))
    if fields_of is None:
        base = build_config(dict(nested))  # checks the keys
        fields_of = built[key] = {f.name: getattr(base, f.name) for f in _FIELDS}
    top = {k: v for k, v in values.items() if "." not in k}
    if not top.keys() <= _TOP_KEYS:
        return build_config(values)  # an unknown key: build_config names it
    return Config(**{**fields_of, **top})
