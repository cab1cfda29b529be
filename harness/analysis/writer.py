"""The report writer: collects a study's report and writes each table as CSV, LaTeX and
Markdown and each figure as PNG (300 dpi) and PDF, under unique names, into the study's
folder; the report itself as ``report.md`` and, from the same content, one self-contained
``report.html`` (harness.analysis.htmlpage); and the labels and file stems of a slice of the
results.

Everything the report says goes through ``md``, ``heading``, ``table`` and ``figure``,
each of which appends to the Markdown lines and to a parallel list of HTML blocks (plain
dicts the template renders), so the two files hold the same content."""

from __future__ import annotations

import base64
import io
import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from harness.analysis import grouping, htmlpage, render

PNG_DPI = 300


def slug(text: str) -> str:
    """The anchor GitHub gives a Markdown heading: lower case, punctuation dropped, spaces
    as hyphens (letters such as λ kept)."""
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


class ReportWriter:
    """Collects Markdown (and the same content as HTML blocks) and writes each table /
    figure beside it."""

    def __init__(self, out_dir: Path, study: str):
        self.dir, self.study = out_dir, study
        self.lines: list[str] = []
        self.blocks: list[dict] = []
        self.summary: list[str] = []
        self.front: tuple[list, list] = ([], [])  # the first screen's sections, before the summary
        self.top: tuple[list, list] = ([], [])    # the verdict, before the first screen
        self.verdicts: list[dict] = []            # harness.analysis.verdict rows, filled by sections
        self.section = ""                         # the anchor of the current analysis's section
        self.paths: list[Path] = []
        self.names: set[str] = set()
        self.anchors: dict[str, int] = {slug(f"Report: {study}"): 1}
        self.description = ""
        out_dir.mkdir(parents=True, exist_ok=True)

    # ------------------------------------------------------------ text

    def md(self, *lines: str):
        """Markdown lines: a '#' line is a heading, '- ' lines a list, others paragraphs
        (a blank line ends one)."""
        for line in lines:
            m = re.match(r"(#{2,6}) (.*)", line)
            if m:
                self.heading(len(m.group(1)), m.group(2))
                continue
            self.lines.append(line)
            self._html_line(line)

    def _html_line(self, line: str):
        last = self.blocks[-1] if self.blocks else None
        if not line.strip():
            if last is not None and last["kind"] in ("paragraph", "list"):
                last["closed"] = True
            return
        kind = "list" if line.startswith("- ") else "paragraph"
        text = line[2:] if kind == "list" else line
        if last is not None and last["kind"] == kind and not last.get("closed"):
            last["items"].append(text)
        else:
            self.blocks.append({"kind": kind, "items": [text]})

    def heading(self, level: int, text: str) -> str:
        """Write a heading; returns its anchor (unique in the report, as GitHub numbers them)."""
        base = slug(text)
        n = self.anchors.get(base, 0)
        self.anchors[base] = n + 1
        anchor = base if not n else f"{base}-{n}"
        self.lines.append(f"{'#' * level} {text}")
        self.blocks.append({"kind": "heading", "level": level, "text": text, "id": anchor})
        return anchor

    @contextmanager
    def _diverted(self, attr: str) -> Iterator[None]:
        saved, self.lines, self.blocks = (self.lines, self.blocks), [], []
        try:
            yield
        finally:
            lines, blocks = getattr(self, attr)
            setattr(self, attr, (lines + self.lines, blocks + self.blocks))
            self.lines, self.blocks = saved

    def first_screen(self):
        """What is written in the block goes to the top of the report, after its title."""
        return self._diverted("front")

    def verdict_first(self):
        """What is written in the block goes first, after the title, before the first screen."""
        return self._diverted("top")

    # ------------------------------------------------------------ files

    def _name(self, base: str, exts: tuple[str, ...]) -> str:
        """A file stem not yet used with any of ``exts`` (a figure and its table share one)."""
        base = re.sub(r"[^A-Za-z0-9_.=-]+", "_", base).strip("_") or "table"
        name, i = base, 2
        while any(name + e in self.names for e in exts):
            name, i = f"{base}_{i}", i + 1
        self.names.update(name + e for e in exts)
        return name

    def _write(self, filename: str, text: str | bytes) -> Path:
        path = self.dir / filename
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(text, encoding="utf-8")
        self.paths.append(path)
        return path

    def data(self, df: pd.DataFrame, base: str) -> str:
        """Write ``base``.csv only (data a sentence links to); returns the file name."""
        name = self._name(base, (".csv",))
        self._write(f"{name}.csv", render.csv(df))
        return f"{name}.csv"

    def table(self, df: pd.DataFrame, base: str, caption: str, *, index: bool = False,
              show: pd.DataFrame | None = None, inline: bool = True, digits: int = 4,
              tex: bool = True) -> str:
        """Write ``base``.csv and (``tex``) .tex; put ``show`` (default ``df``) into the
        report under its caption. A table not shown (``inline=False``) is one sentence
        linking its files, never a caption without its table."""
        name = self._name(base, (".csv", ".tex"))
        self._write(f"{name}.csv", render.csv(df, index=index))
        links = [("csv", f"{name}.csv")]
        if tex:
            self._write(f"{name}.tex", render.latex(df, index=index, caption=caption, digits=digits))
            links.append(("tex", f"{name}.tex"))
        files = ", ".join(f"[{label}]({href})" for label, href in links)
        shown = show if show is not None else df
        if not inline:
            self.md(f"*{caption}*: {len(df)} rows, not shown here ({files}).", "")
            return name
        self.lines += [f"*{caption}* ({files})", "", render.markdown(shown, index=index, digits=digits), ""]
        text = shown.reset_index() if index else shown
        self.blocks.append({"kind": "table", "caption": caption, "links": links,
                            "html": htmlpage.table_html(text, render.num, digits)})
        return name

    def figure(self, ax, base: str, caption: str) -> str:
        """Write ``base``.png (300 dpi) and ``base``.pdf (vector) and show the PNG."""
        from matplotlib.backends.backend_agg import FigureCanvasAgg

        name = self._name(base, (".png", ".pdf"))
        fig = ax.figure
        fig.tight_layout()
        FigureCanvasAgg(fig)
        png = io.BytesIO()
        fig.savefig(png, format="png", dpi=PNG_DPI, metadata={"Software": None})  # no version stamp
        self._write(f"{name}.png", png.getvalue())
        pdf = io.BytesIO()
        fig.savefig(pdf, format="pdf", metadata={"Creator": None, "Producer": None, "CreationDate": None})
        self._write(f"{name}.pdf", pdf.getvalue())
        self.lines += [f"![{caption}]({name}.png)", "", f"*{caption}* ([pdf]({name}.pdf))", ""]
        self.blocks.append({"kind": "figure", "caption": caption, "alt": caption, "pdf": f"{name}.pdf",
                            "src": "data:image/png;base64," + base64.b64encode(png.getvalue()).decode("ascii")})
        return name

    def finish(self) -> list[Path]:
        """Write report.md and report.html; returns every written path, the reports last."""
        stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        title = f"Report: {self.study}"
        head, head_blocks = [f"# {title}", "", f"_Generated {stamp} by `harness analyze`._", ""], []
        if self.description:
            head += [self.description, ""]
            head_blocks.append({"kind": "paragraph", "items": [self.description]})
        if self.summary:
            with self._diverted("front"):  # after the first screen
                self.md("## Published vs replicated", "", *(f"- {s}" for s in self.summary), "")
        lines = head + self.top[0] + self.front[0] + self.lines
        blocks = head_blocks + self.top[1] + self.front[1] + self.blocks
        md_path = self._write("report.md", "\n".join(lines).rstrip() + "\n")
        html_path = self._write("report.html", htmlpage.page(title, f"Generated {stamp} by harness analyze.", blocks))
        for path in (md_path, html_path):
            self.paths.remove(path)
        return self.paths + [md_path, html_path]


def at_label(labels: dict) -> str:
    return ", ".join(f"{k}={grouping.level_label(v)}" for k, v in labels.items()) or "all replications"


def stem(*parts: str, labels: dict | None = None) -> str:
    """File stem from parts and the slice labels: sig_val_mse_by_lam_latent-80."""
    parts += tuple(f"{k}-{grouping.level_label(v)}" for k, v in (labels or {}).items())
    return "_".join(p for p in parts if p)
