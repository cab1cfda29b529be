"""Report section of a ProtocolEffect: a protocol setting compared at each λ, its ANOVA
(repeated measures where the arms share one trained model), and the sign tables per arm."""

from __future__ import annotations

import numpy as np
import pandas as pd

from harness.analysis import by_seed, grouping, omnibus, protocol, significance, words
from harness.analysis.spec import ProtocolEffect
from harness.training.stopping import STOPPING_RULE
from harness.analysis.sections.base import renders
from harness.analysis.writer import ReportWriter, stem


@renders(ProtocolEffect)
def _protocol(r: ReportWriter, spec: ProtocolEffect, frame, recorded, factors):
    for labels, sub in grouping.slices(frame, spec.at, factors, exclude=(spec.factor, spec.protocol)):
        values = grouping.sorted_levels(sub[spec.protocol])
        if len(values) < 2:  # e.g. placement on a one-block CNN, where "all" is "first"
            r.md(f"- {'At ' + words.slice_words(labels) if labels else 'All replications'}: only "
                 f"{words.factor(spec.protocol)} {', '.join(grouping.level_label(v) for v in values) or 'none'} "
                 "recorded, nothing to compare.", "")
            continue
        base = stem("protocol", spec.protocol, spec.metric, labels=labels)
        lam, setting_word, metric = words.factor(spec.factor), words.factor(spec.protocol), words.metric(spec.metric)
        r.md(f"### Effect of the {setting_word} on {metric}{words.at(labels)}", "")
        # a stopping rule's arms are always one training, and where they stop at the same
        # epoch that is their outcome, which the repeated-measures ANOVA below keeps; other
        # settings' trainings are separate, and identical only where the setting does nothing
        inert = ([] if spec.protocol in STOPPING_RULE
                 else protocol.same_training_levels(sub, spec.metric, spec.protocol, spec.factor))
        compared = sub[~np.logical_or.reduce([grouping.matches(sub[spec.factor], level) for level in inert])] \
            if inert else sub
        if inert:
            r.md(f"At {lam} = {', '.join(grouping.level_label(v) for v in inert)} every {setting_word} is one "
                 f"training (each seed's {metric} identical under all of them): left out of the comparisons "
                 "below, which would count each training twice and test nothing.", "")
        if not len(compared):
            continue
        eff = protocol.protocol_effect(compared, spec.metric, spec.protocol, spec.factor,
                                       alpha=spec.alpha, test=spec.test, correction=spec.correction)
        r.table(eff, base, f"{words.capital(setting_word)} values compared at each {lam} (two-sided, "
                f"α = {spec.alpha:g}, {spec.correction} across the table; diff = mean_a − mean_b){words.at(labels)}")
        if spec.protocol in STOPPING_RULE:
            _protocol_rm_anova(r, spec, compared, base, labels)
            anova = []
        else:
            anova = omnibus.two_way_anova(compared, spec.metric, spec.factor, spec.protocol)
        if len(anova):
            effects = {row.effect: row for row in anova.itertuples(index=False)}
            method, setting = effects[spec.factor], effects[spec.protocol]
            both = effects.get(f"{spec.factor} × {spec.protocol}")
            r.md(f"Two-way ANOVA ({lam} × {setting_word}, type II): partial η² {lam} {method.partial_eta_sq:.3f} "
                 f"(p = {method.p:.2g}), {setting_word} {setting.partial_eta_sq:.3f} (p = {setting.p:.2g})"
                 + (f", their interaction {both.partial_eta_sq:.3f} (p = {both.p:.2g}): with an interaction, the "
                    f"{setting_word}'s effect depends on {lam}; read it per {lam} in the tables"
                    if both is not None and both.p < spec.alpha else "") + ".", "")
            r.table(anova, base + "_anova", f"Two-way ANOVA of {metric}: {lam} × {setting_word}{words.at(labels)}")
        _protocol_paired(r, spec, compared, base, labels)
        signs = {}
        for value in grouping.sorted_levels(sub[spec.protocol]):
            part = sub[grouping.matches(sub[spec.protocol], value)]
            long = significance.pairwise(grouping.groups(part, spec.metric, spec.factor), alpha=spec.alpha,
                                   test=spec.test, correction=spec.correction, metric=spec.metric)
            signs[value] = significance.sign_matrix(long, "sign")
        values = list(signs)
        for i, a in enumerate(values):
            for b in values[i + 1:]:
                _, counts = significance.compare_signs(signs[a], signs[b])
                r.md(f"- The {words.factor(spec.factor)} sign table of {words.metric(spec.metric)} (every pair of "
                     f"{words.factor(spec.factor)} levels) under {words.factor(spec.protocol)} "
                     f"{grouping.level_label(a)} against {grouping.level_label(b)}: "
                     f"{significance.agreement_sentence(counts)}.")
        r.md("")


