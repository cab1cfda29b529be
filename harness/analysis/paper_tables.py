"""The paper's Table 1 (the best λ's gain per architecture, one-tailed) and Table 2 (every
configuration against λ = 0), with their comparison to the published rows."""

from __future__ import annotations

import numpy as np
import pandas as pd

from harness.analysis import paper, stats
from harness.analysis.grouping import UNTESTABLE, groups, level_label, matches, select, sort_key, sorted_levels
from harness.analysis.significance import sign_cell


def table1(frame: pd.DataFrame, *, metric_train: str = "train_acc", metric_val: str = "val_acc",
           factor: str = "lam", by: str = "arch", test: str = "student",
           correction: str = "holm", alpha: float = 0.05) -> pd.DataFrame:
    """One row per ``by`` value: base means at factor = 0; Δ (mean - base mean) of train and
    val at the level > 0 with the highest mean val among those with 2 or more replications
    (a level of one cannot be tested; only where no level has 2 is it picked); one-tailed
    t-tests (H1: Δ > 0), raw and corrected over those levels (the best level is chosen after
    looking at the data);
    ``mde_val``: smallest Δ val detectable with power 0.8 at ``alpha`` one-tailed; ``hi_val``:
    the upper one-sided (1 - ``alpha``) confidence bound of Δ val; ``sd_val``: the pooled sd
    of val at the best level and the base; ``p_val_loss``: the
    one-tailed p of a loss (H1: Δ val < 0) at that level, which the paper's tests, one-tailed
    for a gain, read as p ≈ 1: where even the best λ is worse than the base."""
    rows = []
    for key in sorted_levels(frame[by]):
        sub = frame[matches(frame[by], key)]
        tr, va = groups(sub, metric_train, factor), groups(sub, metric_val, factor)
        base = [l for l in tr if float(l) == 0.0]
        cands = [l for l in tr if float(l) > 0 and len(va[l])]
        testable = [l for l in cands if len(va[l]) >= 2]
        cands = testable or cands
        row = dict(by=key, n_base=len(va[base[0]]) if base else 0,
                   base_train=_mean(tr[base[0]]) if base else np.nan,
                   base_val=_mean(va[base[0]]) if base else np.nan, n_levels=len(cands))
        if not base or not cands:
            row["note"] = "no base (factor = 0)" if not base else "no level > 0"
            rows.append(row)
            continue
        b = base[0]
        p_tr = [stats.ttest(tr[l], tr[b], welch=test == "welch", alternative="greater").p for l in cands]
        p_va = [stats.ttest(va[l], va[b], welch=test == "welch", alternative="greater").p for l in cands]
        best = best_level(va, cands)
        p_loss = stats.ttest(va[b], va[best], welch=test == "welch", alternative="greater").p  # base > best
        i = cands.index(best)
        p_tr_adj, p_va_adj = stats.adjust(p_tr, correction)[i], stats.adjust(p_va, correction)[i]
        n_best = len(va[best])
        note = ("untestable: fewer than 2 replications" if min(row["n_base"], n_best) < 2 else
                "train untestable: fewer than 2 training accuracies" if min(len(tr[best]), len(tr[b])) < 2 else "")
        mde = stats.min_detectable_effect(n_best, row["n_base"], alpha, 0.8, "greater")
        row.update(
            best=best, n_best=n_best,
            d_train=_mean(tr[best]) - row["base_train"], p_train=p_tr[i],
            stars_train=stats.stars(p_tr[i]), p_train_adj=p_tr_adj, stars_train_adj=stats.stars(p_tr_adj),
            d_val=_mean(va[best]) - row["base_val"], p_val=p_va[i],
            stars_val=stats.stars(p_va[i]), p_val_adj=p_va_adj, stars_val_adj=stats.stars(p_va_adj),
            p_val_loss=p_loss, mde_val=mde * stats.pooled_sd(va[best], va[b]), sd_val=stats.pooled_sd(va[best], va[b]),
            hi_val=stats.diff_upper_bound(va[best], va[b], alpha, welch=test == "welch"),
            note=note)
        rows.append(row)
    cols = ["by", "n_base", "base_train", "base_val", "n_levels", "best", "n_best", "d_train",
            "p_train", "stars_train", "p_train_adj", "stars_train_adj", "d_val", "p_val",
            "stars_val", "p_val_adj", "stars_val_adj", "p_val_loss", "mde_val", "sd_val", "hi_val", "note"]
    return pd.DataFrame(rows).reindex(columns=cols).rename(columns={"by": by})


