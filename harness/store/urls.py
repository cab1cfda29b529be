"""Database URLs: a password masked for output, the first line of a driver's error, and
whether a URL is a SQLite database in memory."""

from __future__ import annotations

import re

import sqlalchemy as sa


def in_memory(url: str) -> bool:
    """Whether ``url`` is a SQLite database in memory (``sqlite://``), gone when its process ends."""
    try:
        parsed = sa.engine.make_url(url if "://" in str(url) else f"sqlite:///{url}")
    except (sa.exc.ArgumentError, ValueError):
        return False
    return parsed.get_backend_name() == "sqlite" and parsed.database in (None, "", ":memory:")


def masked_url(url: str) -> str:
    """``url`` as output may show it: the password replaced by ***."""
    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except (sa.exc.ArgumentError, ValueError):  # not a URL: hide whatever sits between ':' and '@'
        return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", str(url))


def _first_line(err: Exception) -> str:
    return str(err).strip().splitlines()[0] if str(err).strip() else ""
