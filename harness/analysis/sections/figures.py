"""Report sections that draw: CI plots, training curves, entropy profiles, and per-level
summaries against published numbers."""

from __future__ import annotations

from harness.analysis import grouping, paper, plots, summaries, words
from harness.analysis.spec import CIPlot, CurvePlot, ProfilePlot, SummaryTable
from harness.analysis.sections.base import renders
from harness.training.stopping import STOPPING_RULE
from harness.analysis.writer import ReportWriter, stem


@renders(CIPlot)
def _ci_plot(r: ReportWriter, spec: CIPlot, frame, recorded, factors):
    for labels, sub in grouping.slices(frame, spec.at, factors, exclude=(spec.x, spec.hue)):
        where = words.slice_words(labels) or "all replications"
        base = stem("ci", spec.metric, "by", spec.x, spec.hue, labels=labels)
        r.md(f"### {words.capital(words.metric(spec.metric))} against {words.factor(spec.x)} by "
             f"{words.factor(spec.hue)}{words.at(labels)}", "")
        ci = summaries.ci_table(sub, spec.metric, spec.x, spec.hue, spec.confidence)
        ax = plots.ci_plot(ci, spec.x, spec.hue, ylabel=spec.metric, logx=spec.logx,
                           logy=spec.logy or None, confidence=spec.confidence)
        r.figure(ax, base, f"{words.capital(words.metric(spec.metric))}: mean ± {spec.confidence:.0%} t-interval, {where}")
        few = ci[ci["n"] < 2]
        if len(few):
            cells = "; ".join(f"{spec.hue}={grouping.level_label(a)}, {spec.x}={grouping.level_label(b)} (n={n})"
                              for a, b, n in zip(few[spec.hue], few[spec.x], few["n"]))
            r.md(f"**Cells with fewer than 2 replications (no interval, open red markers):** {cells}.", "")
        r.table(ci, base, f"Means and {spec.confidence:.0%} t-intervals plotted above",
                inline=len(ci) <= 30)


@renders(CurvePlot)
def _curves(r: ReportWriter, spec: CurvePlot, frame, recorded, factors):
    if recorded.history is None or not len(recorded.history):
        raise KeyError("no per-epoch history recorded")
    for labels, sub in grouping.slices(frame, spec.at, factors, exclude=(spec.hue,)):
        where = words.slice_words(labels) or "all replications"
        base = stem("curve", spec.metric, "by", spec.hue, labels=labels)
        name = words.capital(words.metric(spec.metric))
        r.md(f"### {name} per epoch by {words.factor(spec.hue)}{words.at(labels)}", "")
        curves = summaries.curve_table(sub, recorded.history, spec.metric, spec.hue, spec.confidence)
        ax = plots.curve_plot(curves, spec.hue, ylabel=spec.metric, logy=spec.logy or None,
                              confidence=spec.confidence, min_share=spec.min_share)
        r.figure(ax, base, f"{name} per epoch: mean ± {spec.confidence:.0%} t-interval over the "
                           f"replications still training, drawn while at least {spec.min_share:.0%} "
                           f"of them train, {where}")
        r.table(curves, base, f"Every epoch: n of the level's replications still training, mean and "
                              f"{spec.confidence:.0%} t-interval", inline=False, tex=False)




@renders(ProfilePlot)
def _profile(r: ReportWriter, spec: ProfilePlot, frame, recorded, factors):
    profiles = recorded.profiles
    if profiles is None or not len(profiles):
        r.md("No entropy profiles recorded for this study.", "")
        return
    if spec.kind:
        profiles = profiles[profiles["kind"] == spec.kind]
    keys = [spec.split_by] if spec.split_by else []
    r.md("Values in nats (harness.entropy.profile): a conv filter's is (l − p + 1)(w − q + 1) · Σ log|c11| over "
         "its input channels (entropy.c11), the factor being the number of positions it is applied at, so a layer with a "
         "larger output reads larger per filter; a dense layer's is log|det W| of its square part.", "")
    for labels, sub in grouping.slices(frame, spec.at, keys):
        where = words.slice_words(labels) or "all replications"
        ids = set(_trained_models(sub[sub["status"] == "done"], factors)["id"])
        prof = profiles[profiles["id"].isin(ids) & profiles["stage"].isin(spec.stages)]
        base = stem("profile", labels=labels)
        r.md(f"### Entropy profile{words.at(labels)}", "")
        if not len(prof):
            r.md(f"No profiles at {where}.", "")
            continue
        ax = plots.profile_plot(prof, stages=spec.stages,
                                title=f"Entropy change per filter, {len(ids)} trained models\n{where}")
        r.figure(ax, base, f"Per-layer entropy change over filters and trained models ({where})")
        r.table(summaries.profile_summary(prof), base, "Box-plot statistics per stage and layer")


def _trained_models(done, factors):
    """One replication per trained model: those that differ only in their stopping rule
    (harness.training.stopping.STOPPING_RULE) share one training and its profiles."""
    keys = [k for k in [*factors, "seed"] if k in done.columns and k not in STOPPING_RULE]
    if not keys or not any(k in done.columns for k in STOPPING_RULE):
        return done
    return done[~done[keys].astype(str).duplicated()]


@renders(SummaryTable)
def _summary(r: ReportWriter, spec: SummaryTable, frame, recorded, factors):
    pub = paper.SUMMARY_TABLES.get(spec.published) if spec.published else None
    for labels, sub in grouping.slices(frame, spec.at, factors, exclude=(spec.factor,)):
        where = words.slice_words(labels) or "all replications"
        base = stem("summary", spec.factor, labels=labels)
        r.md(f"### Summary by {words.factor(spec.factor)}{words.at(labels)}", "")
        s = summaries.summary_table(sub, spec.metrics, spec.factor, spec.confidence)
        r.table(s, base, f"Mean and {spec.confidence:.0%} t-interval per {spec.factor}, {where}")
        if pub is not None:
            cmp, counts = summaries.compare_summary(s, spec.published)
            sentence = (f"{pub['title']}: {counts['agree']} of {counts['compared']} published values "
                        f"inside our {spec.confidence:.0%} t-interval")
            r.summary.append(sentence)
            r.md(f"**Published vs replicated.** {sentence}.", "")
            r.table(cmp, base + f"_vs_{spec.published}", "Published values beside our means")
