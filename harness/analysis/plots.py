"""Figures from report tables, camera-ready: axis labels in words with symbols (λ₁,
"validation MSE"), seaborn's colour-blind-safe palette with a marker and a line style per
level (so levels differ in grayscale too), a log y axis where the plotted range spans more
than a decade, a log x for λ. Each function takes ``ax=None`` and returns the axis; with no
axis it draws on a new ``matplotlib.figure.Figure`` (no pyplot, so no global state and no
display backend). Nothing here writes files."""

from __future__ import annotations

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from harness.analysis import words
from harness.analysis.grouping import level_label, matches, sorted_levels

MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "h", "<")
LINESTYLES = ("-", "--", ":", "-.")
BAND_ALPHA = 0.2


def _axis(ax, size=(6.4, 4.4)):
    if ax is None:
        ax = Figure(figsize=size, dpi=100).add_subplot()
    return ax


def styles(n: int) -> list[dict]:
    """Per level: a colour of seaborn's "colorblind" palette, a marker and a line style."""
    colors = sns.color_palette("colorblind", max(n, 1))
    return [dict(color=colors[i % len(colors)], marker=MARKERS[i % len(MARKERS)],
                 ls=LINESTYLES[i % len(LINESTYLES)]) for i in range(n)]


def spans_decades(lo, hi) -> bool:
    """Whether positive values from ``lo`` to ``hi`` span more than a decade (a log axis)."""
    lo, hi = np.asarray(lo, dtype=float), np.asarray(hi, dtype=float)
    lo, hi = lo[np.isfinite(lo)], hi[np.isfinite(hi)]
    return bool(len(lo) and len(hi) and lo.min() > 0 and hi.max() / lo.min() > 10)


def _scales(ax, x: str, xs, logx: bool, logy: bool | None, lo, hi):
    """λ on a log x (symmetric, linear below its smallest positive level, so 0 shows);
    y on a log scale when asked, or when ``logy`` is None and the range spans a decade."""
    positive = np.asarray(xs, dtype=float)
    positive = positive[positive > 0]
    if x == "lam" and len(positive) > 1:
        ax.set_xscale("symlog", linthresh=float(positive.min()), linscale=0.5)
    elif logx:
        ax.set_xscale("log")
    if logy or (logy is None and spans_decades(lo, hi)):
        ax.set_yscale("log")


