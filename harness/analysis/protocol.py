"""Which protocol reproduces the paper? One row per protocol arm in the results.

A protocol arm is one combination of the settings that make "what the original framework
would have done" (ARM_KEYS: the determinant's precision, what early stopping monitors,
the guidance term's ε, Adam's ε, best or last weights, the initialisation), as far as they
vary among the recorded replications. For each arm: how many cells of each published sign
table agree (the study's SignificanceTable specs with a ``published`` table), each
headline claim's verdict (paper.CLAIMS), and whether the guidance term had any gradient
there (grad_ratio, term_led). Then one sentence: under which arm, if any, the published
pattern appears, and whether there the effect can come from the term's gradient or only
from the stopping rule. Plain data in, plain data out: report.py writes it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from harness.analysis import grouping, paper, significance, stats
from harness.analysis.grouping import groups, matches, sort_key, sorted_levels
from harness.analysis.significance import add_signs, pairwise
from harness.analysis.claims import claim_cells, claim_sentence
from harness.training.stopping import STOPPING_RULE

# The settings an arm is made of, in the order the table shows them.
ARM_KEYS = ("entropy.precision", "train.monitor", "entropy.eps", "train.adam_eps", "train.restore_best", "net.init")
# A guidance gradient below NEGLIGIBLE of the task gradient's norm is lost in a float32
# weight update wherever the task gradient is not zero (float32 resolves 6e-8); below
# NO_GRADIENT it is none at all. Where the term still moved its target, "target moved"
# says so (under Adam a weight with no task gradient follows any gradient a full step).
NO_GRADIENT, NEGLIGIBLE = 1e-12, 1e-6
TARGETS = ("logdet_mean", "log_c11_mean")  # what the term acts on: dense log|det W|, conv log|c11|


# train.monitor=total_float32 first summed a float32 term into a float64 task loss, which
# sees every improvement; since the Keras-style emulation (harness.training.stopping) it
# sums in float32, and each epoch records what the rule saw ("monitored"). A replication
# recorded before keeps its id but trained under the first rule: the analysis names it
# apart, so that no table mixes the two.
LEGACY_MONITOR = "total_float32_f64sum"


def label_legacy_monitor(frame: pd.DataFrame, history: pd.DataFrame | None) -> tuple[pd.DataFrame, int]:
    """(frame, n): ``frame`` with train.monitor = LEGACY_MONITOR for the done replications
    recorded with total_float32 whose epochs hold no monitored value (recorded before the
    Keras-style emulation), and how many they are. Unchanged without a history."""
    if history is None or "monitored" not in history.columns or "train.monitor" not in frame.columns:
        return frame, 0
    seen = history.groupby("id")["monitored"].apply(lambda v: bool(np.isfinite(v.astype(float)).any()))
    legacy = ((frame["train.monitor"] == "total_float32") & (frame["status"] == grouping.DONE)
              & ~frame["id"].map(seen).fillna(False).astype(bool))
    if not legacy.any():
        return frame, 0
    return frame.assign(**{"train.monitor": frame["train.monitor"].where(~legacy, LEGACY_MONITOR)}), int(legacy.sum())


def arm_keys(frame: pd.DataFrame) -> list[str]:
    """The ARM_KEYS that vary among the done replications (the arms' columns)."""
    done = frame[frame["status"] == grouping.DONE]
    return [k for k in ARM_KEYS if k in done.columns and done[k].astype(str).nunique() > 1]


def protocol_arms(frame: pd.DataFrame, sign_specs: list, claims: dict | None, factors: list[str]) -> pd.DataFrame:
    """One row per arm: its settings, n done, "a of b" agreeing cells per published sign
    table, each claim's sentence, the guidance gradient's largest mean ratio over λ > 0 and
    its largest term_led. ``sign_specs``: SignificanceTable specs with ``published``;
    ``claims``: a paper.CLAIMS entry or None; ``factors``: the study's varying keys."""
    keys = arm_keys(frame)
    if not keys:
        return pd.DataFrame()
    rows = []
    for labels, sub in grouping.slices(frame, None, keys):
        arm = {k: labels[k] for k in keys}
        rest = [f for f in factors if f not in keys]
        row = {**arm, "n": int((sub["status"] == grouping.DONE).sum())}
        for spec in sign_specs:
            row[_sign_column(spec)] = _agreement(sub, spec, rest)
        for i, claim in enumerate((claims or {}).get("claims", ()), 1):
            cells = claim_cells(sub, claim, rest)
            row[f"claim {i}"] = claim_sentence(claim, cells)
        row.update(_gradient(sub))
        rows.append(row)
    return pd.DataFrame(rows)


def _sign_column(spec) -> str:
    return paper.SIGN_TABLES[spec.published]["title"].split(":")[0]  # "Fig. 3b"


def _agreement(sub: pd.DataFrame, spec, rest: list[str]) -> str:
    """'a of b' cells of the published sign table that this arm's uncorrected signs agree
    with, at the spec's ``at`` (one slice; '?' when the arm has other factors varying
    there, or nothing to compare)."""
    at = dict(spec.at or {})
    at_sub = grouping.select(sub, at) if all(k in sub.columns for k in at) else sub.iloc[:0]
    others = [k for k in rest if k not in at and k != spec.factor and k in at_sub.columns
              and at_sub[k].astype(str).nunique() > 1]
    if not len(at_sub) or others or spec.metric not in at_sub.columns:
        return "?"
    grp = grouping.groups(at_sub, spec.metric, spec.factor)
    if len(grp) < 2:
        return "?"
    long = significance.pairwise(grp, alpha=spec.alpha, test=spec.test, correction=spec.correction, power=spec.power,
                                 metric=spec.metric)
    _, counts = significance.compare_signs(significance.sign_matrix(long, "sign"), significance.published_signs(spec.published))
    untestable = f" ({counts['untestable']} untestable)" if counts["untestable"] else ""
    return f"{counts['agree']} of {counts['compared']}{untestable}"


def _gradient(sub: pd.DataFrame) -> dict:
    """The guidance gradient in this arm: largest mean grad_ratio over λ > 0 (finite runs),
    largest mean term_led, and whether it had any gradient at all."""
    done = sub[(sub["status"] == grouping.DONE) & (sub["lam"].astype(float) > 0)] if "lam" in sub.columns else sub.iloc[:0]
    out = {"grad_ratio (max mean)": np.nan, "term_led (max mean)": np.nan}
    for metric, column in (("grad_ratio", "grad_ratio (max mean)"), ("term_led", "term_led (max mean)")):
        if metric in done.columns:
            values = done[metric].astype(float)
            means = done[np.isfinite(values)].groupby("lam")[metric].mean().dropna()
            if len(means):
                out[column] = float(means.max())
    ratio = out["grad_ratio (max mean)"]
    out["term has a gradient"] = ("?" if not np.isfinite(ratio) else "no" if ratio <= NO_GRADIENT
                                  else "negligible" if ratio < NEGLIGIBLE else "yes")
    out["target moved"] = _target_moved(sub)
    return out


def _target_moved(sub: pd.DataFrame) -> str:
    """How many λ > 0 levels end with a final log|det W| (or log|c11|) different from
    λ = 0's (Welch, α = 0.01, uncorrected): 'k of m', or '?'."""
    target = next((t for t in TARGETS if t in sub.columns and np.isfinite(sub[t].astype(float)).any()), None)
    if target is None or "lam" not in sub.columns:
        return "?"
    grp = grouping.groups(sub, target, "lam")
    base = next((v for level, v in grp.items() if float(level) == 0), None)
    tested = [(level, v) for level, v in grp.items() if float(level) > 0 and len(v) >= 2]
    if base is None or len(base) < 2 or not tested:
        return "?"
    moved = sum(stats.ttest(v, base, welch=True).p < 0.01 for _, v in tested)
    return f"{moved} of {len(tested)}"


def _reproduces(row: pd.Series, columns: list[str]) -> bool:
    """Whether every published sign table agrees in most of its cells and no stopping or
    MSE claim fails outright in this arm."""
    agree = []
    for c in columns:
        text = str(row[c])
        if " of " not in text:
            return False
        a, b = text.split(" (")[0].split(" of ")
        agree.append(int(b) and int(a) / int(b) > 0.5)
    return bool(agree) and all(agree)


def protocol_sentence(arms: pd.DataFrame, sign_specs: list) -> str:
    """Under which arm, if any, the published pattern appears; and whether the effect can
    come from the term's gradient there or only from the stopping rule."""
    if not len(arms):
        return "The results hold one protocol arm only: nothing to compare."
    columns = [_sign_column(s) for s in sign_specs]
    keys = [k for k in arms.columns if k in ARM_KEYS]

    def name(row) -> str:
        return ", ".join(f"{k}={grouping.level_label(row[k])}" for k in keys)

    hits = [row for _, row in arms.iterrows() if _reproduces(row, columns)]
    if not hits:
        best = max(arms.iterrows(), key=lambda kv: _agreed(kv[1], columns))[1]
        return (f"No protocol arm reproduces the published pattern: the closest, {name(best)}, agrees in "
                f"{', '.join(f'{c} {best[c]}' for c in columns)} cells.")
    parts = []
    for row in hits:
        stopping = any(k in STOPPING_RULE for k in keys)
        gradient = ("had no gradient there" if row["term has a gradient"] == "no" else
                    f"had a negligible gradient there (at most {row['grad_ratio (max mean)']:.2g} of the task gradient)")
        how = (f"the entropy term {gradient}, so the effect comes from the stopping rule and which weights are "
               "evaluated, not from the term's gradient"
               if row["term has a gradient"] in ("no", "negligible") else
               "the term had a gradient there, so the effect may be the method's" if not stopping else
               "the term had a gradient there, and the arm also changes the stopping rule: the two are not separated")
        parts.append(f"{name(row)} ({', '.join(f'{c} {row[c]}' for c in columns)} cells agree): {how}")
    return "The published pattern appears under " + "; ".join(parts) + "."


def _agreed(row: pd.Series, columns: list[str]) -> float:
    total = 0.0
    for c in columns:
        text = str(row[c])
        if " of " in text:
            a, b = text.split(" (")[0].split(" of ")
            total += int(a) / int(b) if int(b) else 0.0
    return total


def protocol_effect(frame: pd.DataFrame, metric: str, protocol: str, factor: str, *,
                    alpha: float = 0.01, test: str = "student",
                    correction: str = "holm") -> pd.DataFrame:
    """For each level of ``factor``: every pair of ``protocol`` values compared (two-sided),
    corrected across the whole table. ``diff`` = mean_a − mean_b with ``b`` the earlier
    value in sort order, as by_seed.paired_by_seed takes the lowest as its baseline: the
    two tables of one comparison read in one direction."""
    rows = []
    for level in sorted_levels(frame[factor]):
        sub = frame[matches(frame[factor], level)]
        long = pairwise(groups(sub, metric, protocol), alpha=alpha, test=test, correction="none", metric=metric)
        long = long[[sort_key(r) > sort_key(c) for r, c in zip(long["row"], long["col"])]]
        for r in long.itertuples(index=False):
            rows.append({factor: level, "a": r.row, "b": r.col, "n_a": r.n_row, "n_b": r.n_col,
                         "mean_a": r.mean_row, "mean_b": r.mean_col, "diff": r.diff, "p": r.p,
                         "g": r.g, "mde": r.mde})
    out = pd.DataFrame(rows, columns=[factor, "a", "b", "n_a", "n_b", "mean_a", "mean_b",
                                      "diff", "p", "p_adj", "sign", "sign_adj", "g", "mde"])
    if len(out):
        add_signs(out, "diff", "n_a", "n_b", alpha=alpha, correction=correction)
    return out


# The outcomes one training fixes: two runs that agree in every one recorded are one
# training, where agreeing in a single discrete metric (a stopping epoch at its cap) is not.
OUTCOMES = ("val_acc", "train_acc", "val_mse", "train_mse", "val_loss", "train_loss", "stop_epoch", "best_epoch")


def same_training_levels(frame: pd.DataFrame, metric: str, protocol: str, factor: str) -> list:
    """The levels of ``factor`` where the ``protocol`` values are one training: in two or
    more seeds recorded under two or more of them, every outcome (``metric`` and OUTCOMES)
    is the same under each, and present under each or none (the guidance's placement at
    λ = 0, where there is no term to place). Comparing them tests nothing and counts each
    training twice."""
    done = frame[frame["status"] == grouping.DONE] if "status" in frame.columns else frame
    if "seed" not in done.columns or metric not in done.columns:
        return []
    outcomes = [metric] + [c for c in OUTCOMES if c in done.columns and c != metric]
    levels = []
    for level in sorted_levels(done[factor]):
        shared = 0
        for _, runs in done[matches(done[factor], level)].groupby("seed"):
            if runs[protocol].nunique() < 2:
                continue  # this seed ran under one value only: nothing to tell
            if not all(_one_value(runs[c]) for c in outcomes):
                break
            shared += 1
        else:
            if shared >= 2:
                levels.append(level)
    return levels


def _one_value(values: pd.Series) -> bool:
    """The same value in every run, or missing in every run."""
    present = values.dropna()
    return not len(present) or (len(present) == len(values) and present.nunique() == 1)
