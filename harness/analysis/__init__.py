"""The ``harness analyze`` stage: statistics, tables, plots and the report of a study.

One-way chain, as in DESIGN.md: ``stats`` (plain arrays) → ``tables`` (DataFrames) →
``plots`` (matplotlib axes) → ``report`` (the only module that writes files). ``spec``
holds the light dataclasses that study files declare; ``paper`` the published numbers.

Nothing heavy is imported here, so that ``harness --help`` stays fast.
"""
