"""The report's verdict: one row per published claim, per published sign table and per
published Table 1 split compared, `claim | published | replicated | verdict | evidence`,
where the verdict is one of "reproduces", "does not reproduce" or "inconclusive". Plain
data in, a DataFrame out.

A claim (harness.analysis.claims) reproduces when it holds in every cell it speaks of that
could be tested, does not when its interval lies outside the published range in some cell,
and is inconclusive otherwise (intervals straddling a bound, or nothing testable). A sign
table reproduces when every compared cell agrees, does not when a cell contradicts the
paper outright (our test finds a difference the paper did not, the opposite one, or shows
the two levels equivalent where the paper marks a difference), and is inconclusive when
every disagreeing cell is one our replications cannot decide. A Table 1 split is read by
its pattern of significant gains, as paper_tables.compare_table1 judges each architecture.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from harness.analysis import render
from harness.analysis.claims import INCONCLUSIVE, largest_verdict
from harness.analysis.grouping import UNTESTABLE
from harness.analysis.paper_tables import AGREES, CONTRADICTS, UNDECIDED_GAIN

REPRODUCES, DOES_NOT, UNDECIDED = "reproduces", "does not reproduce", "inconclusive"
# a published pattern held against replications on another data set than the paper's
# (Table 1's CIFAR-10 gains on MNIST): not a reproduction, and counted apart from them
CARRIES, NOT_CARRIED, UNDECIDED_ELSEWHERE = "carries over", "does not carry over", "undecided"
COLUMNS = ["claim", "published", "replicated", "verdict", "evidence"]
# when each kind of row reproduces, for the sentence above the table (``rule`` of a row)
CLAIM_RULE = "a claim when the 95% interval of every cell it speaks of lies in the published range"
SIGN_RULE = "a sign table when every cell agrees"
TABLE1_RULE = "Table 1 when every architecture's significance at the best λ agrees"


def _interval(value, lo, hi) -> str:
    return f"{render.num(value, 3)} [{render.num(lo, 3)}, {render.num(hi, 3)}]"


def _spread(cells: pd.DataFrame, column: str) -> str:
    """One cell: 'mean [lo, hi]'; several: the range of the means and of the intervals."""
    values = cells[column].to_numpy(dtype=float)
    lo, hi = cells["ci_lo"].to_numpy(dtype=float), cells["ci_hi"].to_numpy(dtype=float)
    if len(cells) == 1:
        return f"{column} " + _interval(values[0], lo[0], hi[0])
    finite = np.isfinite(values)
    if not finite.any():
        return f"no {column} in {len(cells)} cells"
    return (f"{column} {render.num(np.nanmin(values), 3)} to {render.num(np.nanmax(values), 3)} over "
            f"{len(cells)} cells (intervals {render.num(np.nanmin(lo), 3)} to {render.num(np.nanmax(hi), 3)})")


def _published(claim: dict) -> str:
    """The published range: '8 to 10', '> 40', 'largest ratio 3.5 to 4.5'."""
    if "largest" in claim:
        return f"largest ratio {render.num(claim['largest'][0], 3)} to {render.num(claim['largest'][1], 3)}"
    low, high = claim.get("low"), claim.get("high")
    if low is not None and high is not None:
        return f"{render.num(low, 3)} to {render.num(high, 3)}"
    return f"> {render.num(low, 3)}" if low is not None else (f"< {render.num(high, 3)}" if high is not None else "")


def claim_row(claim: dict, cells: pd.DataFrame, evidence: str) -> dict:
    """The verdict row of one claim (paper.CLAIMS) from its ``claims.claim_cells`` table;
    ``evidence`` is a Markdown link to the section that holds the cells."""
    row = dict(kind=0, rule=CLAIM_RULE, claim=claim["text"], published=_published(claim), evidence=evidence)
    if not len(cells):
        return dict(row, replicated="no replications", verdict=f"{UNDECIDED}: no cells to test")
    column = "ratio" if "ratio" in cells.columns else "mean"
    if "largest" in claim:
        if not np.isfinite(cells["ratio"].astype(float)).any():
            return dict(row, replicated="no base replications", verdict=f"{UNDECIDED}: not testable")
        top, word = largest_verdict(claim, cells)
        word = {"holds": REPRODUCES, "no": DOES_NOT}.get(word, UNDECIDED)
        return dict(row, replicated="largest ratio " + _interval(top["ratio"], top["ci_lo"], top["ci_hi"]),
                    verdict=f"{word}: largest ratio {render.num(float(top['ratio']), 3)}")
    tested = cells[cells["verdict"] != UNTESTABLE]
    held = int((tested["verdict"] == "holds").sum())
    failed = int((tested["verdict"] == "no").sum())
    unsure = int((tested["verdict"] == INCONCLUSIVE).sum())
    if len(tested) and held == len(tested):
        word = REPRODUCES
    elif failed:
        word = DOES_NOT
    else:
        word = UNDECIDED
    detail = f"holds in {held} of {len(tested)} cells"
    if unsure:
        detail += f", {unsure} inconclusive"
    if len(tested) < len(cells):
        detail += f", {len(cells) - len(tested)} untestable"
    return dict(row, replicated=_spread(cells, column), verdict=f"{word}: {detail}")


def sign_table_row(title: str, where: str, ours: pd.DataFrame, theirs: pd.DataFrame,
                   verdicts: pd.DataFrame, evidence: str) -> dict:
    """The verdict row of one published sign table (paper.SIGN_TABLES) against ours.

    ``ours`` and ``theirs`` are sign matrices ("+", "-", "", "?"), ``verdicts`` the matrix
    of our per-pair verdicts (significance.verdict: differs / equivalent / inconclusive),
    all labelled by level."""
    common = [level for level in ours.index if level in theirs.index]
    agree = compared = contradict = 0
    for r in common:
        for c in common:
            if r == c or ours.loc[r, c] == UNTESTABLE:
                continue
            compared += 1
            a, b = ours.loc[r, c], theirs.loc[r, c]
            agree += a == b
            contradict += a != b and (a in ("+", "-") or verdicts.loc[r, c] == "equivalent")
    pairs = [verdicts.loc[r, c] for i, r in enumerate(common) for c in common[i + 1:]]
    counts = {v: pairs.count(v) for v in ("differs", "equivalent", "inconclusive")}
    others = len(pairs) - sum(counts.values())  # pairs a level of fewer than 2 replications leaves untested
    if compared and agree == compared:
        word = REPRODUCES
    elif contradict:
        word = DOES_NOT
    else:
        word = UNDECIDED
    return dict(kind=1, rule=SIGN_RULE, claim=f"{title} sign table" + (f" ({where})" if where else ""),
                published=f"{sum(theirs.loc[r, c] in ('+', '-') for r in common for c in common)} of "
                          f"{len(common) * (len(common) - 1)} cells marked + or -",
                replicated=f"{agree} of {compared} cells agree; of its {len(pairs)} pairs, {counts['differs']} "
                           f"differ, {counts['equivalent']} equivalent, {counts['inconclusive']} inconclusive"
                           + (f", {others} untestable" if others else ""),
                verdict=word, evidence=evidence)


def tally(rows: list[dict]) -> str:
    """The sentence above the verdict table: the rows counted by verdict, those held against
    another data set's results apart, and the rules of the kinds of rows present."""
    words = [row["verdict"].split(":")[0] for row in rows]
    own = [w for w in words if w in (REPRODUCES, DOES_NOT, UNDECIDED)]
    plural = {REPRODUCES: "reproduce", DOES_NOT: "do not reproduce"}
    text = (f"Of {len(own)} published {'claim or table' if len(own) == 1 else 'claims and tables'} compared: "
            + ", ".join(f"{own.count(w)} {w if own.count(w) == 1 else plural.get(w, w)}"
                        for w in (REPRODUCES, DOES_NOT, UNDECIDED)) + "." if own else "")
    elsewhere = [w for w in words if w not in own]
    if elsewhere:
        text += (f" {len(elsewhere)} {'more ' if own else ''}held against results on another data set than ours, as whether they "
                 "carry over, not as a reproduction: " + ", ".join(
                     f"{elsewhere.count(w)} {w}" for w in dict.fromkeys(elsewhere)) + ".")
    rules = [rule for rule in (CLAIM_RULE, SIGN_RULE, TABLE1_RULE) if any(row.get("rule") == rule for row in rows)]
    if rules:
        text += " What reproduces means: " + "; ".join(rules) + "."
    return text.strip() + " The rest of the report is the evidence."


