"""Studies, their typed settings, grid expansion and replications: the names other modules
import from ``harness.study``.

Each grid point of a study becomes a frozen :class:`Replication` whose id is a hash of its
full resolved config, so the same config is never trained twice. The package imports
nothing heavy: ``harness --help`` and study loading stay fast.

- ``settings``: :class:`Config` and its nested dataclasses, the dotted keys, choices
- ``overrides``: checking values, presets, building a config, parsing ``key=value``
- ``grid``: grid expansion, :class:`Replication` and its id, derived seeds
- ``study``: :class:`Study` and ``load_study``
- ``requests``: the grids a stored study's runs asked for, merged definitions
"""

from harness.study.grid import Replication, _canonical, derive_seed, expand_grid, grid_values, seedless
from harness.study.overrides import PRESET_KEY, PRESETS, build_config, check_key, coerce, expand_presets
from harness.study.requests import merged_definition, recorded_requests, requested_ids, requested_replications
from harness.study.settings import (
    CHOICES,
    CONFIG_VERSION,
    FIELD_TYPES,
    KEYS,
    LATE_KEYS,
    Config,
    DataConfig,
    EntropyConfig,
    NetConfig,
    TrainConfig,
    flatten,
)
from harness.study.study import Study, load_study
from harness.validate import StudyError

__all__ = [
    "CHOICES", "CONFIG_VERSION", "FIELD_TYPES", "KEYS", "LATE_KEYS", "PRESETS", "PRESET_KEY",
    "Config", "DataConfig", "EntropyConfig", "NetConfig", "Replication", "Study", "StudyError",
    "TrainConfig", "build_config", "check_key", "coerce", "derive_seed", "expand_grid",
    "expand_presets", "flatten", "load_study", "merged_definition", "recorded_requests",
    "requested_ids", "requested_replications", "seedless", "grid_values", "_canonical",
]
