"""``harness analyze``: one report per study, from the store alone.

``analyze(store, studies, out_dir)`` writes ``out_dir/<study>/report.md``, the same report
as one self-contained ``report.html``, for every table ``<name>.csv`` and ``<name>.tex``,
for every figure ``<name>.png`` and ``<name>.pdf``. It and the writer are the only modules
of the analysis that write files. Apart from the one "Generated" line, reruns on the same
database are byte-identical.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from harness.analysis import grouping, paper, protocol, summaries, verdict, words
from harness.analysis.sections import RENDERERS
from harness.analysis.spec import AnalysisError, Claims, CurvePlot, SignificanceTable, Table1, spec_from_dict
from harness.analysis.writer import ReportWriter

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
        wants_history = any(isinstance(spec, CurvePlot) for spec in specs[name]) or _keras_monitor(frames[name])
        paths += study_report(definitions[name], frames[name], store.profiles(name), Path(out_dir) / name,
                              hosts=store.hosts(), history=store.history(name) if wants_history else None)
    return paths


@dataclass(frozen=True)
class _Recorded:
    """What a study recorded besides its replication frame, for the sections that use it."""

    profiles: pd.DataFrame | None = None  # Store.profiles: entropy change per layer and filter
    history: pd.DataFrame | None = None   # Store.history: one row per replication and epoch


def _keras_monitor(frame: pd.DataFrame) -> bool:
    """Whether the history is needed to tell the two total_float32 rules apart."""
    return "train.monitor" in frame.columns and bool((frame["train.monitor"] == "total_float32").any())


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
    models = frame["model"].unique() if "model" in frame.columns else ()
    with words.guidance_symbol(models):
        return _study_report(definition, frame, profiles, out_dir, hosts, history)


def _study_report(definition, frame, profiles, out_dir, hosts, history) -> list[Path]:
    specs = _specs(definition)
    r = ReportWriter(Path(out_dir), definition.get("name", Path(out_dir).name))
    # sorted so that sums, and hence every number, do not depend on recording order
    frame = frame.sort_values("id", kind="stable").reset_index(drop=True)
    if profiles is not None and len(profiles):
        profiles = profiles.sort_values(["id", "stage", "layer", "filter"], kind="stable")
    if history is not None and len(history):
        history = history.sort_values(["id", "epoch"], kind="stable")
    frame, legacy = protocol.label_legacy_monitor(frame, history)
    recorded = _Recorded(profiles, history)
    factors, stray = study_factors(definition, frame)
    _which_protocol(r, specs, frame, factors)
    if legacy:
        r.md(f"**{legacy} replications with train.monitor=total_float32 were recorded before the Keras-style "
             "monitor** (their epochs hold no monitored value): their early stopping summed the float32 term "
             "into a float64 task loss, which sees every improvement, where a Keras val_loss sums in float32 "
             f"(docs/protocol.md). They keep their ids; every table shows them as train.monitor={protocol.LEGACY_MONITOR}.",
             "")
    _header(r, definition, frame, factors)
    _where_and_how_long(r, frame, hosts or {})
    if stray:
        r.md(f"**Note:** {', '.join(stray)} vary among the recorded replications though not "
             "grid axes (runs with different overrides); every table is split by them.", "")
    for spec in specs:
        r.section = r.heading(2, words.heading(spec))
        r.md("")
        try:
            for metric in _metrics(spec):
                grouping.check_metric(frame, metric)
            RENDERERS[type(spec)](r, spec, frame, recorded, factors)
        except KeyError as e:  # a metric or column the results do not have
            r.md(f"**Skipped:** {e.args[0]}.", "")
    if not specs:
        r.md("The study declares no analyses (`Study(..., analyses=[...])`).", "")
    _diagnostics(r, frame, factors)
    _methods(r)
    _verdict(r)
    return r.finish()


def _verdict(r: ReportWriter):
    """'Verdict': the first thing after the title, one row per published claim and sign table
    the sections compared (harness.analysis.verdict), each linked to its evidence."""
    if not r.verdicts:
        return
    table = verdict.verdict_table(r.verdicts)
    with r.verdict_first():
        r.md("## Verdict", "", verdict.tally(r.verdicts), "")
        # the files name the section as report.md#anchor; the report links it
        files = table.assign(evidence=table["evidence"].str.replace(r"^\[.*\]\((#.*)\)$", r"report.md\1", regex=True))
        r.table(files, "verdict", "The paper's claims and tables against the replications", show=table)


def _metrics(spec) -> list[str]:
    """The frame columns a spec needs (a curve's metric is a history column, checked there)."""
    if isinstance(spec, Table1):
        return [spec.metric_train, spec.metric_val]
    if isinstance(spec, CurvePlot):
        return []
    return [spec.metric] if hasattr(spec, "metric") else []


# ---------------------------------------------------------------- fixed sections

def _which_protocol(r: ReportWriter, specs: list, frame: pd.DataFrame, factors: list[str]):
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


def _header(r: ReportWriter, definition: dict, frame: pd.DataFrame, factors: list[str]):
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
    better = definition.get("higher_is_better") or {}  # the metrics of a study file's own task (harness.custom)
    if better:
        r.md("The study file's task defines " + ", ".join(
            f"{k} ({'higher' if up else 'lower'} is better)" for k, up in better.items()) + ".", "")
    _provenance(r, frame)
    cells = summaries.status_counts(frame, factors)
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
    r.table(summaries.open_choices(settings, frame), "open_choices",
            "The paper's open choices and the values these replications used")
    grid_df = pd.DataFrame([{"key": k, "values": ", ".join(grouping.level_label(v) for v in vals)}
                            for k, vals in grid.items()], columns=["key", "values"])
    set_df = pd.DataFrame([{"key": k, "value": grouping.level_label(v) if not isinstance(v, (list, dict)) else str(v)}
                           for k, v in sorted(settings.items()) if k not in grid],
                          columns=["key", "value"])
    r.table(grid_df, "grid", "Grid axes")
    r.table(set_df, "settings", "All fixed settings of the study", inline=len(set_df) <= 60)


def _provenance(r: ReportWriter, frame: pd.DataFrame):
    """One line: the versions, the device, 'N commits (first…last)' by when each was first
    used, and the full list in provenance.csv."""
    parts = []
    for col, word in (("harness_version", "harness"), ("torch_version", "torch"), ("device", "device")):
        if col in frame.columns:
            parts.append(f"{word} {', '.join(sorted(str(v) for v in frame[col].dropna().unique())) or 'n/a'}")
    if "git_commit" in frame.columns and frame["git_commit"].notna().any():
        commits = summaries.commits(frame)
        name = r.data(commits, "provenance")
        first, last = commits["git_commit"].iloc[0][:7], commits["git_commit"].iloc[-1][:7]
        span = first if len(commits) == 1 else f"{first}…{last}"
        parts.append(f"{len(commits)} commit{'s' * (len(commits) != 1)} ({span}; every one in [{name}]({name}))")
    if parts:
        r.md("Provenance: " + "; ".join(parts) + ".", "")


def _where_and_how_long(r: ReportWriter, frame: pd.DataFrame, hosts: dict):
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


def _diagnostics(r: ReportWriter, frame: pd.DataFrame, factors: list[str]):
    if "lam" not in frame.columns:
        return
    parts, sentences, guided, by = [], [], [], ""
    for labels, sub in grouping.slices(frame, None, factors, exclude=("lam",)):
        names = [words.factor(k) for k in labels]
        by = ", ".join(names[:-1]) + " and " + names[-1] if len(names) > 1 else "".join(names)
        sentence = summaries.guidance_sentence(sub, "lam", words.factor("lam"))
        if sentence:  # per slice: log|det W| of other widths or protocols is not comparable
            sentences.append(f"{sentence}{' (' + words.slice_words(labels) + ')' if labels else ''}")
            guided.append(sub)
        d = summaries.diagnostics(sub, "lam")
        if len(d):
            for k, v in reversed(list(labels.items())):
                d.insert(0, k, v)
            parts.append(d)
    if not parts:
        return
    table = pd.concat(parts, ignore_index=True)
    anchor = r.heading(2, "Entropy diagnostics per λ")
    r.md("",
         "grad_ratio = ||∇ of λ·entropy term|| / ||∇ of task loss|| on the guided layers "
         "(mean over epochs); term_led = share of the weights the term acts on where its gradient "
         "outweighs the task's (mean over epochs); logdet_mean = log|det W| of the guided dense layers; "
         "log_c11_mean = mean log|c11| of guided conv filters; entropy_loss = final unweighted "
         "guidance term. A grad_ratio far below 1 is a small gradient in norm, not necessarily "
         "no effect: Adam scales each weight's step by its own gradient history, so a weight "
         "the task loss does not move (one on an input that is always 0) follows even a tiny "
         "guidance gradient at full step size; compare logdet_mean (log_c11_mean) with λ = 0.", "")
    if len(sentences) > 1:  # the summary gets one line; each slice's sentence stays here
        overview = summaries.guidance_overview(guided, "lam", words.factor("lam"), by)
        r.summary += [f"{overview} ([each slice](#{anchor}))"] if overview else sentences
    else:
        r.summary += sentences
    r.md(*(f"- {s}." for s in sentences), "")
    show = table[[c for c in table.columns if not c.endswith("_sd")]]
    counts = [c for c in show.columns if c.endswith("_n")]
    if len(counts) > 1 and all(show[c].equals(show[counts[0]]) for c in counts):  # one n says it
        show = show.drop(columns=counts[1:]).rename(columns={counts[0]: "n"})
    r.table(table, "diagnostics", "Entropy diagnostics (mean per cell; sd and each diagnostic's n in the CSV)",
            show=show, inline=len(table) <= 60)


def _methods(r: ReportWriter):
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
