"""Text rendering of report tables: Markdown, LaTeX and CSV as strings (no file access).

Numbers are formatted here once, so the report is byte-identical between reruns.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

_TEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
        "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\^{}",
        "λ": r"$\lambda$", "Δ": r"$\Delta$", "α": r"$\alpha$", "✓": r"\checkmark{}",
        "≠": r"$\neq$", "·": r"$\cdot$", "≥": r"$\geq$", "±": r"$\pm$", "—": "--", "–": "--"}


def num(value, digits: int = 4) -> str:
    """A cell: NaN → "–", integers as integers, other floats with ``digits`` significant."""
    if value is None:
        return "–"
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        v = float(value)
        if math.isnan(v):
            return "–"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        if v == int(v) and abs(v) < 1e6:
            return str(int(v))
        return f"{v:.{digits}g}"
    return str(value)


def signed(value, digits: int = 4) -> str:
    """A difference with its sign always shown: +0.0052."""
    s = num(value, digits)
    return s if s.startswith(("-", "–")) else "+" + s


def markdown(df: pd.DataFrame, index: bool = False, digits: int = 4) -> str:
    """A GitHub Markdown table; ``index=True`` puts the index (its name as header) first."""
    if index:
        df = df.reset_index().rename(columns={"index": df.index.name or ""})
    head = [str(c) for c in df.columns]
    rows = [[num(v, digits).replace("|", "\\|") for v in r] for r in df.itertuples(index=False)]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _tex_escape(text: str) -> str:
    return "".join(_TEX.get(ch, ch) for ch in text)


def latex(df: pd.DataFrame, index: bool = False, caption: str | None = None, digits: int = 4) -> str:
    """A booktabs ``tabular`` (wrapped in ``table`` with a caption when one is given)."""
    if index:
        df = df.reset_index().rename(columns={"index": df.index.name or ""})
    align = "".join("r" if pd.api.types.is_numeric_dtype(df[c]) else "l" for c in df.columns)
    lines = [rf"\begin{{tabular}}{{{align}}}", r"\toprule",
             " & ".join(_tex_escape(str(c)) for c in df.columns) + r" \\", r"\midrule"]
    for r in df.itertuples(index=False):
        lines.append(" & ".join(_tex_escape(num(v, digits)) for v in r) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    if caption:
        lines = [r"\begin{table}[ht]", r"\centering", rf"\caption{{{_tex_escape(caption)}}}"] + \
            lines + [r"\end{table}"]
    return "\n".join(lines) + "\n"


def csv(df: pd.DataFrame, index: bool = False) -> str:
    """CSV text with full-precision-but-stable floats (10 significant digits)."""
    return df.to_csv(index=index, float_format="%.10g", lineterminator="\n")
