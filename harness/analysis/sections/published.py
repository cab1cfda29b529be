"""Report sections of the paper's own tables and claims: Table 1, Table 2, the headline claims."""

from __future__ import annotations

import numpy as np
import pandas as pd

from harness.analysis import grouping, paper, paper_tables, render, stats, verdict, words
from harness.analysis.claims import claim_cells, claim_sentence
from harness.analysis.spec import Claims, Table1, Table2
from harness.analysis.sections.base import renders
from harness.analysis.writer import ReportWriter, stem


@renders(Table1)
def _table1(r: ReportWriter, spec: Table1, frame, recorded, factors):
    pub = paper.TABLE1S.get(spec.published) if spec.published else None
    split = [spec.split_by] if spec.split_by and spec.split_by in frame.columns else []
    exclude = (spec.factor, spec.by)
    sub_frame = grouping.select(frame, spec.at)
    if pub is not None:
        _pattern_rule(r, spec, pub)
    for labels, sub in grouping.slices(sub_frame, None, split + [f for f in factors if f not in split],
                                     exclude=exclude):
        labels = dict(dict(spec.at or {}), **labels)
        base = stem("table1", labels=labels)
        r.md(f"### Table 1{words.at(labels)}", "")
        t1 = paper_tables.table1(sub, metric_train=spec.metric_train, metric_val=spec.metric_val,
                           factor=spec.factor, by=spec.by, test=spec.test,
                           correction=spec.correction, alpha=spec.alpha)
        lam = words.factor(spec.factor)
        r.table(t1, base, f"Table 1 ({spec.test.capitalize()} one-tailed t-tests, best {lam} > 0 by mean "
                f"{words.metric(spec.metric_val)}; p {spec.correction}: over the levels){words.at(labels)}",
                show=_table1_show(t1, spec))
        r.md(f"The best {lam} is picked after looking at the data, among the levels > 0 with 2 or more "
             f"replications. The paper's stars are the raw one-tailed p at that level (Δ train (p), Δ val (p)), "
             f"which does not account for the pick and so finds gains where there are none more often than α "
             f"says; p val {spec.correction} ({spec.correction} over those levels) does. mde val: the smallest "
             f"Δ val these replications find with power 0.8.", "")
        if pub is None:
            continue
        split_value = labels.get(spec.split_by) if spec.split_by else None
        if split_value is None and spec.split_by in sub.columns and sub[spec.split_by].nunique() == 1:
            split_value = sub[spec.split_by].iloc[0]  # one placement only: not a slice
        # the split, and any other factor the study varies (each slice is its own verdict row)
        others = {k: v for k, v in labels.items() if k != spec.split_by}
        split_words = (f"{spec.split_by} = {grouping.level_label(split_value)}"
                       + (f", {words.slice_words(others)}" if others else ""))
        for published, elsewhere in _published_tables(pub, sub):
            rows = published["splits"].get(grouping.level_label(split_value)) if split_value is not None else None
            if rows is None:
                r.md(f"No published Table 1 for {spec.split_by} = {split_value}.", "")
                continue
            either_way = bool(published.get("either_way"))
            cmp = paper_tables.compare_table1(t1, rows, by=spec.by, alpha=spec.alpha, either_way=either_way)
            row = verdict.table1_row(published["title"], split_words, cmp, alpha=spec.alpha,
                                     correction=spec.correction, evidence=f"[Table 1](#{r.section})",
                                     elsewhere=words.dataset(elsewhere) if elsewhere else None,
                                     either_way=either_way)
            r.verdicts.append(row)
            r.md(f"**Against {published['title']}.** Published ({words.dataset(published['dataset'])}): {row['published']}. "
                 f"Ours: {row['replicated']}. Verdict: {row['verdict']}.", "")
            if published is pub:  # the published numbers beside ours (a statement has none)
                r.table(cmp, base + f"_vs_{spec.published}", "Published Δ and p beside ours",
                        show=_compare_show(cmp, spec))


def _published_tables(pub: dict, sub: pd.DataFrame) -> list[tuple[dict, str | None]]:
    """What a slice is held against, as (published entry, our data set where the entry's is
    another): the published Table 1 on our data set; on another, what the paper says of
    ours (``other_data``: §5.3 on MNIST) as the reproduction, and Table 1's pattern beside
    it, as whether it carries over."""
    ours = sorted(set(sub["dataset"].astype(str))) if "dataset" in sub.columns else []
    if len(ours) != 1 or ours[0] == pub["dataset"]:
        return [(pub, None)]
    same = pub.get("other_data", {}).get(ours[0])
    return ([(same, None)] if same else []) + [(pub, ours[0])]


def _pattern_rule(r: ReportWriter, spec: Table1, pub: dict):
    """How an architecture's ``gain`` is judged, once for the section."""
    r.md(f"**How the pattern is compared.** The data sets can differ, so the pattern is compared, not the "
         f"numbers. An architecture (`gain`) agrees where both tables find a gain (one-tailed α = "
         f"{spec.alpha:g}, raw p as the paper's) or neither does. It contradicts the paper where we find a gain "
         f"it did not that survives the {spec.correction} correction for the pick of λ, or none where it found "
         f"one and our one-sided {1 - spec.alpha:.0%} bound of Δ val (`bound ours`) lies below the published Δ "
         f"taken as the same share of our base's error (`paper's Δ here`; `seeds to see it`: the seeds per "
         f"level that find that gain with power 0.8 at our spread). Otherwise it is undecided. The "
         f"paper's tests are one-tailed for a gain: a loss reads as no gain, and is noted, except against a "
         f"statement of no difference at all, which a loss at the best λ (even the best level worse than the "
         f"base, one-tailed) contradicts too. Where our data set "
         f"is not Table 1's ({words.dataset(pub['dataset'])}), the verdict is against what the paper says of ours, where it "
         f"says something, and Table 1's pattern is shown beside it as whether it carries over, not as a "
         f"reproduction.", "")


