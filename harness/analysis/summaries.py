"""Tables that summarise rather than test: intervals per cell (the CI plots' and training
curves' data), per-level summaries against published numbers, the entropy diagnostics and
the guidance sentence, status counts, the open choices, and the entropy profiles."""

from __future__ import annotations

import numpy as np
import pandas as pd

from harness.analysis import paper, stats
from harness.analysis.grouping import DONE, UNTESTABLE, groups, level_label, matches, sort_key, sorted_levels


def ci_table(frame: pd.DataFrame, metric: str, x: str, hue: str,
             confidence: float = 0.95) -> pd.DataFrame:
    """Mean and t-interval of ``metric`` for every (hue, x) cell present in the frame."""
    rows = []
    for h, values in groups(frame, metric, hue).items():
        sub = frame[matches(frame[hue], h)]
        for xv, vals in groups(sub, metric, x).items():
            mean, lo, hi = stats.t_interval(vals, confidence)
            rows.append({hue: h, x: xv, "n": len(vals), "mean": mean,
                         "sd": vals.std(ddof=1) if len(vals) > 1 else np.nan, "lo": lo, "hi": hi})
    return pd.DataFrame(rows, columns=[hue, x, "n", "mean", "sd", "lo", "hi"])


def curve_table(frame: pd.DataFrame, history: pd.DataFrame, metric: str, hue: str,
                confidence: float = 0.95) -> pd.DataFrame:
    """Per ``hue`` level and epoch, the mean and t-interval of the per-epoch ``metric`` over
    the done replications of ``frame`` that trained that epoch: n of them, out of the
    level's ``of`` (``history``: Store.history rows, id and epoch)."""
    if metric not in history.columns or not np.isfinite(history[metric].to_numpy(dtype=float)).any():
        raise KeyError(f"no per-epoch {metric!r} recorded")
    done = frame.loc[frame["status"] == DONE, ["id", hue]]
    per_epoch = history[["id", "epoch", metric]].astype({"id": str}).merge(done.astype({"id": str}), on="id")
    rows = []
    for level in sorted_levels(done[hue]):
        at_level = per_epoch[matches(per_epoch[hue], level)]
        of = int(matches(done[hue], level).sum())
        for epoch, values in at_level.groupby("epoch", sort=True)[metric]:
            values = values.to_numpy(dtype=float)
            values = values[np.isfinite(values)]
            mean, lo, hi = stats.t_interval(values, confidence)
            rows.append({hue: level, "epoch": int(epoch), "n": len(values), "of": of,
                         "mean": mean, "lo": lo, "hi": hi})
    return pd.DataFrame(rows, columns=[hue, "epoch", "n", "of", "mean", "lo", "hi"])


def summary_table(frame: pd.DataFrame, metrics, factor: str,
                  confidence: float = 0.95) -> pd.DataFrame:
    """Per level of ``factor``: n and mean / t-interval of each metric (wide)."""
    rows = []
    for level in sorted_levels(frame[factor]):
        row = {factor: level}
        for metric in metrics:
            vals = groups(frame, metric, factor)[level]
            mean, lo, hi = stats.t_interval(vals, confidence)
            row.update({f"{metric}_n": len(vals), f"{metric}_mean": mean,
                        f"{metric}_lo": lo, f"{metric}_hi": hi})
        rows.append(row)
    return pd.DataFrame(rows)


def compare_summary(ours: pd.DataFrame, key: str) -> tuple[pd.DataFrame, dict]:
    """Published Table 3-style values beside our means; 'agree' = inside our t-interval."""
    pub = paper.SUMMARY_TABLES[key]
    factor = pub["factor"]
    rows, agree, compared = [], 0, 0
    for level, values in pub["rows"].items():
        mine = ours[np.isclose(ours[factor].astype(float), level)] if len(ours) else ours
        row = {factor: level}
        for metric, value in zip(pub["columns"], values):
            row[f"{metric}_paper"] = value
            if len(mine) and f"{metric}_mean" in mine:
                m = mine.iloc[0]
                row[f"{metric}_ours"] = m[f"{metric}_mean"]
                inside = m[f"{metric}_lo"] <= value <= m[f"{metric}_hi"]
                if np.isfinite(m[f"{metric}_lo"]):
                    compared += 1
                    agree += bool(inside)
                    row[f"{metric}_in_ci"] = "yes" if inside else "no"
                else:
                    row[f"{metric}_in_ci"] = UNTESTABLE
            else:
                row[f"{metric}_ours"] = np.nan
                row[f"{metric}_in_ci"] = ""
        rows.append(row)
    return pd.DataFrame(rows), dict(agree=agree, compared=compared)


