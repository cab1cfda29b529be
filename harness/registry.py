"""Named pieces looked up by name: models, data sets, tasks, backends.

Each kind has one ``Registry``, defined beside the pieces it holds (``models.MODELS``,
``data.DATASETS``, ``backends.BACKENDS``); adding a piece is one ``register`` call there,
and every list of names a user sees (help texts, errors) comes from the registry, so no
second list can drift. An unknown name is a ``UserError`` with the closest match.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from harness.errors import UserError

T = TypeVar("T")


def did_you_mean(name: str, known) -> str:
    """' (did you mean 'mnist'?)' when a known name is close to ``name``, else ''."""
    close = difflib.get_close_matches(str(name), list(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


class Registry(Generic[T]):
    """An ordered mapping of names to pieces of one ``kind`` ("model", "data set", ...)."""

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str, item: T | None = None) -> T | Callable[[T], T]:
        """``REG.register("name", thing)``, or ``@REG.register("name")`` above a def or
        class. A name registered twice is a bug (two pieces would answer to it)."""
        def add(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._items[name] = obj
            return obj

        return add if item is None else add(item)

    def replace(self, name: str, item: T) -> T:
        """Set ``name`` to ``item`` whether or not it is registered: for the pieces a study
        file registers (harness.custom), which register again each time the file runs."""
        self._items[name] = item
        return item

    def get(self, name: str, default=None):
        """The piece called ``name``, else ``default`` (no error)."""
        return self._items.get(name, default) if isinstance(name, str) else default

    def __getitem__(self, name: str) -> T:
        try:
            return self._items[name]
        except (KeyError, TypeError):
            raise UserError(f"unknown {self.kind} {name!r}{did_you_mean(name, self._items)}; "
                            f"known: {', '.join(self._items)}") from None

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def names(self) -> tuple[str, ...]:
        return tuple(self._items)