def best_level(values: dict, levels: list):
    """The level with the highest mean (the lower one on a tie): Table 1's best λ."""
    return max(levels, key=lambda l: (_mean(values[l]), -float(l)))


def _mean(x) -> float:
    return float(np.mean(x)) if len(x) else float("nan")


# How our validation gain at the best λ stands to a published Table 1 row (compare_table1)
AGREES, CONTRADICTS, UNDECIDED_GAIN, NOT_RUN = "agrees", "contradicts", "undecided", "not run"


def compare_table1(ours: pd.DataFrame, rows: dict, by: str = "arch", alpha: float = 0.05,
                   either_way: bool = False) -> pd.DataFrame:
    """Published Table 1 rows ({arch: paper.TABLE1_COLUMNS values}) beside ours (table1),
    one row per published architecture: both Δ and p of train and val, our corrected p, and
    ``gain``, how our validation gain at the best λ stands to the published one (one-tailed,
    ``alpha``, the raw p as the paper's):

    - 'agrees': both or neither find a gain;
    - 'contradicts': we find a gain the paper did not, one that survives the correction for
      the pick of λ (``p_val_adj``: in 20,000 simulated grids of 10 seeds without an effect,
      the raw p at the best of six levels found a gain 18% of the time, Holm's 3.9%); or
      none where the paper found one, and our data exclude the published gain
      (gain_excluded);
    - 'undecided': a gain the paper did not find that the correction takes away, or none
      where it found one, with too few seeds to exclude it;
    - grouping.UNTESTABLE (no p: fewer than 2 replications a side) or 'not run'.

    ``either_way``: the paper states no difference at all ("no interesting distinction"),
    so a significant loss at the best λ (``p_val_loss``: even the best level is worse than
    the base) contradicts it too."""
    mine = {level_label(k): r for k, r in zip(ours[by], ours.to_dict("records"))} if len(ours) else {}
    out = []
    for arch, values in rows.items():
        theirs, m = dict(zip(paper.TABLE1_COLUMNS, values)), mine.get(arch, {})
        row = {by: arch}
        for part in ("train", "val"):
            row.update({f"d_{part}_paper": theirs[f"d_{part}"], f"p_{part}_paper": theirs[f"p_{part}"],
                        f"d_{part}_ours": m.get(f"d_{part}", np.nan), f"p_{part}_ours": m.get(f"p_{part}", np.nan),
                        f"p_{part}_adj_ours": m.get(f"p_{part}_adj", np.nan)})
        row["hi_val_ours"] = m.get("hi_val", np.nan)
        row["d_val_paper_here"] = here = scaled_gain(m, theirs) if m else np.nan
        # seeds per level that find that gain with power 0.8 (one-tailed), at our spread
        effect = stats.standardized(here, m.get("sd_val", np.nan))
        row["seeds_paper_here"] = stats.seeds_needed(effect, alpha, 0.8, alternative="greater")
        row["p_val_loss_ours"] = m.get("p_val_loss", np.nan)
        row["gain"] = _gain(m, theirs, alpha, either_way) if m else NOT_RUN
        out.append(row)
    return pd.DataFrame(out)


def _gain(mine: dict, theirs: dict, alpha: float, either_way: bool = False) -> str:
    p = mine.get("p_val", np.nan)
    if not np.isfinite(p):
        return UNTESTABLE
    ours_sig, paper_sig = p < alpha, theirs["p_val"] is not None and theirs["p_val"] < alpha
    if either_way and not paper_sig and mine.get("p_val_loss", np.nan) < alpha:
        return CONTRADICTS
    if ours_sig == paper_sig:
        return AGREES
    if ours_sig:  # a gain the paper did not find: a contradiction only if it survives the pick
        return CONTRADICTS if mine.get("p_val_adj", np.nan) < alpha else UNDECIDED_GAIN
    return CONTRADICTS if gain_excluded(mine, theirs) else UNDECIDED_GAIN