def diagnostics(frame: pd.DataFrame, factor: str,
                metrics=("grad_ratio", "term_led", "logdet_mean", "log_c11_mean", "entropy_loss")) -> pd.DataFrame:
    """Per level of ``factor``: n, mean and sd of each entropy diagnostic that has data."""
    done = frame[frame["status"] == DONE]
    present = [m for m in metrics if m in frame.columns and np.isfinite(done[m].astype(float)).any()]
    rows = []
    for level in sorted_levels(frame[factor]):
        row = {factor: level}
        for m in present:
            vals = groups(frame, m, factor)[level]
            row.update({f"{m}_n": len(vals), f"{m}_mean": vals.mean() if len(vals) else np.nan,
                        f"{m}_sd": vals.std(ddof=1) if len(vals) > 1 else np.nan})
        rows.append(row)
    return pd.DataFrame(rows) if present else pd.DataFrame()


def guidance_sentence(frame: pd.DataFrame, factor: str = "lam", shown: str | None = None) -> str | None:
    """Did the guidance term change training? Two readings of the done replications:
    the size of its gradient against the task's (grad_ratio, a norm ratio on the guided
    weights), and its effect on what it targets: the final log|det W| (dense) or log|c11|
    (conv) at each λ > 0 against λ = 0 (Welch t-test at 0.01). A small norm ratio alone
    does not mean no effect: Adam scales each weight's step by that weight's own gradient
    history, so where the task gradient is zero (weights on inputs that are always 0,
    such as MNIST's blank border pixels) a tiny guidance gradient still moves the weight a
    full step. ``shown``: the factor as the text names it ("λ2"; default ``factor``). None
    without the data."""
    if factor not in frame.columns:
        return None
    done = frame[frame["status"] == DONE]
    if not (done[factor].astype(float) > 0).any():  # no guidance trained (a study of another paper): nothing to say
        return None
    parts = _gradient_parts(done, factor, shown or factor) + _target_parts(done, factor, shown or factor)
    return "Guidance term: " + "; ".join(parts) if parts else None


def _gradient_parts(done: pd.DataFrame, factor: str, shown: str) -> list[str]:
    """The guidance gradient's size (grad_ratio) and reach (term_led), largest mean over λ > 0."""
    guided = done[done[factor].astype(float) > 0]
    parts = []
    for metric in ("grad_ratio", "term_led"):
        if metric not in guided.columns:
            continue
        values = guided[metric].astype(float)
        infinite = guided[np.isinf(values)]
        means = _level_means(guided, metric, factor)
        if not len(means) and not len(infinite):
            continue
        where = f"({metric}, mean at {shown} = {level_label(means.idxmax())})" if len(means) else ""
        if metric == "grad_ratio":
            if len(infinite):
                levels = sorted_levels(infinite[factor])
                parts.append(f"in some measured batches it was the only gradient on the weights it guides (the task "
                             f"gradient there was 0: grad_ratio = inf in {len(infinite)} replication(s), at {shown} = "
                             f"{', '.join(level_label(l) for l in levels)}; left out of the means below)")
            if len(means):
                parts.append(f"its gradient is at most {float(means.max()):.3g} of the task gradient in norm {where}")
        else:
            parts.append(f"it outweighs the task gradient on up to {float(means.max()):.0%} of the weights it "
                         f"acts on {where}, and Adam moves those weights a full step")
    return parts


def _level_means(guided: pd.DataFrame, metric: str, factor: str) -> pd.Series:
    """Mean of ``metric`` per level. A replication whose ratio is inf (the task gradient was
    0 in a measured batch) is left out of its level's mean, not the level: the others' mean
    still tells."""
    return guided[np.isfinite(guided[metric].astype(float))].groupby(factor)[metric].mean().dropna()


def _target_test(done: pd.DataFrame, factor: str) -> dict | None:
    """The final log|det W| (or log|c11|) at each λ > 0 against λ = 0 (Welch, 0.01): the
    target's name, the base mean, the levels that moved (level, mean), those tested that did
    not, and those with one replication; ``few`` names what made the test impossible
    ("0": the base has < 2 replications, ">0": every λ > 0 has). None without the data."""
    target = next((m for m in ("logdet_mean", "log_c11_mean") if m in done.columns
                   and np.isfinite(done[m].astype(float)).any()), None)
    if target is None:
        return None
    grp = groups(done, target, factor)
    base = next((v for level, v in grp.items() if float(level) == 0.0), None)
    if base is None or not len(base):
        return None
    guided = [(level, v) for level, v in grp.items() if float(level) > 0]
    few = "0" if len(base) < 2 else None if any(len(v) > 1 for _, v in guided) else ">0"
    moved = [] if few else [(level, float(np.mean(v))) for level, v in guided
                            if len(v) > 1 and stats.ttest(v, base, welch=True).p < 0.01]
    return dict(name="log|det W|" if target == "logdet_mean" else "log|c11|", base=float(np.mean(base)), few=few,
                moved=moved, kept=[level for level, v in guided if len(v) > 1 and level not in dict(moved)],
                untestable=[level for level, v in guided if len(v) < 2])


