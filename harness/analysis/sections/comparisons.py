"""Report sections of a SignificanceTable: levels, omnibus tests, every pair tested, the sign
tables, paired by seed, and the published table beside ours."""

from __future__ import annotations

import numpy as np
import pandas as pd

from harness.analysis import by_seed, grouping, omnibus, paper, render, significance, stats, verdict, words
from harness.analysis.spec import SignificanceTable
from harness.analysis.sections.base import renders
from harness.analysis.writer import ReportWriter, at_label, stem


@renders(SignificanceTable)
def _significance(r: ReportWriter, spec: SignificanceTable, frame, recorded, factors):
    pub = paper.SIGN_TABLES.get(spec.published) if spec.published else None
    if spec.published and pub is None:
        r.md(f"**Unknown published table {spec.published!r}** (known: {', '.join(paper.SIGN_TABLES)}).", "")
    for labels, sub in grouping.slices(frame, spec.at, factors, exclude=(spec.factor,)):
        where = at_label(labels)
        said = words.slice_words(labels) or "all replications"
        metric, factor = words.metric(spec.metric), words.factor(spec.factor)
        base = stem("sig", spec.metric, "by", spec.factor, labels=labels)
        anchor = r.heading(3, f"{words.capital(words.metric(spec.metric))} across {words.factor(spec.factor)}"
                           f"{words.at(labels)}")
        r.md("")
        if not len(sub):
            r.md(f"No replications at {where}.", "")
            continue
        grp = grouping.groups(sub, spec.metric, spec.factor)
        if len(grp) < 2:  # a grid still being run: say so, show what there is
            _levels_table(r, grp, spec.factor, spec.metric, base)
            r.md(f"Only {spec.factor} = {', '.join(grouping.level_label(l) for l in grp)} has replications "
                 f"at {where}: nothing to compare yet.", "")
            continue
        rank = spec.metric in omnibus.DISCRETE
        n_censored = omnibus.censored(sub, spec.metric)
        survival = _survival(sub, spec) if n_censored else None
        long = significance.pairwise(grp, alpha=spec.alpha, test=spec.test, correction=spec.correction,
                               power=spec.power, equivalence=_margin(spec), metric=spec.metric, rank=rank,
                               survival=survival)
        n_pairs = len(grp) * (len(grp) - 1) // 2
        r.md(f"{spec.test.capitalize()} two-sided t-tests, α = {spec.alpha:g}, "
             f"{n_pairs} pair{'s' * (n_pairs != 1)}; {spec.correction} correction across them "
             f"shown beside; equivalence: pooled TOST within {_within(spec)}."
             + (f" {spec.metric} is a count with ties: `p_rank` is the Mann-Whitney U test beside the t-test."
                if rank else "")
             + (f" **{n_censored} replication(s) here reached train.max_epochs**, so their {spec.metric} is "
                "censored at the cap: `p_logrank` compares the levels as times to stop (log-rank test)."
                if n_censored else ""), "")
        _levels_table(r, grp, spec.factor, spec.metric, base)
        gone = grouping.left_out_sentence(sub, spec.metric, spec.factor)
        if gone:
            r.md(f"**{gone}**", "")
        _omnibus(r, sub, spec, base, labels)
        raw = significance.sign_matrix(long, "sign")
        adj = significance.sign_matrix(long, "sign_adj")
        raw.index.name = adj.index.name = f"{spec.factor} row \\ col"
        r.table(long, base, f"All pairwise tests of {metric} across {factor}, {said}",
                inline=False)
        r.table(raw, base + "_signs", f"Sign table, uncorrected (as the paper): {metric}, {said}", index=True)
        r.table(adj, base + f"_signs_{spec.correction}",
                f"Sign table, {spec.correction}-corrected: {metric}, {said}", index=True)
        _blank_cells(r, long, spec)
        if pub is not None:
            _vs_published(r, spec, labels, raw, adj, pub, base, long, anchor)
        _paired(r, sub, spec, labels, base)


def _margin(spec: SignificanceTable) -> float:
    return significance.margin(spec.metric) if spec.equivalence is None else spec.equivalence


def _survival(sub, spec) -> dict:
    """{level: (stopping epochs, events)} of a slice, the log-rank test's input."""
    times, events, labels = omnibus.survival(sub, spec.metric, spec.factor, omnibus.CENSORED[spec.metric])
    levels = grouping.sorted_levels(sub[spec.factor])
    return {level: (times[labels == grouping.level_label(level)], events[labels == grouping.level_label(level)])
            for level in levels}