def gain_excluded(mine: dict, theirs: dict) -> bool:
    """Whether our upper one-sided bound of Δ val (table1's ``hi_val``) lies below the
    published gain, both as a share of the base's error (1 - base accuracy): the data sets
    differ, and 0.005 is a third of the error at 98.5% accuracy but 1.4% of it at 64%."""
    hi, error = mine.get("hi_val", np.nan), 1.0 - mine.get("base_val", np.nan)
    if theirs["d_val"] is None or theirs["base_val"] is None or not np.isfinite(hi) or not np.isfinite(error):
        return False
    published = theirs["d_val"] / (1.0 - theirs["base_val"])
    if error <= 0:  # a perfect base: no error to take a share of; only a bound below 0 excludes a gain
        return bool(hi < 0 < published)
    return bool(hi < scaled_gain(mine, theirs))


def scaled_gain(mine: dict, theirs: dict) -> float:
    """The published Δ val as the same share of our base's error as of the paper's: what
    gain_excluded holds our bound against (NaN where the paper prints none)."""
    if theirs["d_val"] is None or theirs["base_val"] is None:
        return np.nan
    return theirs["d_val"] / (1.0 - theirs["base_val"]) * (1.0 - mine.get("base_val", np.nan))


_PRETTY = {"model": {"vgg16": "VGG-16", "resnet50": "ResNet-50"}}
_HEADERS = {"model": "Model", "data.augment": "A", "net.dropout": "D", "placement": "Entropy loss layers"}


def placement_label(value) -> str:
    """Table 2's label of a placement: "1,2" → "[1,2]", "first" → "[1]", "pre-skip" → "Pre-skip"."""
    text = str(value).strip().lower()
    if text == "first":
        return "[1]"
    if text.replace(",", "").isdigit():
        return f"[{text}]"
    return text.capitalize()


def _row_label(key: str, value) -> str:
    if key == "data.augment":
        return "✓" if str(value) != "none" else ""
    if key == "net.dropout":
        return "✓" if float(value) > 0 else ""
    if key == "placement":
        return placement_label(value)
    return _PRETTY.get(key, {}).get(str(value), level_label(value))


_FIRST = {"model": ("vgg16",), "data.augment": ("none",), "placement": ("first",)}
_LAST = {"placement": ("pre-skip", "empirical")}  # the paper's row order


def _row_sort(key: str, value):
    text = str(value)
    if text in _FIRST.get(key, ()):
        return (0, 0, sort_key(value))
    if text in _LAST.get(key, ()):
        return (2, _LAST[key].index(text), sort_key(value))
    return (1, 0, sort_key(value))


