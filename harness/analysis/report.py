"""``harness analyze``: one report per study, from the store alone.

``analyze(store, studies, out_dir)`` writes ``out_dir/<study>/report.md`` and, for every
table, ``<name>.csv`` and ``<name>.tex``, for every figure ``<name>.png``. This is the only
module of the analysis that writes files. Apart from the one "Generated" line, reruns on
the same database are byte-identical.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from harness.analysis import omnibus, paper, plots, protocol, render, stats, tables
from harness.analysis.claims import claim_cells, claim_sentence
from harness.stopping import STOPPING_RULE
from harness.analysis.spec import (AnalysisError, CIPlot, Claims, CurvePlot, ProfilePlot, ProtocolEffect,
                                   SignificanceTable, SummaryTable, Table1, Table2, describe,
                                   spec_from_dict)

__all__ = ["AnalysisError", "analyze", "study_report"]

REPLICATE_KEYS = ("seed",)  # grid keys that are replications, not factors


def analyze(store, studies: list[str] | None, out_dir: Path) -> list[Path]:
    """Write the report of each study (all studies in the store when ``studies`` is empty).

    Raises ``AnalysisError`` (one line) for an unknown study or one with nothing recorded;
    everything is checked before anything is written. Returns the written paths.
    """
    known = list(store.studies())
    names = list(studies) if studies else known
    if not names:
        raise AnalysisError("the database holds no studies; run `harness run STUDY` first")
    for name in names:
        if name not in known:
            match = difflib.get_close_matches(name, known, n=1)
            hint = f"; did you mean {match[0]!r}?" if match else ""
            raise AnalysisError(f"unknown study {name!r}{hint} (in the database: {', '.join(known) or 'none'})")
    frames = {name: store.frame(name) for name in names}
    empty = [n for n in names if not len(frames[n])]
    if empty and (studies or len(empty) == len(names)):
        raise AnalysisError(f"study {empty[0]!r} has nothing recorded; run `harness run {empty[0]}` first")
    names = [n for n in names if n not in empty]
    definitions = {name: store.study_definition(name) for name in names}
    specs = {name: _specs(definitions[name]) for name in names}  # a bad spec fails before anything is written
    paths = []
    for name in names:
        # the per-epoch history is most of a study's data: read only for the curves that use it
        wants_history = any(isinstance(spec, CurvePlot) for spec in specs[name])
        paths += study_report(definitions[name], frames[name], store.profiles(name), Path(out_dir) / name,
                              hosts=store.hosts(), history=store.history(name) if wants_history else None)
    return paths


@dataclass(frozen=True)
class _Recorded:
    """What a study recorded besides its replication frame, for the sections that use it."""

    profiles: pd.DataFrame | None = None  # Store.profiles: entropy change per layer and filter
    history: pd.DataFrame | None = None   # Store.history: one row per replication and epoch


def _specs(definition: dict) -> list:
    try:
        return [spec_from_dict(d) for d in definition.get("analyses", [])]
    except AnalysisError as e:
        raise AnalysisError(f"study {definition.get('name')!r}: {e}") from None


def study_factors(definition: dict, frame: pd.DataFrame) -> tuple[list[str], list[str]]:
    """Config keys that vary among the recorded replications (seed excluded): the grid's
    axes first, then settings that runs with different overrides left varying."""
    grid = list(definition.get("grid", {}) or {})
    settings = sorted(k for k in definition.get("settings", {}) or {} if k not in grid)
    varying = [k for k in grid + settings if k not in REPLICATE_KEYS and k in frame.columns
               and frame[k].astype(str).nunique() > 1]
    return varying, [k for k in varying if k not in grid]


def study_report(definition: dict, frame: pd.DataFrame, profiles: pd.DataFrame | None,
                 out_dir: Path, hosts: dict | None = None, history: pd.DataFrame | None = None) -> list[Path]:
    """Write one study's report from plain data (definition dict, replication frame,
    profile frame, {host: machine description}, per-epoch history frame) into ``out_dir``;
    returns the written paths."""
    specs = _specs(definition)
    r = _Report(Path(out_dir), definition.get("name", Path(out_dir).name))
    # sorted so that sums, and hence every number, do not depend on recording order
    frame = frame.sort_values("id", kind="stable").reset_index(drop=True)
    if profiles is not None and len(profiles):
        profiles = profiles.sort_values(["id", "stage", "layer", "filter"], kind="stable")
    if history is not None and len(history):
        history = history.sort_values(["id", "epoch"], kind="stable")
    recorded = _Recorded(profiles, history)
    factors, stray = study_factors(definition, frame)
    _which_protocol(r, specs, frame, factors)
    _header(r, definition, frame, factors)
    _where_and_how_long(r, frame, hosts or {})
    if stray:
        r.md(f"**Note:** {', '.join(stray)} vary among the recorded replications though not "
             "grid axes (runs with different overrides); every table is split by them.", "")
    for spec in specs:
        r.md(f"## {describe(spec)}", "")
        try:
            for metric in _metrics(spec):
                tables.check_metric(frame, metric)
            _SECTIONS[type(spec)](r, spec, frame, recorded, factors)
        except KeyError as e:  # a metric or column the results do not have
            r.md(f"**Skipped:** {e.args[0]}.", "")
    if not specs:
        r.md("The study declares no analyses (`Study(..., analyses=[...])`).", "")
    _diagnostics(r, frame, factors)
    _methods(r)
    return r.finish()


def _metrics(spec) -> list[str]:
    """The frame columns a spec needs (a curve's metric is a history column, checked there)."""
    if isinstance(spec, Table1):
        return [spec.metric_train, spec.metric_val]
    if isinstance(spec, CurvePlot):
        return []
    return [spec.metric] if hasattr(spec, "metric") else []


# ---------------------------------------------------------------- report writer

class _Report:
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


def _at_label(labels: dict) -> str:
    return ", ".join(f"{k}={tables.level_label(v)}" for k, v in labels.items()) or "all replications"


def _at(labels: dict) -> str:
    """' at latent=80' or '' for a heading."""
    return f" at {_at_label(labels)}" if labels else ""


def _stem(*parts: str, labels: dict | None = None) -> str:
    """File stem from parts and the slice labels: sig_val_mse_by_lam_latent-80."""
    parts += tuple(f"{k}-{tables.level_label(v)}" for k, v in (labels or {}).items())
    return "_".join(p for p in parts if p)


# ---------------------------------------------------------------- fixed sections

def _which_protocol(r: _Report, specs: list, frame: pd.DataFrame, factors: list[str]):
    """'Which protocol reproduces the paper?': on the first screen, where the results hold
    more than one protocol arm (harness.analysis.protocol) and the study compares with
    published tables or claims."""
    sign_specs = [s for s in specs if isinstance(s, SignificanceTable) and s.published in paper.SIGN_TABLES]
    claims = next((paper.CLAIMS[s.published] for s in specs if isinstance(s, Claims) and s.published in paper.CLAIMS), None)
    if not protocol.arm_keys(frame) or not (sign_specs or claims):
        return
    arms = protocol.protocol_arms(frame, sign_specs, claims, factors)
    with r.first_screen():
        r.md("## Which protocol reproduces the paper?", "",
             "One row per protocol arm in the results (the settings that make a framework's protocol: "
             f"{', '.join(protocol.arm_keys(frame))}). Sign-table cells: uncorrected tests, as the paper's. "
             "Claims, in order: " + "; ".join(f"{i}. “{c['text']}”" for i, c in enumerate((claims or {}).get("claims", ()), 1))
             + ". grad_ratio: the guidance gradient's norm over the task gradient's on the guided weights, the "
             "largest mean over λ > 0; term_led: the share of the weights it acts on where it outweighs the task gradient; "
             "target moved: the λ > 0 levels whose final log|det W| (log|c11|) differs from λ = 0's (Welch, α = 0.01), "
             "which an arm that stops earlier also changes.",
             "")
        r.table(arms, "protocol_arms", "Protocol arms against the published tables and claims")
        r.md(f"**{protocol.protocol_sentence(arms, sign_specs)}**", "")


def _header(r: _Report, definition: dict, frame: pd.DataFrame, factors: list[str]):
    settings = definition.get("settings", {}) or {}
    grid = definition.get("grid", {}) or {}
    counts = frame["status"].value_counts()
    n_done = int(counts.get("done", 0))
    bad = ", ".join(f"{int(counts.get(s, 0))} {s}" for s in ("diverged", "failed"))
    other = sorted(set(counts.index) - {"done", "diverged", "failed"})
    bad += "".join(f", {int(counts[s])} {s}" for s in other)
    r.description = str(definition.get("description") or "")
    r.md("## Replications", "",
         f"{len(frame)} replications recorded: {n_done} done, {bad}. "
         "Only done replications enter the statistics; every grid cell is kept below.", "")
    prov = []
    for col in ("harness_version", "torch_version", "git_commit", "device"):
        if col in frame.columns:
            vals = sorted(str(v) for v in frame[col].dropna().unique())
            prov.append(f"{col}: {', '.join(vals) or 'n/a'}")
    if prov:
        r.md("Provenance — " + "; ".join(prov) + ".", "")
    cells = tables.status_counts(frame, factors)
    cells["note"] = np.where(cells["done"] < 2, "fewer than 2 done", "")
    if "hit_max_epochs" in cells and cells["hit_max_epochs"].sum():
        r.md(f"**{int(cells['hit_max_epochs'].sum())} of {n_done} done replications stopped at "
             "train.max_epochs**: their stopping epoch is censored at the cap, so stop_epoch "
             "differences involving them are understated.", "")
    few = int((cells["done"] < 2).sum())
    if few:
        r.md(f"**{few} grid cell(s) have fewer than 2 done replications** (marked `?` in the tests).", "")
    r.table(cells, "replications", "Replications per grid cell by status", inline=len(cells) <= 40)
    if "error" in frame.columns:
        errors = frame.loc[frame["status"] != "done", "error"].dropna().astype(str)
        for msg, n in sorted(errors.value_counts().items())[:10]:
            r.md(f"- {n} × `{msg.splitlines()[0][:200] if msg else ''}`")
        r.md("")
    r.md("## Open choices (PAPER.md §4)", "")
    r.table(tables.open_choices(settings, frame), "open_choices",
            "The paper's open choices and the values these replications used")
    grid_df = pd.DataFrame([{"key": k, "values": ", ".join(tables.level_label(v) for v in vals)}
                            for k, vals in grid.items()], columns=["key", "values"])
    set_df = pd.DataFrame([{"key": k, "value": tables.level_label(v) if not isinstance(v, (list, dict)) else str(v)}
                           for k, v in sorted(settings.items()) if k not in grid],
                          columns=["key", "value"])
    r.table(grid_df, "grid", "Grid axes")
    r.table(set_df, "settings", "All fixed settings of the study", inline=len(set_df) <= 60)


def _where_and_how_long(r: _Report, frame: pd.DataFrame, hosts: dict):
    """On what machine, and in how long: the hosts' descriptions, the first start and last
    finish, and the compute time (sum of each replication's wall time; a packed member's is
    its share of its pack's)."""
    if "host" not in frame.columns or not frame["host"].notna().any():
        return
    lines = []
    for host in sorted(frame["host"].dropna().unique()):
        on = frame[frame["host"] == host]
        devices = ", ".join(sorted(on["device"].dropna().astype(str).unique())) if "device" in on else ""
        d = hosts.get(host)
        what = (f"{d.get('cpu')}, {d.get('cpus')} logical CPUs, {d.get('memory_gib')} GiB memory, "
                f"GPUs: {', '.join(d.get('gpus') or []) or 'none'}" if d else "no machine description recorded")
        lines.append(f"- `{host}` ({what}): {len(on)} replications on {devices or 'n/a'}.")
    start, end = frame["started_at"].dropna(), frame["finished_at"].dropna()
    wall = frame["wall_s"].dropna().astype(float)
    if len(start) and len(end):
        span = (pd.to_datetime(end).max() - pd.to_datetime(start).min()).total_seconds()
        lines.append(f"- From {start.min()} to {end.max()} ({_duration(span)} wall clock, pauses "
                     f"between runs included); {_duration(float(wall.sum()))} of training in all "
                     "(the sum of each replication's wall time, a packed member counting its "
                     "share of the pack's).")
    r.md("## Machines and time", "", *lines, "")


def _duration(seconds: float) -> str:
    hours, rest = divmod(int(round(seconds)), 3600)
    return f"{hours} h {rest // 60:02d} min" if hours else f"{rest // 60} min {rest % 60:02d} s"


def _diagnostics(r: _Report, frame: pd.DataFrame, factors: list[str]):
    if "lam" not in frame.columns:
        return
    parts, sentences = [], []
    for labels, sub in tables.slices(frame, None, factors, exclude=("lam",)):
        sentence = tables.guidance_sentence(sub)
        if sentence:  # per slice: log|det W| of other widths or protocols is not comparable
            sentences.append(f"{sentence}{' (' + _at_label(labels) + ')' if labels else ''}")
        d = tables.diagnostics(sub, "lam")
        if len(d):
            for k, v in reversed(list(labels.items())):
                d.insert(0, k, v)
            parts.append(d)
    if not parts:
        return
    table = pd.concat(parts, ignore_index=True)
    r.md("## Entropy diagnostics per λ", "",
         "grad_ratio = ||∇ of λ·entropy term|| / ||∇ of task loss|| on the guided layers "
         "(mean over epochs); term_led = share of the weights the term acts on where its gradient "
         "outweighs the task's (mean over epochs); logdet_mean = log|det W| of the guided dense layers; "
         "log_c11_mean = mean log|c11| of guided conv filters; entropy_loss = final unweighted "
         "guidance term. A grad_ratio far below 1 is a small gradient in norm, not necessarily "
         "no effect: Adam scales each weight's step by its own gradient history, so a weight "
         "the task loss does not move (one on an input that is always 0) follows even a tiny "
         "guidance gradient at full step size; compare logdet_mean with λ = 0.", "")
    r.summary += sentences
    r.md(*(f"- {s}." for s in sentences), "")
    keep = [c for c in table.columns if not c.endswith("_sd")]
    r.table(table, "diagnostics", "Entropy diagnostics (mean per cell; sd in the CSV)",
            show=table[keep], inline=len(table) <= 60)


def _methods(r: _Report):
    r.md("## Methods", "",
         "- Sign tables: two-sided two-sample t-test of row level vs column level on the done "
         "replications; `+` row mean significantly higher, `-` lower, blank not significant at α, "
         "`?` fewer than 2 replications in a group (untestable, kept). Both groups constant: "
         "p = 0 if the means differ, else 1.",
         "- Correction: across the unordered pairs of one table (the study's `correction`, "
         "statsmodels `multipletests` definitions), shown beside the uncorrected table; the "
         "paper did not correct.",
         "- Hedges' g = J·d with J = 1 − 3/(4·df − 1) and a normal-approximation 95% CI; "
         "minimum detectable effect (mde) = smallest true difference found with power 0.8 at α "
         "with the replications at hand (noncentral t), in metric units via the pooled sd. "
         "A blank cell with a small mde says \"no effect of that size\"; a large mde says "
         "\"too few seeds\".",
         "- Table 1: one-tailed t-test, H1: mean with entropy loss > mean at λ = 0, at the λ > 0 "
         "with the best mean validation metric; because that λ is chosen after seeing the data, "
         "its p-values are also corrected over all λ > 0 levels (`_adj`).",
         "- Paired by seed: a replication's initial weights and data order come from its seed "
         "alone, so replications with the same seed at two levels (common random numbers) differ "
         "only in that level. The paired tables compare each level with the lowest seed by seed "
         "(paired t-test on the differences, t-interval of the mean difference; `identical`: "
         "pairs with exactly equal values; `seed_r`: the correlation of the two over seeds). "
         "The unpaired sign tables, as the paper, ignore this pairing: where `seed_r` is near 1 "
         "they are far less sensitive than the paired test.",
         "- Intervals: mean ± t(0.975, n − 1)·sd/√n, computed per cell (not a bootstrap).", "")


# ---------------------------------------------------------------- declared analyses

def _significance(r: _Report, spec: SignificanceTable, frame, recorded, factors):
    pub = paper.SIGN_TABLES.get(spec.published) if spec.published else None
    if spec.published and pub is None:
        r.md(f"**Unknown published table {spec.published!r}** (known: {', '.join(paper.SIGN_TABLES)}).", "")
    for labels, sub in tables.slices(frame, spec.at, factors, exclude=(spec.factor,)):
        where = _at_label(labels)
        base = _stem("sig", spec.metric, "by", spec.factor, labels=labels)
        r.md(f"### {spec.metric} by {spec.factor}{_at(labels)}", "")
        if not len(sub):
            r.md(f"No replications at {where}.", "")
            continue
        grp = tables.groups(sub, spec.metric, spec.factor)
        if len(grp) < 2:  # a grid still being run: say so, show what there is
            _levels_table(r, grp, spec.factor, spec.metric, base)
            r.md(f"Only {spec.factor} = {', '.join(tables.level_label(l) for l in grp)} has replications "
                 f"at {where}: nothing to compare yet.", "")
            continue
        rank = spec.metric in omnibus.DISCRETE
        n_censored = omnibus.censored(sub, spec.metric)
        survival = _survival(sub, spec) if n_censored else None
        long = tables.pairwise(grp, alpha=spec.alpha, test=spec.test, correction=spec.correction,
                               power=spec.power, equivalence=_margin(spec), rank=rank, survival=survival)
        n_pairs = len(grp) * (len(grp) - 1) // 2
        r.md(f"{spec.test.capitalize()} two-sided t-tests, α = {spec.alpha:g}, "
             f"{n_pairs} pair{'s' * (n_pairs != 1)}; {spec.correction} correction across them "
             f"shown beside; equivalence: pooled TOST within ±{100 * _margin(spec):g}% of the pair's mean."
             + (f" {spec.metric} is a count with ties: `p_rank` is the Mann-Whitney U test beside the t-test."
                if rank else "")
             + (f" **{n_censored} replication(s) here reached train.max_epochs**, so their {spec.metric} is "
                "censored at the cap: `p_logrank` compares the levels as times to stop (log-rank test)."
                if n_censored else ""), "")
        _levels_table(r, grp, spec.factor, spec.metric, base)
        gone = tables.left_out_sentence(sub, spec.metric, spec.factor)
        if gone:
            r.md(f"**{gone}**", "")
        _omnibus(r, sub, spec, base, where)
        raw = tables.sign_matrix(long, "sign")
        adj = tables.sign_matrix(long, "sign_adj")
        raw.index.name = adj.index.name = f"{spec.factor} row \\ col"
        r.table(long, base, f"All pairwise tests of {spec.metric} by {spec.factor} at {where}",
                inline=False)
        r.table(raw, base + "_signs", f"Sign table, uncorrected (as the paper): {spec.metric}, {where}", index=True)
        r.table(adj, base + f"_signs_{spec.correction}",
                f"Sign table, {spec.correction}-corrected: {spec.metric}, {where}", index=True)
        _blank_cells(r, long, spec)
        if pub is not None:
            _vs_published(r, spec, labels, raw, adj, pub, base, long)
        _paired(r, sub, spec, labels, base)


def _margin(spec: SignificanceTable) -> float:
    return tables.margin(spec.metric) if spec.equivalence is None else spec.equivalence


def _survival(sub, spec) -> dict:
    """{level: (stopping epochs, events)} of a slice, the log-rank test's input."""
    times, events, labels = omnibus.survival(sub, spec.metric, spec.factor, omnibus.CENSORED[spec.metric])
    levels = tables.sorted_levels(sub[spec.factor])
    return {level: (times[labels == tables.level_label(level)], events[labels == tables.level_label(level)])
            for level in levels}


def _omnibus(r, sub, spec, base, where):
    """Does the factor matter at all: unpaired, seed-blocked, rank and censored versions."""
    table = omnibus.omnibus(sub, spec.metric, spec.factor)
    tested = table[np.isfinite(table["p"].astype(float))]
    if not len(tested):
        return
    parts = [f"{t} p = {render.num(p, 2)}" for t, p in zip(tested["test"], tested["p"])]
    blocked = "The seed sets a replication's initial weights and data order, so the blocked tests compare the " \
              "levels within each seed."
    if "seed" in sub.columns and not table["unit"].eq("seed").any():
        blocked = (f"No seed-blocked test: fewer than 2 seeds have every {spec.factor} level done with a finite "
                   f"{spec.metric}.")
    r.md(f"**Omnibus tests of {spec.factor}** (does it matter at all?): {'; '.join(parts)}. {blocked}", "")
    r.table(table, base + "_omnibus", f"Omnibus tests of {spec.factor} on {spec.metric}, {where}")


def _levels_table(r, grp, factor, metric, base):
    rows = []
    for level, vals in grp.items():
        mean, lo, hi = stats.t_interval(vals)
        rows.append({factor: level, "n": len(vals), "mean": mean, "ci_lo": lo, "ci_hi": hi,
                     "sd": vals.std(ddof=1) if len(vals) > 1 else np.nan,
                     "note": "fewer than 2" if len(vals) < 2 else ""})
    r.table(pd.DataFrame(rows), base + "_levels", f"{metric} per {factor}: mean and 95% t-interval")


def _blank_cells(r, long, spec):
    half = long[[tables.sort_key(a) < tables.sort_key(b) for a, b in zip(long["row"], long["col"])]]
    blank = half[half["sign"] == ""]
    sig = half[half["sign"].isin(["+", "-"])]
    unt = half[half["sign"] == tables.UNTESTABLE]
    text = f"{len(sig)} significant, {len(blank)} blank, {len(unt)} untestable pairs (uncorrected)."
    if len(blank):
        mde = blank["mde"].to_numpy(dtype=float)
        low, high = render.num(np.nanmin(mde), 3), render.num(np.nanmax(mde), 3)
        largest = render.num(np.nanmax(np.abs(blank["diff"].to_numpy(dtype=float))), 3)
        one = len(blank) == 1
        text += (f" For the blank {'pair' if one else 'pairs'}, a true difference of "
                 f"{low if low == high else f'{low}–{high}'} ({spec.metric} units) would have been "
                 f"found with power {spec.power:g}; the largest observed |difference| "
                 f"{'is' if one else 'among them is'} {largest}.")
    r.md(text, "")


def _paired(r, sub, spec, labels, base):
    """The same comparison seed by seed: every level against the lowest, paired."""
    paired = tables.paired_by_seed(sub, spec.metric, spec.factor, alpha=spec.alpha, correction=spec.correction,
                                   equivalence=_margin(spec), rank=spec.metric in omnibus.DISCRETE)
    if not (paired["n_pairs"] >= 2).any():
        return
    sentence = tables.paired_sentence(paired, spec.metric, spec.factor, spec.alpha, _margin(spec))
    r.summary.append(f"{spec.metric} by {spec.factor} at {_at_label(labels)}, paired by seed: {sentence}")
    r.md(f"**Paired by seed.** A replication's initial weights and data order come from its seed "
         f"alone, so each {spec.factor} level can also be compared with the lowest seed by seed, "
         f"without the seed-to-seed spread the unpaired tests above keep: {sentence}.", "")
    r.table(paired, base + "_paired", f"Each {spec.factor} against {spec.factor} = "
            f"{tables.level_label(paired['vs'].iloc[0])}, paired by seed ({spec.correction} across levels)")


def _vs_published(r, spec, labels, raw, adj, pub, base, long):
    theirs = tables.published_signs(spec.published)
    theirs.index.name = f"{spec.factor} row \\ col"
    note = ""
    if dict(pub["at"]) != {k: v for k, v in labels.items() if k in pub["at"]}:
        note = f" (published at {_at_label(pub['at'])}; this table is at {_at_label(labels)})"
    cmp_raw, counts = tables.compare_signs(raw, theirs)
    _, counts_adj = tables.compare_signs(adj, theirs)
    cmp_raw.index.name = theirs.index.name
    sentence = (f"{pub['title']}{note}: {counts['agree']} of {counts['compared']} cells agree "
                f"uncorrected, {counts_adj['agree']} of {counts_adj['compared']} after "
                f"{spec.correction}{tables.caveats(counts)}; of its {len(long) // 2} pairs, "
                f"{tables.verdict_counts(long)} (t-test; pooled TOST within ±"
                f"{100 * _margin(spec):g}% of the pair's mean).")
    r.summary.append(f"{spec.metric} by {spec.factor} at {_at_label(labels)} vs {sentence}")
    r.md(f"**Published vs replicated.** {sentence}", "")
    r.table(theirs, base + f"_{spec.published}", f"Published: {pub['title']}", index=True)
    r.table(cmp_raw, base + f"_vs_{spec.published}",
            "Cell by cell (✓ agree; ours≠paper, · blank; ? untestable)", index=True)


def _ci_plot(r: _Report, spec: CIPlot, frame, recorded, factors):
    for labels, sub in tables.slices(frame, spec.at, factors, exclude=(spec.x, spec.hue)):
        where = _at_label(labels)
        base = _stem("ci", spec.metric, "by", spec.x, spec.hue, labels=labels)
        r.md(f"### {spec.metric} against {spec.x} by {spec.hue}{_at(labels)}", "")
        ci = tables.ci_table(sub, spec.metric, spec.x, spec.hue, spec.confidence)
        ax = plots.ci_plot(ci, spec.x, spec.hue, ylabel=spec.metric, logx=spec.logx,
                           logy=spec.logy, confidence=spec.confidence)
        r.figure(ax, base, f"{spec.metric}: mean ± {spec.confidence:.0%} t-interval, {where}")
        few = ci[ci["n"] < 2]
        if len(few):
            cells = "; ".join(f"{spec.hue}={tables.level_label(a)}, {spec.x}={tables.level_label(b)} (n={n})"
                              for a, b, n in zip(few[spec.hue], few[spec.x], few["n"]))
            r.md(f"**Cells with fewer than 2 replications (no interval, open red markers):** {cells}.", "")
        r.table(ci, base, f"Means and {spec.confidence:.0%} t-intervals plotted above",
                inline=len(ci) <= 30)


def _curves(r: _Report, spec: CurvePlot, frame, recorded, factors):
    if recorded.history is None or not len(recorded.history):
        raise KeyError("no per-epoch history recorded")
    for labels, sub in tables.slices(frame, spec.at, factors, exclude=(spec.hue,)):
        where = _at_label(labels)
        base = _stem("curve", spec.metric, "by", spec.hue, labels=labels)
        r.md(f"### {spec.metric} per epoch by {spec.hue}{_at(labels)}", "")
        curves = tables.curve_table(sub, recorded.history, spec.metric, spec.hue, spec.confidence)
        ax = plots.curve_plot(curves, spec.hue, ylabel=spec.metric, logy=spec.logy,
                              confidence=spec.confidence, min_share=spec.min_share)
        r.figure(ax, base, f"{spec.metric} per epoch: mean ± {spec.confidence:.0%} t-interval over the "
                           f"replications still training, drawn while at least {spec.min_share:.0%} "
                           f"of them train, {where}")
        r.table(curves, base, f"Every epoch: n of the level's replications still training, mean and "
                              f"{spec.confidence:.0%} t-interval", inline=False, tex=False)


def _table1(r: _Report, spec: Table1, frame, recorded, factors):
    pub = paper.TABLE1S.get(spec.published) if spec.published else None
    split = [spec.split_by] if spec.split_by and spec.split_by in frame.columns else []
    exclude = (spec.factor, spec.by)
    sub_frame = tables.select(frame, spec.at)
    for labels, sub in tables.slices(sub_frame, None, split + [f for f in factors if f not in split],
                                     exclude=exclude):
        labels = dict(dict(spec.at or {}), **labels)
        where = _at_label(labels)
        base = _stem("table1", labels=labels)
        r.md(f"### Table 1{_at(labels)}", "")
        t1 = tables.table1(sub, metric_train=spec.metric_train, metric_val=spec.metric_val,
                           factor=spec.factor, by=spec.by, test=spec.test,
                           correction=spec.correction, alpha=spec.alpha)
        r.table(t1, base, f"Table 1 ({spec.test} one-tailed t-tests, best {spec.factor} > 0 "
                f"by mean {spec.metric_val}; {spec.correction} over the levels in `_adj`), {where}",
                show=_table1_show(t1, spec))
        r.md(f"The best {spec.factor} is picked after looking at the data, among the `n_levels` levels > 0. "
             f"The paper's stars are the raw one-tailed p at that level (`p_val`, `stars_val`), which does not "
             f"account for the pick and so finds gains where there are none more often than α says; "
             f"`p_val_adj` ({spec.correction} over the levels) does.", "")
        if pub is not None:
            split_value = labels.get(spec.split_by) if spec.split_by else None
            if split_value is None and spec.split_by in sub.columns and sub[spec.split_by].nunique() == 1:
                split_value = sub[spec.split_by].iloc[0]  # one placement only: not a slice
            rows = pub["splits"].get(tables.level_label(split_value)) if split_value is not None else None
            if rows is None:
                r.md(f"No published Table 1 for {spec.split_by} = {split_value}.", "")
                continue
            cmp, counts = tables.compare_table1(t1, rows, by=spec.by, alpha=spec.alpha)
            sentence = (f"{pub['title']}, {spec.split_by} = {tables.level_label(split_value)}: "
                        f"{counts['agree']} of {counts['compared']} significance cells "
                        f"(train and val, one-tailed α = {spec.alpha:g}) agree")
            r.summary.append(sentence)
            r.md(f"**Published vs replicated.** {sentence}.", "")
            r.table(cmp, base + f"_vs_{spec.published}", "Published Δ and p beside ours")


def _table1_show(t1: pd.DataFrame, spec: Table1) -> pd.DataFrame:
    def cell(d, stars, p):
        return "–" if not np.isfinite(d) else f"{render.signed(d)}{stars} ({render.num(p, 2)})"

    show = pd.DataFrame({
        spec.by: [f"[{', '.join(str(a).split('-'))}]" for a in t1[spec.by]],
        "n base": t1["n_base"], "base train": t1["base_train"], "base val": t1["base_val"],
        f"best {spec.factor}": t1["best"], "n": t1["n_best"],
        "Δ train (p)": [cell(*v) for v in zip(t1["d_train"], t1["stars_train"], t1["p_train"])],
        "Δ val (p)": [cell(*v) for v in zip(t1["d_val"], t1["stars_val"], t1["p_val"])],
        f"p val {spec.correction}": t1["p_val_adj"].map(lambda p: render.num(p, 2) + stats.stars(p)),
        "mde val": t1["mde_val"], "note": t1["note"].fillna("")})
    return show


def _table2(r: _Report, spec: Table2, frame, recorded, factors):
    pub = paper.TABLE2.get(spec.published) if spec.published else None
    rows = [k for k in spec.rows if k in frame.columns]
    for labels, sub in tables.slices(frame, spec.at, factors, exclude=(spec.factor, *rows)):
        where = _at_label(labels)
        base = _stem("table2", spec.metric, labels=labels)
        r.md(f"### Table 2: {spec.metric}{_at(labels)}", "")
        long = tables.table2(sub, spec.metric, spec.factor, rows, alpha=spec.alpha, test=spec.test,
                             correction=spec.correction, confidence=spec.confidence)
        plain, bold = tables.table2_layout(long, spec.factor, rows)
        r.md(f"Each row's maximum in bold. With n ≥ 2 a cell is mean ± the {spec.confidence:.0%} "
             f"t-interval's half width, and + / - marks a {spec.test} two-sided t-test against "
             f"{spec.factor} = 0 in the same row significant at α = {spec.alpha:g} (uncorrected; "
             f"{spec.correction}-corrected in the CSV).", "")
        r.table(plain, base, f"Table 2 layout: {spec.metric} by row and {spec.factor}, {where}", show=bold)
        r.table(long, base + "_tests", f"Every cell: n, mean, interval, test against {spec.factor} = 0",
                inline=False)
        if pub is not None:
            cmp, counts = tables.compare_table2(long, spec.published, spec.factor, rows)
            paper_n = pub["max_at_positive"]
            sentence = (f"{pub['title']}: the row maximum is at {spec.factor} > 0 in "
                        f"{counts['max_positive']} of {counts['rows']} rows (paper, same rows: "
                        f"{counts['max_positive_paper']} of {counts['rows']}; all rows: "
                        f"{paper_n[0]} of {paper_n[1]}); {counts['in_ci']} of {counts['compared']} "
                        f"published values inside our {spec.confidence:.0%} t-interval")
            if counts["compared"] < len(cmp):
                sentence += " (an interval needs 2 or more seeds)"
            if counts["not_run"]:
                sentence += f"; {counts['not_run']} published rows not run"
            r.summary.append(sentence)
            r.md(f"**Published vs replicated.** {sentence}.", "")
            r.table(cmp, base + f"_vs_{spec.published}", "Published values beside ours, cell by cell",
                    inline=len(cmp) <= 60)
        layers = tables.guided_modules(sub, recorded.profiles)
        if len(layers):
            r.table(layers, base + "_layers",
                    "Layers each placement guides (index: conv layers in forward order)",
                    inline=len(layers) <= 80)


def _profile(r: _Report, spec: ProfilePlot, frame, recorded, factors):
    profiles = recorded.profiles
    if profiles is None or not len(profiles):
        r.md("No entropy profiles recorded for this study.", "")
        return
    if spec.kind:
        profiles = profiles[profiles["kind"] == spec.kind]
    keys = [spec.split_by] if spec.split_by else []
    for labels, sub in tables.slices(frame, spec.at, keys):
        where = _at_label(labels)
        ids = set(sub.loc[sub["status"] == "done", "id"])
        prof = profiles[profiles["id"].isin(ids) & profiles["stage"].isin(spec.stages)]
        base = _stem("profile", labels=labels)
        r.md(f"### Entropy profile{_at(labels)}", "")
        if not len(prof):
            r.md(f"No profiles at {where}.", "")
            continue
        ax = plots.profile_plot(prof, stages=spec.stages,
                                title=f"Entropy change per filter, {len(ids)} replications\n{where}")
        r.figure(ax, base, f"Per-layer entropy change over filters and replications ({where})")
        r.table(tables.profile_summary(prof), base, "Box-plot statistics per stage and layer")


def _summary(r: _Report, spec: SummaryTable, frame, recorded, factors):
    pub = paper.SUMMARY_TABLES.get(spec.published) if spec.published else None
    for labels, sub in tables.slices(frame, spec.at, factors, exclude=(spec.factor,)):
        where = _at_label(labels)
        base = _stem("summary", spec.factor, labels=labels)
        r.md(f"### Summary by {spec.factor}{_at(labels)}", "")
        s = tables.summary_table(sub, spec.metrics, spec.factor, spec.confidence)
        r.table(s, base, f"Mean and {spec.confidence:.0%} t-interval per {spec.factor}, {where}")
        if pub is not None:
            cmp, counts = tables.compare_summary(s, spec.published)
            sentence = (f"{pub['title']}: {counts['agree']} of {counts['compared']} published values "
                        f"inside our {spec.confidence:.0%} t-interval")
            r.summary.append(sentence)
            r.md(f"**Published vs replicated.** {sentence}.", "")
            r.table(cmp, base + f"_vs_{spec.published}", "Published values beside our means")


def _protocol(r: _Report, spec: ProtocolEffect, frame, recorded, factors):
    for labels, sub in tables.slices(frame, spec.at, factors, exclude=(spec.factor, spec.protocol)):
        where = _at_label(labels)
        base = _stem("protocol", spec.protocol, spec.metric, labels=labels)
        r.md(f"### Effect of {spec.protocol} on {spec.metric}{_at(labels)}", "")
        eff = tables.protocol_effect(sub, spec.metric, spec.protocol, spec.factor,
                                     alpha=spec.alpha, test=spec.test, correction=spec.correction)
        r.table(eff, base, f"{spec.protocol} values compared at each {spec.factor} "
                f"(two-sided, α = {spec.alpha:g}, {spec.correction} across the table), {where}")
        if spec.protocol in STOPPING_RULE:
            _protocol_rm_anova(r, spec, sub, base, where)
            anova = []
        else:
            anova = omnibus.two_way_anova(sub, spec.metric, spec.factor, spec.protocol)
        if len(anova):
            effects = {row.effect: row for row in anova.itertuples(index=False)}
            method, protocol = effects[spec.factor], effects[spec.protocol]
            r.md(f"Two-way ANOVA ({spec.factor} × {spec.protocol}, type II): {spec.factor} explains "
                 f"partial η² = {method.partial_eta_sq:.3f} of the variance of {spec.metric} "
                 f"(p = {method.p:.2g}), {spec.protocol} {protocol.partial_eta_sq:.3f} "
                 f"(p = {protocol.p:.2g}).", "")
            r.table(anova, base + "_anova", f"Two-way ANOVA of {spec.metric}: {spec.factor} × "
                    f"{spec.protocol}, {where}")
        _protocol_paired(r, spec, sub, base, where)
        signs = {}
        for value in tables.sorted_levels(sub[spec.protocol]):
            part = sub[tables.matches(sub[spec.protocol], value)]
            long = tables.pairwise(tables.groups(part, spec.metric, spec.factor), alpha=spec.alpha,
                                   test=spec.test, correction=spec.correction)
            signs[value] = tables.sign_matrix(long, "sign")
        values = list(signs)
        for i, a in enumerate(values):
            for b in values[i + 1:]:
                _, counts = tables.compare_signs(signs[a], signs[b])
                r.md(f"- {spec.factor} sign table of {spec.metric} under {spec.protocol} = "
                     f"{tables.level_label(a)} vs {tables.level_label(b)}: "
                     f"{tables.agreement_sentence(counts)}.")
        r.md("")


def _protocol_rm_anova(r, spec, sub, base, where):
    """λ × a stopping-rule setting: its arms of a (λ, seed) are one trained model, so the
    seed is the unit measured under every arm (repeated measures), not two replications."""
    anova = omnibus.repeated_measures_anova(sub, spec.metric, spec.factor, spec.protocol)
    shared = (f"the {spec.protocol} arms of a ({spec.factor}, seed) share one trained model "
              "(a stopping rule decides only when it stops)")
    if not len(anova):
        r.md(f"No ANOVA: {shared}, so an unpaired ANOVA would count each training twice, and the seeds do "
             f"not cover every {spec.factor} × {spec.protocol} cell once, which a repeated-measures ANOVA needs.", "")
        return
    effects = {row.effect: row for row in anova.itertuples(index=False)}
    method, protocol_ = effects[spec.factor], effects[spec.protocol]
    r.md(f"Repeated-measures ANOVA ({spec.factor} × {spec.protocol}, seed as the unit: {shared}): "
         f"{spec.factor} partial η² = {method.partial_eta_sq:.3f} (p = {method.p:.2g}), {spec.protocol} "
         f"{protocol_.partial_eta_sq:.3f} (p = {protocol_.p:.2g}).", "")
    r.table(anova, base + "_anova", f"Repeated-measures ANOVA of {spec.metric}: {spec.factor} × "
            f"{spec.protocol}, seed as the unit, {where}")


def _protocol_paired(r, spec, sub, base, where):
    """The protocol's effect seed by seed at each level of the method's factor: the same
    seed, λ and everything else, only the protocol differs."""
    parts = [tables.paired_by_seed(sub[tables.matches(sub[spec.factor], level)], spec.metric, spec.protocol,
                                   alpha=spec.alpha, correction="none").assign(**{spec.factor: level})
             for level in tables.sorted_levels(sub[spec.factor])]
    paired = pd.concat([p for p in parts if len(p)], ignore_index=True) if any(len(p) for p in parts) else None
    if paired is None or not (paired["n_pairs"] >= 2).any():
        return
    paired = paired[[spec.factor] + [c for c in paired.columns if c != spec.factor]]
    tables.add_signs(paired, "mean_diff", "n_pairs", "n_pairs", alpha=spec.alpha, correction=spec.correction)
    tested = paired[paired["n_pairs"] >= 2]
    n, same = int(paired["n_pairs"].sum()), int(paired["identical"].sum())
    differ = int(tested["sign"].isin(["+", "-"]).sum())
    r.md(f"Seed by seed (the same seed and {spec.factor}, only {spec.protocol} differs): {spec.metric} "
         f"is identical in {same} of {n} pairs, and a paired t-test finds a difference at {differ} of "
         f"{len(tested)} {spec.factor} levels (α = {spec.alpha:g}, uncorrected).", "")
    r.table(paired, base + "_paired", f"{spec.protocol} against {tables.level_label(paired['vs'].iloc[0])} "
            f"at each {spec.factor}, paired by seed ({spec.correction} across the table), {where}")


def _claims(r: _Report, spec: Claims, frame, recorded, factors):
    published = paper.CLAIMS.get(spec.published)
    if published is None:
        r.md(f"**Unknown published claims {spec.published!r}** (known: {', '.join(paper.CLAIMS)}).", "")
        return
    r.md(f"{published['title']}. Each cell's mean (ratio: mean stopping epoch at the base level "
         "over the cell's, on the seeds both have) against the published range; \"≈ v\" is read as v rounded to its "
         "printed digit. A claim holds in a cell when the 95% interval of its mean (ratio) lies in the "
         "range, fails when the interval lies outside, and is inconclusive when it straddles a bound.", "")
    for i, claim in enumerate(published["claims"], 1):
        cells = claim_cells(frame, claim, factors)
        sentence = f"“{claim['text']}”: {claim_sentence(claim, cells)}"
        r.summary.append(f"Claim {sentence}")
        r.md(f"- {sentence}.", "")
        if len(cells):
            r.table(cells, f"claim{i}_{claim['metric']}", f"Claim {i}: {claim['text']}", inline=False)
    r.md("")


_SECTIONS = {SignificanceTable: _significance, CIPlot: _ci_plot, CurvePlot: _curves, Table1: _table1, Table2: _table2,
             ProfilePlot: _profile, SummaryTable: _summary, ProtocolEffect: _protocol, Claims: _claims}
