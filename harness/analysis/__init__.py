"""The ``harness analyze`` stage: statistics, tables, plots and the report of a study.

One-way chain, as in DESIGN.md: ``stats`` (plain arrays) → ``tables`` (DataFrames) →
``plots`` (matplotlib axes) and ``render`` (Markdown / LaTeX / CSV text) → ``report`` (the
only module that writes files; ``harness analyze`` calls ``report.analyze``). ``spec`` holds
the light dataclasses that study files declare; ``paper`` the published numbers.

Nothing heavy is imported here, so that ``harness --help`` stays fast.
"""