def table2(frame: pd.DataFrame, metric: str = "val_acc", factor: str = "lam",
           rows=("model", "data.augment", "net.dropout", "placement"), *, alpha: float = 0.05,
           test: str = "student", correction: str = "holm", confidence: float = 0.95) -> pd.DataFrame:
    """Long form of Table 2: per row (combination of ``rows``) and level of ``factor``: n,
    mean and t-interval of ``metric``; against level 0 of the same row: difference,
    two-sided t-test p, ``correction`` over the row's levels (p_adj) and signs; ``best``
    marks the row's highest mean (ties all marked, as the paper bolds its maximum)."""
    keys = [k for k in rows if k in frame.columns]
    combos = sorted(frame[keys].drop_duplicates().itertuples(index=False, name=None),
                    key=lambda t: tuple(_row_sort(k, v) for k, v in zip(keys, t)))
    out = []
    for combo in combos:
        grp = groups(select(frame, dict(zip(keys, combo))), metric, factor)
        base = next((level for level in grp if float(level) == 0.0), None)
        others = [level for level in grp if level is not base and base is not None]
        tests = {l: stats.ttest(grp[l], grp[base], welch=test == "welch") for l in others}
        adjusted = dict(zip(others, stats.adjust([tests[l].p for l in others], correction))) if others else {}
        means = {l: _mean(v) for l, v in grp.items()}
        top = max((m for m in means.values() if np.isfinite(m)), default=np.nan)
        for level, vals in grp.items():
            mean, lo, hi = stats.t_interval(vals, confidence)
            row = dict(zip(keys, combo), **{factor: level, "n": len(vals), "mean": mean, "lo": lo, "hi": hi,
                                             "best": bool(np.isfinite(mean) and mean == top)})
            if level in tests:
                n0, p, p_adj = len(grp[base]), tests[level].p, adjusted[level]
                row.update(diff=mean - means[base], p=p, p_adj=p_adj,
                           sign=sign_cell(mean - means[base], p, alpha, len(vals), n0),
                           sign_adj=sign_cell(mean - means[base], p_adj, alpha, len(vals), n0))
            out.append(row)
    cols = keys + [factor, "n", "mean", "lo", "hi", "best", "diff", "p", "p_adj", "sign", "sign_adj"]
    return pd.DataFrame(out).reindex(columns=cols)


def table2_layout(long: pd.DataFrame, factor: str = "lam",
                  rows=("model", "data.augment", "net.dropout", "placement"),
                  digits: int = 3) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The paper's layout of ``table2`` output: one line per row, one column per level.
    A cell is the mean ("0.804"), with ± the t-interval's half width when n ≥ 2 and the
    row's uncorrected sign against level 0 (+ / -) when significant. Returns (plain for
    CSV / LaTeX, Markdown with each row's maximum in bold)."""
    keys = [k for k in rows if k in long.columns]
    levels = sorted_levels(long[factor]) if len(long) else []
    plain, bold = [], []
    for combo, part in long.groupby(keys, sort=False, dropna=False) if keys else [((), long)]:
        combo = combo if isinstance(combo, tuple) else (combo,)
        head = {_HEADERS.get(k, k): _row_label(k, v) for k, v in zip(keys, combo)}
        cells, marked = dict(head), dict(head)
        for level in levels:
            hit = part[matches(part[factor], level)]
            text, best = "", False
            if len(hit):
                c = hit.iloc[0]
                text = "–" if not np.isfinite(c["mean"]) else f"{c['mean']:.{digits}f}"
                if np.isfinite(c["hi"]):
                    text += f"±{(c['hi'] - c['lo']) / 2:.{digits}f}"
                if isinstance(c["sign"], str) and c["sign"] in "+-" and c["sign"]:
                    text += f" {c['sign']}"
                best = bool(c["best"])
            cells[level_label(level)] = text
            marked[level_label(level)] = f"**{text}**" if best and text else text
        plain.append(cells)
        bold.append(marked)
    return pd.DataFrame(plain), pd.DataFrame(bold)


def _published_key(row: dict, rows) -> tuple:
    values = dict(row)
    placement = str(values.get("placement", ""))
    values["placement"] = "1" if placement.strip().lower() == "first" else placement
    if "net.dropout" in values:
        values["net.dropout"] = float(values["net.dropout"])
    return tuple(values.get(k) for k in rows)