def _target_parts(done: pd.DataFrame, factor: str, shown: str) -> list[str]:
    """Whether the final log|det W| (or log|c11|) at some λ > 0 differs from λ = 0 (Welch, 0.01)."""
    test = _target_test(done, factor)
    if test is None:
        return []
    name, base = test["name"], test["base"]
    if test["few"]:
        few = f"{shown} = 0" if test["few"] == "0" else f"every {shown} > 0"
        return [f"whether the final {name} moved is untestable ({few} has fewer than 2 replications)"]
    if not test["moved"]:
        return [f"the final {name} at no {shown} > 0 differs from {shown} = 0 ({base:.3g}) at α = 0.01"]
    moves = ", ".join(f"{mean:.3g} at {level_label(level)}" for level, mean in test["moved"])
    tested, untestable = (", ".join(level_label(l) for l in test[k]) for k in ("kept", "untestable"))
    notes = (f"; not at {tested}" if tested else "") + (f"; untestable at {untestable} (n < 2)" if untestable else "")
    return [f"the final {name} moves from {base:.3g} at {shown} = 0 to {moves} "
            f"(Welch t-test, α = 0.01{notes}): the guidance changed the weights it targets"]


def guidance_overview(frames: list[pd.DataFrame], factor: str = "lam", shown: str | None = None,
                      by: str = "") -> str | None:
    """The guidance sentence over several slices at once (the report's summary, where one
    sentence per architecture or protocol arm would fill the screen): the range of the
    largest mean grad_ratio, the largest term_led, and in how many tested λ > 0 levels and
    slices the targeted log|det W| (log|c11|) moved. ``by``: what the slices are ("latent
    and stopping monitor"). None when no slice trained guidance."""
    shown = shown or factor
    ratios, led, tests, infinite = [], [], [], 0
    for frame in frames:
        if factor not in frame.columns:
            continue
        done = frame[frame["status"] == DONE]
        guided = done[done[factor].astype(float) > 0]
        if not len(guided):
            continue
        for metric, out in (("grad_ratio", ratios), ("term_led", led)):
            if metric in guided.columns:
                means = _level_means(guided, metric, factor)
                out += [float(means.max())] if len(means) else []
        if "grad_ratio" in guided.columns:
            infinite += int(np.isinf(guided["grad_ratio"].astype(float)).sum())
        tests.append(_target_test(done, factor))
    if not tests:
        return None
    parts = []
    if ratios:
        span = f"{min(ratios):.3g}" if min(ratios) == max(ratios) else f"{min(ratios):.3g} to {max(ratios):.3g}"
        parts.append(f"its gradient reaches {span} of the task gradient in norm (grad_ratio, the largest "
                     f"mean over {shown} > 0, slice by slice"
                     + (f"; {infinite} replication(s) with a task gradient of 0, left out" if infinite else "") + ")")
    if led:
        parts.append(f"it outweighs the task gradient on up to {max(led):.0%} of the weights it acts on")
    testable = [t for t in tests if t is not None and not t["few"]]
    if testable:
        names = " / ".join(dict.fromkeys(t["name"] for t in testable))
        moved = sum(len(t["moved"]) for t in testable)
        of = moved + sum(len(t["kept"]) for t in testable)
        lone = sum(len(t["untestable"]) for t in testable)
        parts.append(f"the final {names} differs from {shown} = 0 at {moved} of {of} tested {shown} > 0 levels "
                     f"(Welch t-test, α = 0.01{f'; {lone} more with one replication' if lone else ''}), in "
                     f"{sum(bool(t['moved']) for t in testable)} of {len(testable)} slices")
    few = sum(t is not None and bool(t["few"]) for t in tests)
    if few:
        parts.append(f"untestable in {few} slice(s) (fewer than 2 replications at {shown} = 0 or at every {shown} > 0)")
    slices = f"{len(tests)} slices" + (f" by {by}" if by else "")
    return f"Guidance term, over {slices}: " + "; ".join(parts) if parts else None


