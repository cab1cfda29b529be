"""Figures from report tables. Each function takes ``ax=None`` and returns the axis; with no
axis it draws on a new ``matplotlib.figure.Figure`` (no pyplot, so no global state and no
display backend). Nothing here writes files."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib import cm
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from harness.analysis.grouping import level_label, matches, sorted_levels


def _axis(ax, size=(6.4, 4.4)):
    if ax is None:
        ax = Figure(figsize=size, dpi=100).add_subplot()
    return ax


def ci_plot(ci: pd.DataFrame, x: str, hue: str, *, ax=None, ylabel: str | None = None,
            logx: bool = False, logy: bool = False, confidence: float = 0.95):
    """Mean against ``x`` with t-interval error bars, one line per ``hue`` level.

    ``ci`` is ``summaries.ci_table`` output (columns hue, x, n, mean, lo, hi). Cells with
    fewer than 2 replications have no interval and are drawn as open markers.
    """
    ax = _axis(ax)
    levels = sorted_levels(ci[hue]) if len(ci) else []
    colors = cm.viridis(np.linspace(0, 0.9, max(len(levels), 1)))
    xs = np.sort(ci[x].astype(float).unique()) if len(ci) else np.array([])
    # dodge the lines a little so overlapping intervals stay readable (linear axes only)
    step = (np.min(np.diff(xs)) if len(xs) > 1 else 1.0) * 0.025 if not logx else 0.0
    marked = False
    for i, (level, color) in enumerate(zip(levels, colors)):
        d = ci[ci[hue] == level].sort_values(x)
        d = d[d["n"] > 0]
        xv = d[x].astype(float).to_numpy() + (i - (len(levels) - 1) / 2) * step
        mean = d["mean"].to_numpy(dtype=float)
        yerr = np.vstack([mean - d["lo"].to_numpy(dtype=float), d["hi"].to_numpy(dtype=float) - mean])
        ax.errorbar(xv, mean, yerr=np.nan_to_num(yerr), color=color, marker="o", ms=4,
                    capsize=3, lw=1.2, label=f"{hue} = {level_label(level)}")
        few = (d["n"] < 2).to_numpy()
        if few.any():
            ax.plot(xv[few], mean[few], "o", ms=9, mfc="none", mec="red", mew=1.2,
                    label=None if marked else "n < 2 (no interval)")
            marked = True
    if logx:
        ax.set_xscale("log")
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel(x)
    ax.set_ylabel(ylabel or "mean")
    ax.set_title(f"{ylabel or 'mean'} by {x}: mean ± {confidence:.0%} t-interval")
    ax.grid(alpha=0.3)
    if levels:
        ax.legend(fontsize=7, ncol=2)
    return ax


def curve_plot(curves: pd.DataFrame, hue: str, *, ax=None, ylabel: str | None = None,
               logy: bool = False, confidence: float = 0.95, min_share: float = 0.5):
    """Per-epoch means with a t-interval band, one line per ``hue`` level, drawn over the
    epochs where at least ``min_share`` of the level's replications still train.

    ``curves`` is ``summaries.curve_table`` output (columns hue, epoch, n, of, mean, lo, hi)."""
    ax = _axis(ax)
    levels = sorted_levels(curves[hue]) if len(curves) else []
    colors = cm.viridis(np.linspace(0, 0.9, max(len(levels), 1)))
    for level, color in zip(levels, colors):
        d = curves[matches(curves[hue], level) & (curves["n"] >= min_share * curves["of"])].sort_values("epoch")
        if not len(d):
            continue
        epochs = d["epoch"].to_numpy(dtype=float)
        ax.plot(epochs, d["mean"].to_numpy(dtype=float), color=color, lw=1.2,
                label=f"{hue} = {level_label(level)}")
        ax.fill_between(epochs, d["lo"].to_numpy(dtype=float), d["hi"].to_numpy(dtype=float),
                        color=color, alpha=0.15, lw=0)
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel or "mean")
    ax.set_title(f"{ylabel or 'mean'} per epoch: mean ± {confidence:.0%} t-interval\n"
                 f"while at least {min_share:.0%} of the replications train", fontsize=10)
    ax.grid(alpha=0.3)
    if levels:
        ax.legend(fontsize=7, ncol=2)
    return ax


def profile_plot(profiles: pd.DataFrame, *, ax=None, stages=("init", "final"), title=None):
    """Fig. 1 style: per layer, box plots over filters (and replications) of the entropy
    change; one box per stage side by side. ``profiles``: columns stage, layer, value."""
    layers = sorted(set(profiles["layer"])) if len(profiles) else []
    ax = _axis(ax, size=(max(6.4, 0.5 * len(layers) + 2), 4.4))
    stages = [s for s in stages if len(profiles) and (profiles["stage"] == s).any()]
    colors = dict(zip(stages, ["#9ecae1", "#fd8d3c", "#74c476", "#bcbddc"]))
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
                patch.set_facecolor(colors[stage])
    ax.set_xticks(range(len(layers)))
    ax.set_xticklabels([str(l) for l in layers])
    ax.set_xlabel("layer")
    ax.set_ylabel("entropy change per filter (nats)")
    ax.set_title(title or "Entropy change per filter", fontsize=10)
    ax.axhline(0, color="grey", lw=0.6)
    if stages:
        ax.legend(handles=[Patch(facecolor=colors[s], label=s) for s in stages], fontsize=8)
    ax.grid(alpha=0.3, axis="y")
    return ax