def _arch_label(arch) -> str:
    """'32-32' -> '[32, 32]', as Table 1 prints an architecture."""
    return f"[{', '.join(str(arch).split('-'))}]"


def _cell(d, stars, p) -> str:
    """'+0.0052** (0.004)': Δ with the paper's stars and the one-tailed p; '–' where not run."""
    return "–" if d is None or not np.isfinite(d) else f"{render.signed(d)}{stars} ({render.num(p, 2)})"


def _compare_show(cmp: pd.DataFrame, spec: Table1) -> pd.DataFrame:
    def cells(part, side):
        d, p = cmp[f"d_{part}_{side}"], cmp[f"p_{part}_{side}"]
        return [_cell(np.nan if a is None else float(a), "" if b is None else stats.stars(b), b) for a, b in zip(d, p)]

    return pd.DataFrame({
        spec.by: cmp[spec.by].map(_arch_label),
        "Δ val paper (p)": cells("val", "paper"), "Δ val ours (p)": cells("val", "ours"),
        f"p val {spec.correction}": cmp["p_val_adj_ours"].map(lambda p: render.num(p, 2) + stats.stars(p)),
        "gain": cmp["gain"],
        f"bound ours ({1 - spec.alpha:.0%})": cmp["hi_val_ours"].map(lambda v: render.num(v, 2)),
        "paper's Δ here": cmp["d_val_paper_here"].map(lambda v: render.num(v, 2)),
        "seeds to see it": cmp["seeds_paper_here"].map(lambda v: render.num(v, 3)),
        "Δ train paper (p)": cells("train", "paper"), "Δ train ours (p)": cells("train", "ours")})


def _table1_show(t1: pd.DataFrame, spec: Table1) -> pd.DataFrame:

    show = pd.DataFrame({
        spec.by: t1[spec.by].map(_arch_label),
        "n base": t1["n_base"], "base train": t1["base_train"], "base val": t1["base_val"],
        f"best {words.factor(spec.factor)}": t1["best"], "n": t1["n_best"],
        "Δ train (p)": [_cell(*v) for v in zip(t1["d_train"], t1["stars_train"], t1["p_train"])],
        "Δ val (p)": [_cell(*v) for v in zip(t1["d_val"], t1["stars_val"], t1["p_val"])],
        f"p train {spec.correction}": t1["p_train_adj"].map(lambda p: render.num(p, 2) + stats.stars(p)),
        f"p val {spec.correction}": t1["p_val_adj"].map(lambda p: render.num(p, 2) + stats.stars(p)),
        "mde val": t1["mde_val"], "note": [_note(n, p, spec) for n, p in zip(t1["note"], t1["p_val_loss"])]})
    return show


def _note(note, p_loss: float, spec: Table1) -> str:
    """Table 1's note, and a loss the one-tailed tests read as no gain."""
    loss = (f"lower than the base even at the best {words.factor(spec.factor)} (one-tailed p = "
            f"{render.num(p_loss, 2)})" if np.isfinite(p_loss) and p_loss < spec.alpha else "")
    return "; ".join(t for t in (note if isinstance(note, str) else "", loss) if t)


@renders(Table2)
def _table2(r: ReportWriter, spec: Table2, frame, recorded, factors):
    pub = paper.TABLE2.get(spec.published) if spec.published else None
    rows = [k for k in spec.rows if k in frame.columns]
    for labels, sub in grouping.slices(frame, spec.at, factors, exclude=(spec.factor, *rows)):
        base = stem("table2", spec.metric, labels=labels)
        lam = words.factor(spec.factor)
        r.md(f"### Table 2: {words.metric(spec.metric)}{words.at(labels)}", "")
        long = paper_tables.table2(sub, spec.metric, spec.factor, rows, alpha=spec.alpha, test=spec.test,
                             correction=spec.correction, confidence=spec.confidence)
        plain, bold = paper_tables.table2_layout(long, spec.factor, rows)
        r.md(f"Each row's maximum in bold. With n ≥ 2 a cell is mean ± the {spec.confidence:.0%} "
             f"t-interval's half width, and + / - marks a {spec.test.capitalize()} two-sided t-test against "
             f"{lam} = 0 in the same row significant at α = {spec.alpha:g} (uncorrected; "
             f"{spec.correction}-corrected in the CSV).", "")
        r.table(plain, base, f"Table 2 layout: {words.metric(spec.metric)} by row and {lam}{words.at(labels)}",
                show=bold)
        r.table(long, base + "_tests", f"Every cell: n, mean, interval, test against {lam} = 0",
                inline=False)
        if pub is not None:
            cmp, counts = paper_tables.compare_table2(long, spec.published, spec.factor, rows)
            paper_n = pub["max_at_positive"]
            sentence = (f"{pub['title']}: the row maximum is at {lam} > 0 in "
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
        layers = paper_tables.guided_modules(sub, recorded.profiles)
        if len(layers):
            r.table(layers, base + "_layers",
                    "Layers each placement guides (index: conv layers in forward order)",
                    inline=len(layers) <= 80)




@renders(Claims)
def _claims(r: ReportWriter, spec: Claims, frame, recorded, factors):
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
        r.verdicts.append(verdict.claim_row(claim, cells, f"[claim {i}](#{r.section})"))
        r.md(f"- {sentence}.", "")
        if len(cells):
            r.table(cells, f"claim{i}_{claim['metric']}", f"Claim {i}: {claim['text']}", inline=False)
    r.md("")