def _every(n: int, i: int, levels: int) -> tuple[int, int]:
    """About 8 markers a line, each level's shifted so that overlapping lines show them all."""
    step = max(n // 8, 1)
    return (i * step // max(levels, 1)) % step, step


def _legend_label(hue: str, level) -> str:
    return f"{words.axis(hue)} = {level_label(level)}"


def ci_plot(ci: pd.DataFrame, x: str, hue: str, *, ax=None, ylabel: str | None = None,
            logx: bool = False, logy: bool | None = None, confidence: float = 0.95):
    """Mean against ``x`` with t-interval error bars, one line per ``hue`` level.

    ``ci`` is ``summaries.ci_table`` output (columns hue, x, n, mean, lo, hi). Cells with
    fewer than 2 replications have no interval and are drawn as open markers. ``ylabel``
    is the metric's name (shown in words); ``logy=None`` picks the scale from the range.
    """
    ax = _axis(ax)
    levels = sorted_levels(ci[hue]) if len(ci) else []
    xs = np.sort(ci[x].astype(float).unique()) if len(ci) else np.array([])
    # dodge the lines a little so overlapping intervals stay readable (linear axes only)
    step = (np.min(np.diff(xs)) if len(xs) > 1 else 1.0) * 0.025 if not logx and x != "lam" else 0.0
    marked = False
    for i, (level, style) in enumerate(zip(levels, styles(len(levels)))):
        d = ci[ci[hue] == level].sort_values(x)
        d = d[d["n"] > 0]
        xv = d[x].astype(float).to_numpy() + (i - (len(levels) - 1) / 2) * step
        mean = d["mean"].to_numpy(dtype=float)
        yerr = np.vstack([mean - d["lo"].to_numpy(dtype=float), d["hi"].to_numpy(dtype=float) - mean])
        ax.errorbar(xv, mean, yerr=np.nan_to_num(yerr), color=style["color"], marker=style["marker"],
                    ls=style["ls"], ms=5, capsize=3, lw=1.3, label=_legend_label(hue, level))
        few = (d["n"] < 2).to_numpy()
        if few.any():
            ax.plot(xv[few], mean[few], "o", ms=10, mfc="none", mec="black", mew=1.2,
                    label=None if marked else "n < 2 (no interval)")
            marked = True
    values = ci[ci["n"] > 0] if len(ci) else ci
    _scales(ax, x, xs, logx, logy, values["lo"].fillna(values["mean"]) if len(values) else [],
            values["hi"].fillna(values["mean"]) if len(values) else [])
    name = words.axis(ylabel) if ylabel else "mean"
    ax.set_xlabel(words.axis(x))
    ax.set_ylabel(name)
    ax.set_title(f"{words.capital(name)} by {words.axis(x)}: mean ± {confidence:.0%} t-interval")
    ax.grid(alpha=0.3, which="major")
    if levels:
        ax.legend(fontsize=7, ncol=2)
    return ax


def curve_plot(curves: pd.DataFrame, hue: str, *, ax=None, ylabel: str | None = None,
               logy: bool | None = None, confidence: float = 0.95, min_share: float = 0.5):
    """Per-epoch means with a t-interval band, one line per ``hue`` level, drawn over the
    epochs where at least ``min_share`` of the level's replications still train.

    ``curves`` is ``summaries.curve_table`` output (columns hue, epoch, n, of, mean, lo, hi)."""
    ax = _axis(ax)
    levels = sorted_levels(curves[hue]) if len(curves) else []
    drawn = []
    for i, (level, style) in enumerate(zip(levels, styles(len(levels)))):
        d = curves[matches(curves[hue], level) & (curves["n"] >= min_share * curves["of"])].sort_values("epoch")
        if not len(d):
            continue
        drawn.append(d)
        epochs = d["epoch"].to_numpy(dtype=float)
        ax.plot(epochs, d["mean"].to_numpy(dtype=float), color=style["color"], ls=style["ls"], lw=1.3,
                marker=style["marker"], ms=4, markevery=_every(len(d), i, len(levels)), label=_legend_label(hue, level))
        ax.fill_between(epochs, d["lo"].to_numpy(dtype=float), d["hi"].to_numpy(dtype=float),
                        color=style["color"], alpha=BAND_ALPHA, lw=0)
    shown = pd.concat(drawn) if drawn else curves.iloc[:0]
    _scales(ax, "epoch", [], False, logy, shown["lo"].fillna(shown["mean"]), shown["hi"].fillna(shown["mean"]))
    name = words.axis(ylabel) if ylabel else "mean"
    ax.set_xlabel("epoch")
    ax.set_ylabel(name)
    ax.set_title(f"{words.capital(name)} per epoch: mean ± {confidence:.0%} t-interval\n"
                 f"while at least {min_share:.0%} of the replications train", fontsize=10)
    ax.grid(alpha=0.3)
    if levels:
        ax.legend(fontsize=7, ncol=2)
    return ax


def profile_plot(profiles: pd.DataFrame, *, ax=None, stages=("init", "final"), title=None):
    """Fig. 1 style: per layer, box plots over filters (and replications) of the entropy
    change; one box per stage side by side, told apart by colour and hatching.
    ``profiles``: columns stage, layer, value."""
    layers = sorted(set(profiles["layer"])) if len(profiles) else []
    ax = _axis(ax, size=(max(6.4, 0.5 * len(layers) + 2), 4.4))
    stages = [s for s in stages if len(profiles) and (profiles["stage"] == s).any()]
    palette = sns.color_palette("colorblind", max(len(stages), 1))
    looks = {s: dict(facecolor=palette[j], hatch=("", "//", "..", "xx")[j % 4]) for j, s in enumerate(stages)}
    width = 0.8 / max(len(stages), 1)
    for j, stage in enumerate(stages):
        st = profiles[profiles["stage"] == stage]
        data, pos = [], []
        for i, layer in enumerate(layers):
            v = st.loc[st["layer"] == layer, "value"].to_numpy(dtype=float)
            v = v[np.isfinite(v)]
            if len(v):
                data.append(v)
                pos.append(i + (j - (len(stages) - 1) / 2) * width)
        if data:
            box = ax.boxplot(data, positions=pos, widths=width * 0.9, patch_artist=True,
                             manage_ticks=False, flierprops=dict(ms=2),
                             medianprops=dict(color="black"))
            for patch in box["boxes"]:
                patch.set(**looks[stage], alpha=0.85)
    ax.set_xticks(range(len(layers)))
    ax.set_xticklabels([str(l) for l in layers])
    ax.set_xlabel("layer")
    ax.set_ylabel("entropy change per filter (nats)")
    ax.set_title(title or "Entropy change per filter", fontsize=10)
    ax.axhline(0, color="grey", lw=0.6)
    if stages:
        ax.legend(handles=[Patch(**looks[s], label=s) for s in stages], fontsize=8)
    ax.grid(alpha=0.3, axis="y")
    return ax