def verdict_table(rows: list[dict]) -> pd.DataFrame:
    """The verdict rows as the report's first table: the claims first, then the sign tables,
    each in the order the report's sections give them."""
    ordered = sorted(rows, key=lambda row: row.get("kind", 0))
    return pd.DataFrame(ordered, columns=COLUMNS)


def table1_row(title: str, where: str, compared: pd.DataFrame, *, alpha: float = 0.05,
               correction: str = "holm", evidence: str = "", elsewhere: str | None = None,
               either_way: bool = False) -> dict:
    """The verdict row of one published Table 1 split, on the pattern of significant
    validation gains at the best λ, from paper_tables.compare_table1 (which judges each
    architecture): reproduces when every architecture both ran and could test agrees, does
    not when one contradicts the paper, inconclusive otherwise; the untestable ones (fewer
    than 2 replications a side) are named, not counted. ``elsewhere``: our data set, where
    the published pattern is another's (the verdict then says whether it carries over to
    ours: CARRIES / NOT_CARRIED / UNDECIDED_ELSEWHERE). A loss at the best λ (the paper's
    one-tailed tests read it as no gain) is counted in the replicated column; ``either_way``:
    the paper states no difference either way (compare_table1 judged a loss a contradiction)."""
    gain = compared["gain"] if len(compared) else pd.Series(dtype=object)
    ran = compared[gain.isin([AGREES, CONTRADICTS, UNDECIDED_GAIN])] if len(compared) else compared
    n, agree = len(ran), int((gain == AGREES).sum())
    contradict, undecided = int((gain == CONTRADICTS).sum()), int((gain == UNDECIDED_GAIN).sum())
    untestable = int((gain == UNTESTABLE).sum())  # run, but with fewer than 2 replications a side
    word = REPRODUCES if n and agree == n else DOES_NOT if contradict else UNDECIDED
    if elsewhere:
        word = {REPRODUCES: f"{CARRIES} to {elsewhere}", DOES_NOT: f"{NOT_CARRIED} to {elsewhere}",
                UNDECIDED: f"{UNDECIDED_ELSEWHERE} on {elsewhere}"}[word]

    def significant(frame, column):
        return int((frame[column].astype(float) < alpha).sum()) if len(frame) else 0

    replicated = (f"validation gain significant in {significant(ran, 'p_val_ours')} of {n} architectures raw, "
                  f"{significant(ran, 'p_val_adj_ours')} of {n} {correction}-corrected for the pick of λ; "
                  f"training gain {significant(ran, 'p_train_ours')} raw, "
                  f"{significant(ran, 'p_train_adj_ours')} corrected")
    losses = significant(ran, "p_val_loss_ours") if "p_val_loss_ours" in ran else 0
    replicated += (f"; validation accuracy significantly lower than the base even at the best λ in {losses} "
                   f"of {n}" if losses else "")
    published = compared["p_val_paper"].map(lambda p: p is not None and p < alpha) if len(compared) else []
    detail = (f"{agree} of {n} architectures agree" + (f", {contradict} contradict" if contradict else "")
              + (f", {undecided} undecided" if undecided else "")
              + (f", {untestable} more untestable" if untestable else ""))
    nothing = "no architecture testable" if untestable else "no architecture run"
    why = f"{nothing} ({untestable} run with fewer than 2 replications a side)" if untestable else nothing
    stated = not len(compared) or compared["d_val_paper"].isna().all()  # a sentence of the paper, no table
    asked = "differ significantly from the base" if either_way else "gain significantly"
    return dict(kind=1, rule=TABLE1_RULE, claim=f"{title} ({where}): which architectures {asked}",
                published=(f"no significant {'difference either way' if either_way else 'gain'} (stated in "
                           "the text, no numbers)" if stated else
                           f"validation gain significant in {int(published[ran.index].sum()) if n else 0} of {n} "
                           f"(all rows: {int(sum(published))} of {len(compared)})"),
                replicated=replicated if n else nothing,
                verdict=f"{word}: {detail if n else why}",
                evidence=evidence)
