"""The paper's headline claims, checked cell by cell on their intervals."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from harness.analysis import paper, stats
from harness.analysis.claims import claim_cells, claim_sentence, interval_verdict

LAMS = list(paper.LAMBDAS)
FACTORS = ["latent", "lam"]


def e1_frame(spread: float = 1.0) -> pd.DataFrame:
    """Latent 180 stops fast with the guidance (the paper's pattern), 260 does not; latent
    80 is outside "latent > 100". Three seeds a cell, stopping epochs base - spread, base,
    base + spread."""
    rows = []
    for latent, (base, guided) in {80: (12, 11), 180: (44, 9), 260: (20, 15)}.items():
        for k, lam in enumerate(LAMS):
            for seed in range(3):
                rows.append(dict(id=f"{latent}-{k}-{seed}", status="done", lam=lam, latent=latent, seed=seed,
                                 stop_epoch=float((base if lam == 0 else guided) + spread * (seed - 1)),
                                 val_mse=(0.003 if k < 3 else 0.02) * (1 + 0.01 * (seed - 1))))
    return pd.DataFrame(rows)


def test_a_verdict_reads_the_interval_not_the_point():
    assert interval_verdict(8.2, 9.9, 8.0, 10.0) == "holds"
    assert interval_verdict(6.5, 11.5, 8.0, 10.0) == "inconclusive"  # mean 9 in range, seeds cannot tell
    assert interval_verdict(10.5, 12.0, 8.0, 10.0) == "no"
    assert interval_verdict(41.0, 47.0, 40.0, None) == "holds"
    assert interval_verdict(17.0, 23.0, 40.0, None) == "no"
    assert interval_verdict(np.nan, np.nan, 8.0, 10.0) == "?"


def test_claims_are_checked_cell_by_cell():
    frame = e1_frame()
    over_40, eight_to_ten, ratio, mse_low, mse_high, contrast = paper.CLAIMS["e1"]["claims"]
    cells = claim_cells(frame, over_40, FACTORS)
    # 44 ± t(0.975, 2) · 1 / √3 = [41.5, 46.5]: above 40; 20 ± 2.5: below it
    half = sps.t.ppf(0.975, 2) / np.sqrt(3)
    assert cells[["latent", "mean", "verdict"]].values.tolist() == [[180, 44.0, "holds"], [260, 20.0, "no"]]
    assert cells["ci_lo"].tolist() == pytest.approx([44 - half, 20 - half])
    assert claim_sentence(over_40, cells) == "holds in 1 of 2 cells"
    # 9 ± 2.5 straddles 8-10: the mean is in the range, but three seeds cannot show it
    cells = claim_cells(frame, eight_to_ten, FACTORS)
    assert len(cells) == 12 and claim_sentence(eight_to_ten, cells) == "holds in 0 of 12 cells (6 inconclusive)"
    tight = e1_frame(spread=0.1)
    assert claim_sentence(eight_to_ten, claim_cells(tight, eight_to_ten, FACTORS)) == "holds in 6 of 12 cells"
    assert claim_sentence(mse_low, claim_cells(frame, mse_low, FACTORS)) == "holds in 9 of 9 cells"
    assert claim_sentence(mse_high, claim_cells(frame, mse_high, FACTORS)) == "holds in 0 of 12 cells"


def test_the_ratio_claim_has_a_paired_interval():
    frame = e1_frame()
    ratio = paper.CLAIMS["e1"]["claims"][2]
    cells = claim_cells(frame, ratio, FACTORS)
    assert sorted(set(cells["ratio"].round(6))) == [round(20 / 15, 6), round(44 / 9, 6)]
    top = cells.loc[cells["ratio"].idxmax()]
    expected = stats.ratio_interval([43, 44, 45], [8, 9, 10], paired=True)
    assert (top["ratio"], top["ci_lo"], top["ci_hi"]) == pytest.approx(expected)
    # 4.89 with an interval reaching into 3.5-4.5: three seeds cannot say "not 4×"
    assert claim_sentence(ratio, cells).startswith(
        f"largest ratio 4.89 [{expected[1]:.2f}, {expected[2]:.2f}], smallest 1.33: cannot tell")
    tight = claim_cells(e1_frame(spread=0.1), ratio, FACTORS)
    assert "does not agree with the published value" in claim_sentence(ratio, tight)
    # A run cut short: latent 180's base level has two seeds more, slow ones. The ratio
    # stays over the seeds both levels have (unpaired means would claim 50.4 / 9 = 5.6).
    extra = [dict(id=f"x{seed}", status="done", lam=0.0, latent=180, seed=seed, stop_epoch=60.0, val_mse=0.003)
             for seed in (3, 4)]
    cells = claim_cells(pd.concat([frame, pd.DataFrame(extra)]), ratio, FACTORS)
    at_180 = cells[cells["latent"] == 180]
    assert set(at_180["ratio"].round(6)) == {round(44 / 9, 6)} and set(at_180["n"]) == {3}


def test_the_mse_contrast_is_a_ratio_of_two_groups_with_its_interval():
    """"≈ 0.010 at high λ vs ≈ 0.003 at low λ" as one ratio at latent 80: 0.02 / 0.003 =
    6.7 here, with the unpaired interval of the two pooled groups, outside 2.71-4.2."""
    frame = e1_frame()
    contrast = paper.CLAIMS["e1"]["claims"][5]
    cells = claim_cells(frame, contrast, FACTORS)
    assert cells["latent"].tolist() == [80] and (cells["n"].item(), cells["n_vs"].item()) == (12, 9)
    at = frame[frame["latent"] == 80]
    high, low = at[at["lam"] >= 1e-2]["val_mse"], at[at["lam"] < 1e-2]["val_mse"]
    assert (cells["ratio"].item(), cells["ci_lo"].item(), cells["ci_hi"].item()) == pytest.approx(
        stats.ratio_interval(high, low))
    assert cells["verdict"].item() == "no" and claim_sentence(contrast, cells) == "holds in 0 of 1 cells"
    at = at.assign(val_mse=np.where(at["lam"] >= 1e-2, 0.0099, 0.003) * (1 + 0.01 * (at["seed"] - 1)))
    assert claim_cells(at, contrast, FACTORS)["verdict"].item() == "holds"  # 3.3 [3.2, 3.4]