def _omnibus(r, sub, spec, base, labels):
    """Does the factor matter at all: unpaired, seed-blocked, rank and censored versions."""
    table = omnibus.omnibus(sub, spec.metric, spec.factor)
    tested = table[np.isfinite(table["p"].astype(float))]
    if not len(tested):
        return
    parts = [f"{t} p = {render.num(p, 2)}" for t, p in zip(tested["test"], tested["p"])]
    blocked = "The seed sets a replication's initial weights and data order, so the blocked tests compare the " \
              "levels within each seed."
    if "seed" in sub.columns and not table["unit"].eq("seed").any():
        blocked = (f"No seed-blocked test: fewer than 2 seeds have every {words.factor(spec.factor)} level done "
                   f"with a finite {words.metric(spec.metric)}.")
    r.md(f"**Omnibus tests of {words.factor(spec.factor)}** (does it matter at all?): {'; '.join(parts)}. {blocked}", "")
    r.table(table, base + "_omnibus", f"Omnibus tests of {words.factor(spec.factor)} on {words.metric(spec.metric)}"
            f"{words.at(labels)}")


def _levels_table(r, grp, factor, metric, base):
    rows = []
    for level, vals in grp.items():
        mean, lo, hi = stats.t_interval(vals)
        rows.append({factor: level, "n": len(vals), "mean": mean, "ci_lo": lo, "ci_hi": hi,
                     "sd": vals.std(ddof=1) if len(vals) > 1 else np.nan,
                     "note": "fewer than 2" if len(vals) < 2 else ""})
    r.table(pd.DataFrame(rows), base + "_levels",
            f"{words.capital(words.metric(metric))} per {words.factor(factor)}: mean and 95% t-interval")


def _blank_cells(r, long, spec):
    half = long[[grouping.sort_key(a) < grouping.sort_key(b) for a, b in zip(long["row"], long["col"])]]
    blank = half[half["sign"] == ""]
    sig = half[half["sign"].isin(["+", "-"])]
    unt = half[half["sign"] == grouping.UNTESTABLE]
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


def _within(spec) -> str:
    """The equivalence margin in words: '±5% of the pair's mean' (of its error, for a rate)."""
    return significance.margin_words(spec.metric, _margin(spec), "the pair's")


def _said(spec, labels) -> str:
    """'Validation MSE by λ1 at latent 80, stopping monitor task': a summary line's subject."""
    return f"{words.capital(words.metric(spec.metric))} by {words.factor(spec.factor)}{words.at(labels)}"


def _paired(r, sub, spec, labels, base):
    """The same comparison seed by seed: every level against the lowest, paired."""
    paired = by_seed.paired_by_seed(sub, spec.metric, spec.factor, alpha=spec.alpha, correction=spec.correction,
                                   equivalence=_margin(spec), rank=spec.metric in omnibus.DISCRETE)
    if not (paired["n_pairs"] >= 2).any():
        return
    sentence = by_seed.paired_sentence(paired, spec.metric, spec.factor, spec.alpha, _margin(spec),
                                       words=(words.metric(spec.metric), words.factor(spec.factor)))
    r.summary.append(f"{_said(spec, labels)}, paired by seed: {sentence}")
    r.md(f"**Paired by seed.** A replication's initial weights and data order come from its seed "
         f"alone, so each {words.factor(spec.factor)} level can also be compared with the lowest seed by seed, "
         f"without the seed-to-seed spread the unpaired tests above keep: {sentence}.", "")
    r.table(paired, base + "_paired", f"Each {words.factor(spec.factor)} against {words.factor(spec.factor)} = "
            f"{grouping.level_label(paired['vs'].iloc[0])}, paired by seed ({spec.correction} across levels)")


def _vs_published(r, spec, labels, raw, adj, pub, base, long, anchor):
    theirs = significance.published_signs(spec.published)
    theirs.index.name = f"{spec.factor} row \\ col"
    note = ""
    if dict(pub["at"]) != {k: v for k, v in labels.items() if k in pub["at"]}:
        note = f" (published at {words.slice_words(pub['at'])}; this table is at {words.slice_words(labels)})"
    cmp_raw, counts = significance.compare_signs(raw, theirs)
    _, counts_adj = significance.compare_signs(adj, theirs)
    cmp_raw.index.name = theirs.index.name
    sentence = (f"{pub['title']}{note}: {counts['agree']} of {counts['compared']} cells agree "
                f"uncorrected, {counts_adj['agree']} of {counts_adj['compared']} after "
                f"{spec.correction}{significance.caveats(counts)}; of its {len(long) // 2} pairs, "
                f"{significance.verdict_counts(long)} (t-test; pooled TOST within "
                f"{_within(spec)}).")
    r.summary.append(f"{_said(spec, labels)} vs {sentence}")
    where = words.slice_words(labels)
    r.verdicts.append(verdict.sign_table_row(
        words.published(spec.published), where, raw, theirs, significance.sign_matrix(long, "verdict3"),
        f"[§ {words.published(spec.published)}](#{anchor})"))
    r.md(f"**Published vs replicated.** {sentence}", "")
    r.table(theirs, base + f"_{spec.published}", f"Published: {pub['title']}", index=True)
    r.table(cmp_raw, base + f"_vs_{spec.published}",
            "Cell by cell (✓ agree; ours≠paper, · blank; ? untestable)", index=True)
