"""The report writer: collects a study's Markdown and writes each table as CSV, LaTeX and
Markdown and each figure as PNG, under unique names, into the study's folder; and the
labels and file stems of a slice of the results."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from harness.analysis import grouping, render

class ReportWriter:
    """Collects Markdown and writes each table / figure beside it."""

    def __init__(self, out_dir: Path, study: str):
        self.dir, self.study = out_dir, study
        self.lines: list[str] = []
        self.summary: list[str] = []
        self.front: list[str] = []  # the first screen's sections, before the summary
        self.paths: list[Path] = []
        self.names: set[str] = set()
        self.description = ""
        out_dir.mkdir(parents=True, exist_ok=True)

    def md(self, *lines: str):
        self.lines.extend(lines)

    @contextmanager
    def first_screen(self) -> Iterator[None]:
        """What is written in the block goes to the top of the report, after its title."""
        saved, self.lines = self.lines, []
        try:
            yield
        finally:
            self.front, self.lines = self.front + self.lines, saved

    def _name(self, base: str, exts: tuple[str, ...]) -> str:
        """A file stem not yet used with any of ``exts`` (a figure and its table share one)."""
        base = re.sub(r"[^A-Za-z0-9_.=-]+", "_", base).strip("_") or "table"
        name, i = base, 2
        while any(name + e in self.names for e in exts):
            name, i = f"{base}_{i}", i + 1
        self.names.update(name + e for e in exts)
        return name

    def _write(self, filename: str, text: str) -> Path:
        path = self.dir / filename
        path.write_text(text, encoding="utf-8")
        self.paths.append(path)
        return path

    def table(self, df: pd.DataFrame, base: str, caption: str, *, index: bool = False,
              show: pd.DataFrame | None = None, inline: bool = True, digits: int = 4,
              tex: bool = True) -> str:
        """Write ``base``.csv and (``tex``) .tex; put ``show`` (default ``df``) into the
        Markdown. A table too long for a paper (a row per epoch) is written as CSV only."""
        name = self._name(base, (".csv", ".tex"))
        self._write(f"{name}.csv", render.csv(df, index=index))
        if tex:
            self._write(f"{name}.tex", render.latex(df, index=index, caption=caption, digits=digits))
            self.md(f"*{caption}* ([csv]({name}.csv), [tex]({name}.tex))", "")
        else:
            self.md(f"*{caption}* ([csv]({name}.csv))", "")
        if inline:
            self.md(render.markdown(show if show is not None else df, index=index, digits=digits), "")
        return name

    def figure(self, ax, base: str, caption: str) -> str:
        from matplotlib.backends.backend_agg import FigureCanvasAgg

        name = self._name(base, (".png",))
        fig = ax.figure
        fig.tight_layout()
        FigureCanvasAgg(fig)
        path = self.dir / f"{name}.png"
        fig.savefig(path, format="png", metadata={"Software": None})  # no version stamp
        self.paths.append(path)
        self.md(f"![{caption}]({name}.png)", "", f"*{caption}*", "")
        return name

    def finish(self) -> list[Path]:
        stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        head = [f"# Report: {self.study}", "", f"_Generated {stamp} by `harness analyze`._", ""]
        if self.description:
            head += [self.description, ""]
        head += self.front
        if self.summary:
            head += ["## Published vs replicated", ""] + [f"- {s}" for s in self.summary] + [""]
        text = "\n".join(head + self.lines).rstrip() + "\n"
        path = self._write("report.md", text)
        self.paths.remove(path)
        return self.paths + [path]


def at_label(labels: dict) -> str:
    return ", ".join(f"{k}={grouping.level_label(v)}" for k, v in labels.items()) or "all replications"


def at(labels: dict) -> str:
    """' at latent=80' or '' for a heading."""
    return f" at {at_label(labels)}" if labels else ""


def stem(*parts: str, labels: dict | None = None) -> str:
    """File stem from parts and the slice labels: sig_val_mse_by_lam_latent-80."""
    parts += tuple(f"{k}-{grouping.level_label(v)}" for k, v in (labels or {}).items())
    return "_".join(p for p in parts if p)