def compare_table2(long: pd.DataFrame, key: str, factor: str = "lam",
                   rows=("model", "data.augment", "net.dropout", "placement")) -> tuple[pd.DataFrame, dict]:
    """Published Table 2 (paper.TABLE2[key]) beside ours, for the published rows of the
    models this study ran: per cell the paper's value, our mean and whether the paper's
    value lies in our t-interval; per row whether each maximum is at a level > 0.

    counts: rows (published rows we ran), max_positive / max_positive_paper (of those,
    rows where the best level > 0 beats level 0 strictly, over the levels we ran),
    in_ci / compared (cells with an interval), not_run (published rows of our models we
    did not run)."""
    pub = paper.TABLE2[key]
    levels = pub["levels"]
    keys = list(rows)
    ours = {}
    for combo, part in long.groupby(keys, sort=False, dropna=False) if len(long) else []:
        ours[_published_key(dict(zip(keys, combo)), keys)] = part
    models = {k[0] for k in ours}
    out, counts = [], dict(rows=0, max_positive=0, max_positive_paper=0, in_ci=0, compared=0, not_run=0)
    for pkey, values in pub["rows"].items():
        if pkey[0] not in models:
            continue
        part = ours.get(pkey)
        if part is None:
            counts["not_run"] += 1
            continue
        counts["rows"] += 1
        top = max(values)
        ran = {float(l) for l, n in zip(part[factor], part["n"]) if n > 0}
        paper_ran = {l: v for l, v in zip(levels, values) if float(l) in ran}
        counts["max_positive_paper"] += _max_positive(paper_ran)
        counts["max_positive"] += _max_positive(
            {float(l): m for l, m, n in zip(part[factor], part["mean"], part["n"]) if n > 0})
        for level, value in zip(levels, values):
            hit = part[matches(part[factor], level)]
            row = {**{_HEADERS.get(k, k): _row_label(k, v) for k, v in zip(keys, pkey)},
                   factor: level, "paper": value, "paper_best": value == top}
            if len(hit):
                c = hit.iloc[0]
                inside = np.isfinite(c["lo"]) and c["lo"] <= value <= c["hi"]
                if np.isfinite(c["lo"]):
                    counts["compared"] += 1
                    counts["in_ci"] += bool(inside)
                row.update(n=c["n"], ours=c["mean"], lo=c["lo"], hi=c["hi"], ours_best=bool(c["best"]),
                           in_ci="yes" if inside else ("no" if np.isfinite(c["lo"]) else UNTESTABLE))
            else:
                row.update(n=0, ours=np.nan, lo=np.nan, hi=np.nan, ours_best=False, in_ci="not run")
            out.append(row)
    return pd.DataFrame(out), counts


def _max_positive(means: dict) -> bool:
    """The best level > 0 beats level 0 strictly (False without both)."""
    positive = [m for l, m in means.items() if l > 0 and np.isfinite(m)]
    return 0.0 in means and bool(positive) and max(positive) > means[0.0]


def guided_modules(frame: pd.DataFrame, profiles: pd.DataFrame | None) -> pd.DataFrame:
    """Which module each placement guides: placement, index (conv layers in forward order,
    the placement's numbering) and module name. From a replication's "guided" profile rows
    when it recorded them (pre-skip, empirical), else by reading the indices ("first",
    "all", "1,5") against its "init" profile, which lists the layers in forward order."""
    rows = []
    if profiles is None or not len(profiles) or "placement" not in frame.columns:
        return pd.DataFrame(columns=["placement", "index", "module"])
    for placement in sorted_levels(frame["placement"]):
        ids = frame.loc[matches(frame["placement"], placement), "id"]
        prof = profiles[profiles["id"].isin(set(ids))]
        guided = prof[prof["stage"] == "guided"]
        if len(guided):
            first = guided[guided["id"] == guided["id"].iloc[0]].sort_values("layer")
            pairs = list(zip(first["layer"].astype(int), first["name"]))
        else:
            init = prof[prof["stage"] == "init"]
            if not len(init):
                continue
            init = init[init["id"] == init["id"].iloc[0]]
            kind = "conv" if (init["kind"] == "conv").any() else "dense"
            layers = init[init["kind"] == kind].drop_duplicates("layer").sort_values("layer")
            names = list(layers["name"])
            text = str(placement).strip().lower()
            if text == "all":
                wanted = range(1, len(names) + 1)
            elif text == "first":
                wanted = [1]
            elif text.replace(",", "").isdigit():
                wanted = [int(i) for i in text.split(",")]
            else:
                continue
            pairs = [(i, names[i - 1]) for i in wanted if 1 <= i <= len(names)]
        rows += [{"placement": placement, "index": i, "module": name} for i, name in pairs]
    return pd.DataFrame(rows, columns=["placement", "index", "module"])
