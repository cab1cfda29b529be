"""The :class:`Study` (a name, fixed settings, a grid, its analyses), command-line
overrides applied to it, and loading a study file (``study = Study(...)``).

A study file is a small Python module defining ``study = Study(...)``. Every setting of a
replication is a field of :class:`Config` (nested dataclasses, addressed with dotted keys
such as ``train.lr``) with a documented default; a study overrides some of them in
``settings`` and varies some of them in ``grid``. Overrides from the command line use the
same dotted keys.
"""

from __future__ import annotations

import dataclasses
import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.study.grid import Replication, expand_grid
from harness.study.overrides import _parse_values, build_config, check_key, coerce
from harness.study.settings import flatten
from harness.validate import StudyError, check_fields


@dataclass
class Study:
    """A grid of replications and the analyses that turn them into the paper's tables.

    name:      the study's name in the store and in results/<name>/.
    settings:  {dotted key: value} fixed for every replication (defaults otherwise).
    grid:      {dotted key: [values]} axes; the replications are their product.
    analyses:  analysis specs (harness.analysis.spec) that `harness analyze` runs.
    exclude:   [{dotted key: value}] grid points to leave out: a point matching every
               key of one entry is skipped (E4 runs augmentation x dropout but not
               dropout without augmentation).
    """

    name: str
    settings: dict[str, Any] = field(default_factory=dict)
    grid: dict[str, list] = field(default_factory=dict)
    analyses: list = field(default_factory=list)
    description: str = ""
    source: str = ""  # the study file's text, filled in by load_study
    exclude: list = field(default_factory=list)
    path: str = ""  # the study file, filled in by load_study: a worker runs its code for its own pieces (harness.custom)

    def __post_init__(self):
        if not self.name or not isinstance(self.name, str):
            raise StudyError("a study needs a name")
        check_fields(self.settings, self.grid, self.analyses, self.exclude)
        self.settings = {k: coerce(k, v) for k, v in self.settings.items()}
        grid = {}
        for key, values in self.grid.items():
            if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
                values = [values]
            values = [coerce(key, v) for v in values]
            if not values:
                raise StudyError(f"grid axis {key} has no values")
            grid[key] = list(dict.fromkeys(values))  # keep order, drop repeats
        self.grid = grid
        self.exclude = [{k: coerce(k, v) for k, v in dict(entry).items()} for entry in self.exclude]
        build_config(self.settings)  # fail early on a bad combination

    def replications(self) -> list[Replication]:
        """The grid's product in a stable order (axes as declared, last axis fastest)."""
        return expand_grid(self.name, self.settings, self.grid, self.exclude)

    def with_overrides(self, overrides: list[str]) -> "Study":
        """Apply command-line overrides ``key=value``.

        A value with commas (``lam=0,1e-3``) or an integer range ``start:stop`` (``seed=0:3``
        = 0, 1, 2) sets a grid axis; a single value on a key that is a grid axis narrows the
        axis to that value; otherwise it fixes the setting. Brackets keep a value's own
        commas: ``placement=[1,5]`` is one placement, ``placement=[1,5],first`` two.
        """
        settings, grid = dict(self.settings), dict(self.grid)
        given: dict[str, str] = {}
        for item in overrides:
            key, sep, text = item.partition("=")
            if not sep or not key:
                raise StudyError(f"bad override {item!r}: expected key=value, e.g. lam=0,1e-3")
            check_key(key)
            if key in given:  # which one was meant? (a list is one override: lam=0,1e-3)
                raise StudyError(f"{key} is given twice ({given[key]} and {item}): give it once, "
                                 f"e.g. {key}=a,b for a grid axis")
            given[key] = item
            values = _parse_values(key, text)
            if len(values) > 1 or key in grid:
                grid[key] = values
                settings.pop(key, None)
            else:
                settings[key] = values[0]
        return dataclasses.replace(self, settings=settings, grid=grid)

    def definition(self) -> dict[str, Any]:
        """JSON-able resolved definition, saved with the results."""
        from harness.analysis.spec import spec_to_dict
        from harness.custom import higher_is_better

        def plain(v):
            return list(v) if isinstance(v, tuple) else v

        tasks = [self.settings.get("task", "")] + list(self.grid.get("task", []))
        directions = higher_is_better(tasks)  # a study file's metrics (harness.custom): which way is better
        return {
            "name": self.name,
            "description": self.description,
            "settings": {k: plain(v) for k, v in flatten(build_config(self.settings)).items()},
            "grid": {k: [plain(v) for v in vs] for k, vs in self.grid.items()},
            "analyses": [spec_to_dict(a) for a in self.analyses],
            "exclude": [{k: plain(v) for k, v in entry.items()} for entry in self.exclude],
            "source": self.source,
            **({"higher_is_better": directions} if directions else {}),
        }


def load_study(path: str | Path) -> Study:
    """Import a study file and return its ``study``."""
    path = Path(path)
    if not path.is_file():
        raise StudyError(f"no study file at {path}")
    spec = importlib.util.spec_from_file_location(f"harness_study_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except StudyError as err:
        raise StudyError(f"{path}: {err}") from None
    except Exception as err:  # a broken study file is a user error, shown as one line
        raise StudyError(f"{path}: {type(err).__name__}: {err}") from None
    study = getattr(module, "study", None)
    if not isinstance(study, Study):
        raise StudyError(f"{path} must define `study = Study(...)`")
    from harness.custom import ran

    source = path.read_text()
    ran(source)  # its pieces (harness.custom) are registered in this process now
    return dataclasses.replace(study, source=source, path=str(path.resolve()))
