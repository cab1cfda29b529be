"""harness.analysis.protocol: one row per protocol arm, its agreement with a published
sign table, the claims' verdicts, and the sentence that names the arm (if any) under
which the published pattern appears, and whether the term's gradient can explain it."""

import numpy as np
import pandas as pd

from harness.analysis import grouping, paper, protocol, significance
from harness.analysis.spec import SignificanceTable

LAMS = paper.SIGN_TABLES["fig4b"]["levels"]
FIG4B = SignificanceTable("stop_epoch", at={"latent": 180}, published="fig4b")


def arms_frame(seeds=10):
    """Arm 'float64/task': no λ effect, a real gradient. Arm 'float32/total_float32': the
    constant float32 total stops every guided run at patience + 1 = 8, with no gradient."""
    rng = np.random.default_rng(1)
    rows = []
    for precision, monitor in (("float64", "task"), ("float32", "total_float32")):
        for lam in LAMS:
            for seed in range(seeds):
                guided = precision == "float32" and lam > 0
                rows.append({"id": f"{precision}{lam}{seed}", "status": "done", "latent": 180, "lam": lam, "seed": seed,
                             "entropy.precision": precision, "train.monitor": monitor,
                             "stop_epoch": 8.0 if guided else float(80 + rng.integers(-20, 20)),
                             "val_mse": 0.001, "grad_ratio": 0.0 if precision == "float32" else (1e-3 if lam else 0.0),
                             "term_led": np.nan if precision == "float32" else 0.5,
                             "logdet_mean": -38.0 + rng.normal() + (20 * (lam > 0) if precision == "float64" else 0)})
    return pd.DataFrame(rows)


def test_protocol_arms_one_row_per_arm_with_its_agreement_and_gradient():
    frame = arms_frame()
    factors = ["lam", "entropy.precision", "train.monitor"]
    arms = protocol.protocol_arms(frame, [FIG4B], paper.CLAIMS["e1"], factors).set_index("entropy.precision")
    assert list(arms.index) == ["float32", "float64"] and set(arms["n"]) == {70}
    # float32: λ = 0 stops later than every λ > 0 (a "+" row and "-" column), the rest blank
    ours = significance.sign_matrix(significance.pairwise(grouping.groups(frame[frame["entropy.precision"] == "float32"],
                                                              "stop_epoch", "lam")))
    _, counts = significance.compare_signs(ours, significance.published_signs("fig4b"))
    assert arms.loc["float32", "Fig. 4b"] == f"{counts['agree']} of {counts['compared']}"
    assert arms.loc["float32", "claim 2"] == "holds in 6 of 6 cells"  # stopping epoch 8-10 at λ ≥ 1e-4
    assert arms.loc["float64", "claim 2"] == "holds in 0 of 6 cells"
    assert arms.loc["float32", "term has a gradient"] == "no" and arms.loc["float64", "term has a gradient"] == "yes"
    assert arms.loc["float64", "target moved"] == "6 of 6" and arms.loc["float32", "target moved"] == "0 of 6"


def test_protocol_sentence_names_the_arm_and_says_the_stopping_rule_did_it():
    frame = arms_frame()
    arms = protocol.protocol_arms(frame, [FIG4B], paper.CLAIMS["e1"], ["lam", "entropy.precision", "train.monitor"])
    agree = arms.set_index("entropy.precision").loc["float32", "Fig. 4b"]
    assert agree == "24 of 42"  # every λ = 0 cell and the blank high-λ cells; the ordered low-λ cells differ
    sentence = protocol.protocol_sentence(arms, [FIG4B])
    assert sentence.startswith("The published pattern appears under entropy.precision=float32, train.monitor=total_float32")
    assert "had no gradient" in sentence and "not from the term's gradient" in sentence and "float64" not in sentence
    one_arm = frame[frame["entropy.precision"] == "float64"]
    assert protocol.protocol_arms(one_arm, [FIG4B], None, ["lam"]).empty
    flat = frame.assign(stop_epoch=80.0)
    arms = protocol.protocol_arms(flat, [FIG4B], None, ["lam", "entropy.precision", "train.monitor"])
    assert protocol.protocol_sentence(arms, [FIG4B]).startswith("No protocol arm reproduces the published pattern")


def test_total_float32_recorded_before_the_keras_monitor_is_named_apart():
    """Two total_float32 replications: one recorded with what its rule saw each epoch, one
    from before the Keras-style monitor (no monitored value): only the second is relabelled,
    and one without history changes nothing."""
    frame = pd.DataFrame({"id": ["a", "b", "c"], "status": "done", "train.monitor": ["total_float32", "total_float32", "task"]})
    history = pd.DataFrame({"id": ["a", "a", "b", "b", "c"], "epoch": [1, 2, 1, 2, 1],
                            "monitored": [0.5, 0.4, np.nan, np.nan, np.nan]})
    labelled, n = protocol.label_legacy_monitor(frame, history)
    assert n == 1 and labelled["train.monitor"].tolist() == ["total_float32", protocol.LEGACY_MONITOR, "task"]
    assert protocol.label_legacy_monitor(frame, None) == (frame, 0)
