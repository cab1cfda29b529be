"""The store's errors: what a user can fix about a database, printed as one line."""

from __future__ import annotations

from harness.errors import UserError


class StoreError(UserError):
    """The database cannot be opened or used: printed as one line."""


class NoDatabase(StoreError):
    """A reader's SQLite file is not there."""


class NotHarnessDatabase(StoreError):
    """A reader's database holds no harness results (an empty file, another program's)."""