def status_counts(frame: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Replications per grid cell by status (done / diverged / failed), every cell kept."""
    keys = [k for k in keys if k in frame.columns]
    statuses = ["done", "diverged", "failed"]
    statuses += sorted(set(frame["status"]) - set(statuses))
    if keys:
        table = frame.groupby(keys, dropna=False)["status"].value_counts().unstack(fill_value=0)
    else:
        table = frame["status"].value_counts().to_frame().T
    table = table.reindex(columns=statuses, fill_value=0).reset_index(drop=not keys)
    if keys:
        order = sorted(range(len(table)),
                       key=lambda i: tuple(sort_key(table.loc[i, k]) for k in keys))
        table = table.loc[order].reset_index(drop=True)
    table["total"] = table[statuses].sum(axis=1)
    if "hit_max_epochs" in frame.columns:  # stopping epoch censored at the cap
        done = frame[frame["status"] == DONE]
        done = done.assign(hit_max_epochs=done["hit_max_epochs"].fillna(0))
        if keys:
            hits = done.groupby(keys, dropna=False)["hit_max_epochs"].sum().reset_index()
            table = table.merge(hits, on=keys, how="left")
            table["hit_max_epochs"] = table["hit_max_epochs"].fillna(0).astype(int)
        else:
            table["hit_max_epochs"] = int(done["hit_max_epochs"].sum())
    table.columns.name = None
    return table


def open_choices(settings: dict, frame: pd.DataFrame) -> pd.DataFrame:
    """PAPER.md §4 choices with the value(s) these replications used (from the frame when
    the column is there, else from the study's settings)."""
    rows = []
    choices = dict(paper.OPEN_CHOICES)
    if "dataset" in frame.columns and frame["dataset"].isin(paper.LARGE_DATASETS).any():
        choices.update(paper.OPEN_CHOICES_LARGE)
    for key, (item, what) in choices.items():
        if key in frame.columns:
            vals = [level_label(v) for v in sorted_levels(frame[key].dropna())]
            value = ", ".join(vals) if vals else "n/a"
        elif key in settings:
            value = level_label(settings[key])
        else:
            value = "not recorded"
        rows.append({"key": key, "paper_section_4": item, "value": value, "what": what})
    return pd.DataFrame(rows)


def profile_summary(profiles: pd.DataFrame) -> pd.DataFrame:
    """Per stage and layer: n filters and the box-plot statistics of the entropy change."""
    cols = ["stage", "layer", "name", "kind", "n", "mean", "sd", "min", "q1", "median", "q3", "max"]
    if profiles is None or not len(profiles):
        return pd.DataFrame(columns=cols)
    rows = []
    stages = sorted(set(profiles["stage"]), key=lambda s: (s != "init", s))
    for stage in stages:
        st = profiles[profiles["stage"] == stage]
        for layer in sorted(set(st["layer"])):
            lay = st[st["layer"] == layer]
            v = lay["value"].to_numpy(dtype=float)
            v = v[np.isfinite(v)]
            q = np.percentile(v, [0, 25, 50, 75, 100]) if len(v) else [np.nan] * 5
            rows.append(dict(stage=stage, layer=int(layer), name=str(lay["name"].iloc[0]),
                             kind=str(lay["kind"].iloc[0]), n=len(v),
                             mean=v.mean() if len(v) else np.nan,
                             sd=v.std(ddof=1) if len(v) > 1 else np.nan,
                             min=q[0], q1=q[1], median=q[2], q3=q[3], max=q[4]))
    return pd.DataFrame(rows, columns=cols)


def commits(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per git commit the replications were trained at, in the order first used:
    replications, first start, last finish, and the harness and torch versions."""
    done = frame[frame["git_commit"].notna()].copy()
    done["git_commit"] = done["git_commit"].astype(str)
    agg = {"replications": ("id", "size")}
    if "started_at" in done.columns:
        agg["first_started"] = ("started_at", "min")
    if "finished_at" in done.columns:
        agg["last_finished"] = ("finished_at", "max")
    for col in ("harness_version", "torch_version"):
        if col in done.columns:
            agg[col] = (col, lambda s: ", ".join(sorted(str(v) for v in s.dropna().unique())))
    table = done.groupby("git_commit", sort=True).agg(**agg).reset_index()
    order = ["first_started", "git_commit"] if "first_started" in table.columns else ["git_commit"]
    return table.sort_values(order, kind="stable").reset_index(drop=True)