def _protocol_rm_anova(r, spec, sub, base, labels):
    """λ × a stopping-rule setting: its arms of a (λ, seed) are one trained model, so the
    seed is the unit measured under every arm (repeated measures), not two replications."""
    anova = omnibus.repeated_measures_anova(sub, spec.metric, spec.factor, spec.protocol)
    lam, setting_word = words.factor(spec.factor), words.factor(spec.protocol)
    shared = (f"the {setting_word} arms of a ({lam}, seed) share one trained model "
              "(a stopping rule decides only when it stops)")
    if not len(anova):
        r.md(f"No ANOVA: {shared}, so an unpaired ANOVA would count each training twice, and the seeds do "
             f"not cover every {lam} × {setting_word} cell once, which a repeated-measures ANOVA needs.", "")
        return
    effects = {row.effect: row for row in anova.itertuples(index=False)}
    method, protocol_ = effects[spec.factor], effects[spec.protocol]
    r.md(f"Repeated-measures ANOVA ({lam} × {setting_word}, seed as the unit: {shared}): partial η² "
         f"{lam} {method.partial_eta_sq:.3f} (p = {method.p:.2g}), {setting_word} "
         f"{protocol_.partial_eta_sq:.3f} (p = {protocol_.p:.2g}).", "")
    r.table(anova, base + "_anova", f"Repeated-measures ANOVA of {words.metric(spec.metric)}: {lam} × "
            f"{setting_word}, seed as the unit{words.at(labels)}")


def _protocol_paired(r, spec, sub, base, labels):
    """The protocol's effect seed by seed at each level of the method's factor: the same
    seed, λ and everything else, only the protocol differs."""
    parts = [by_seed.paired_by_seed(sub[grouping.matches(sub[spec.factor], level)], spec.metric, spec.protocol,
                                   alpha=spec.alpha, correction="none").assign(**{spec.factor: level})
             for level in grouping.sorted_levels(sub[spec.factor])]
    paired = pd.concat([p for p in parts if len(p)], ignore_index=True) if any(len(p) for p in parts) else None
    if paired is None or not (paired["n_pairs"] >= 2).any():
        return
    paired = paired[[spec.factor] + [c for c in paired.columns if c != spec.factor]]
    significance.add_signs(paired, "mean_diff", "n_pairs", "n_pairs", alpha=spec.alpha, correction=spec.correction)
    tested = paired[paired["n_pairs"] >= 2]
    n, same = int(paired["n_pairs"].sum()), int(paired["identical"].sum())
    differ = int(tested["sign"].isin(["+", "-"]).sum())
    differ_adj = int(tested["sign_adj"].isin(["+", "-"]).sum())
    lam, setting_word = words.factor(spec.factor), words.factor(spec.protocol)
    r.md(f"Seed by seed (the same seed and {lam}, only the {setting_word} differs): {words.metric(spec.metric)} "
         f"is identical in {same} of {n} pairs, and a paired t-test finds a difference at {differ} of "
         f"{len(tested)} {lam} levels (α = {spec.alpha:g}, uncorrected), {differ_adj} with {spec.correction} "
         f"across them.", "")
    r.table(paired, base + "_paired", f"{words.capital(setting_word)} against "
            f"{grouping.level_label(paired['vs'].iloc[0])} at each {lam}, paired by seed (mean_diff: the "
            f"{setting_word} named minus vs; p_adj, sign_adj: {spec.correction} across the table; verdict: "
            f"uncorrected, as sign){words.at(labels)}")
