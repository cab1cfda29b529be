"""harness analyze end to end on a small fixed database built here through the Store:
golden report tables, byte-identical reruns, visible missing data, one-line errors."""

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harness.analysis.report import AnalysisError, analyze
from harness.analysis.spec import (CIPlot, Claims, CurvePlot, ProfilePlot, ProtocolEffect, SignificanceTable,
                                   SummaryTable, Table1, spec_to_dict)
from harness.store import Store

GOLDEN = Path(__file__).parent / "golden" / "analysis"
LAMS = [0.0, 1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0]
VERSIONS = {"harness": "0.1.0", "torch": "2.x", "git_commit": "abc1234"}


def _result(study, rid, status, config, metrics, profiles=()):
    return {"id": rid, "study": study, "status": status,
            "error": None if status == "done" else f"{status}: loss became nan",
            "config": config, "metrics": metrics if status == "done" else {},
            "history": [{"epoch": 1, "train_loss": 1.0, "val_loss": 1.0}],
            "profiles": list(profiles), "device": "cpu", "host": "test",
            "started_at": "2026-11-21T10:00:00", "finished_at": "2026-11-21T10:00:01",
            "wall_s": 1.0, "versions": VERSIONS,
            "machine": {"cpu": "Test CPU", "cpus": 2, "memory_gib": 24.0, "gpus": [], "os": "Linux"}}


def ae_study(store):
    """E1-like: 7 λ x latent {20, 80} x 3 seeds; λ=10 at latent 80 has 1 done of 3."""
    analyses = [SignificanceTable("val_mse", at={"latent": 80}, published="fig3b"),
                SignificanceTable("stop_epoch", published="fig4b", correction="bonferroni"),
                CIPlot("val_mse"), ProtocolEffect("val_mse", "train.monitor"),
                SignificanceTable("val_acc"), CIPlot("val_mse", at={"arch_typo": "32"}), Claims("e1")]
    store.record_study_dict({
        "name": "ae", "description": "Golden E1-like study.",
        "settings": {"dataset": "mnist", "model": "dense_ae", "entropy.eps": 1e-4, "train.patience": 7},
        "grid": {"latent": [20, 80], "lam": LAMS, "train.monitor": ["task", "total"], "seed": [0, 1, 2]},
        "analyses": [spec_to_dict(a) for a in analyses], "source": "study = ..."})
    for k, lam in enumerate(LAMS):
        for latent in (20, 80):
            for monitor in ("task", "total"):
                for seed in range(3):
                    status = "done"
                    if lam == 10.0 and latent == 80 and monitor == "task" and seed:
                        status = "failed" if seed == 1 else "diverged"
                    wiggle = ((seed * 7 + k + latent) % 5) - 2
                    config = {"dataset": "mnist", "model": "dense_ae", "lam": lam, "latent": latent,
                              "seed": seed, "arch": "", "placement": "first",
                              "train.monitor": monitor, "entropy.eps": 1e-4}
                    metrics = {"val_mse": (0.003 + 0.0004 * k if k < 3 else 0.010) + 0.0001 * wiggle
                               + 0.0002 * (monitor == "total"),
                               "stop_epoch": float((40 - 6 * k if k < 3 else 9) + wiggle),
                               "grad_ratio": 0.05 * k + 0.001 * seed, "logdet_mean": -300.0 + 10 * k,
                               "hit_max_epochs": float(k == 0 and seed == 0), "val_acc": float("nan")}
                    rid = f"ae{k}{latent}{monitor}{seed}"
                    store.record(_result("ae", rid, status, config, metrics))


def cnn_study(store):
    """E3-like: arch {32, 32-32} x placement {first, all} x λ {0, 1e-3, 1} x 3 seeds."""
    analyses = [Table1(), ProfilePlot(at={"placement": "first"}, split_by="lam"),
                SummaryTable(("stop_epoch", "wall_s", "val_acc"), at={"arch": "32", "placement": "first"},
                             published="table3")]
    store.record_study_dict({
        "name": "cnn", "settings": {"dataset": "cifar10", "model": "cnn"},
        "grid": {"arch": [[32], [32, 32]], "placement": ["first", "all"], "lam": [0.0, 1e-3, 1.0],
                 "seed": [0, 1, 2]},
        "analyses": [spec_to_dict(a) for a in analyses], "source": ""})
    for arch in ([32], [32, 32]):
        for placement in ("first", "all"):
            for k, lam in enumerate((0.0, 1e-3, 1.0)):
                for seed in range(3):
                    gain = 0.006 * (k == 1) * (placement == "first")
                    config = {"dataset": "cifar10", "model": "cnn", "lam": lam, "latent": 0,
                              "arch": arch, "placement": placement, "seed": seed}
                    metrics = {"train_acc": 0.74 + 0.01 * len(arch) + 0.002 * ((seed + k) % 3),
                               "val_acc": 0.64 + gain + 0.001 * ((seed * 2 + k) % 3),
                               "stop_epoch": 10.0 + k + seed, "log_c11_mean": -1.0 - k}
                    profiles = [{"stage": stage, "layer": layer, "name": f"conv{layer}", "kind": "conv",
                                 "filter": f, "value": -(layer + 0.5 * f) * (2.0 if stage == "final" else 1.0)}
                                for stage in ("init", "final") for layer in range(1, len(arch) + 1)
                                for f in range(3)]
                    rid = f"cnn{len(arch)}{placement}{k}{seed}"
                    store.record(_result("cnn", rid, "done", config, metrics, profiles))


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    s = Store(f"sqlite:///{tmp_path_factory.mktemp('db')}/harness.db")
    ae_study(s)
    cnn_study(s)
    s.record_study_dict({"name": "empty", "settings": {}, "grid": {}, "analyses": [], "source": ""})
    return s


@pytest.fixture(scope="module")
def reports(store, tmp_path_factory):
    out = tmp_path_factory.mktemp("results")
    return out, analyze(store, ["ae", "cnn"], out)


def _strip_stamp(text: str) -> str:
    return "\n".join(l for l in text.splitlines()
                     if not l.startswith(("_Generated ", '<p class="stamp">Generated ')))


def _golden_files(out: Path):
    return sorted(p.relative_to(out) for p in out.rglob("*") if p.suffix in (".csv", ".md"))


def test_writes_report_tables_and_figures(reports):
    out, paths = reports
    assert all(p.exists() for p in paths)
    for study in ("ae", "cnn"):
        assert (out / study / "report.md") in paths
        assert (out / study / "report.html") in paths
        names = {p.name for p in paths if p.parent.name == study}
        for p in names:
            if p.endswith(".csv") and p != "provenance.csv":  # provenance.csv: data a sentence links to
                assert p[:-4] + ".tex" in names  # every table as CSV and LaTeX
            if p.endswith(".png"):
                assert p[:-4] + ".pdf" in names  # every figure also as a vector PDF
    assert (out / "ae" / "ci_val_mse_by_latent_lam_train.monitor-task.png") in paths
    assert any(p.name.startswith("profile_") and p.suffix == ".png" for p in paths)


@pytest.mark.parametrize("name", [str(p) for p in sorted(
    p.relative_to(GOLDEN) for p in GOLDEN.rglob("*") if p.is_file())] if GOLDEN.exists() else [])
def test_golden_report_tables(reports, name):
    out, _ = reports
    new, old = out / name, GOLDEN / name
    regen = f"if the change is intended, delete {old} and rerun the tests to regenerate it"
    assert new.exists(), f"{name} is no longer written; {regen}"
    if name.endswith(".csv"):
        a, b = pd.read_csv(new, keep_default_na=False), pd.read_csv(old, keep_default_na=False)
        assert list(a.columns) == list(b.columns), f"{name}: columns changed; {regen}"
        for col in a.columns:  # cell by cell, numbers to a relative 1e-6
            x, y = pd.to_numeric(a[col], errors="coerce"), pd.to_numeric(b[col], errors="coerce")
            if x.notna().any() or y.notna().any():
                pd.testing.assert_series_equal(x, y, rtol=1e-6, obj=f"{name}[{col}] ({regen})")
            else:
                assert list(a[col]) == list(b[col]), f"{name}[{col}] differs; {regen}"
    else:
        assert _strip_stamp(new.read_text()) == _strip_stamp(old.read_text()), f"{name} differs; {regen}"


def test_golden_files_exist_for_every_report_table(reports):
    """Writes any missing golden file (delete one to regenerate it) and fails so it is reviewed."""
    out, _ = reports
    missing = [p for p in _golden_files(out) if not (GOLDEN / p).exists()]
    for p in missing:
        (GOLDEN / p).parent.mkdir(parents=True, exist_ok=True)
        (GOLDEN / p).write_text((out / p).read_text())
    assert not missing, f"wrote {len(missing)} missing golden file(s) under {GOLDEN}; review and commit them"


def test_reruns_are_byte_identical(store, reports, tmp_path):
    out, paths = reports
    again = analyze(store, ["ae", "cnn"], tmp_path)
    assert [p.relative_to(tmp_path) for p in again] == [p.relative_to(out) for p in paths]
    for p in paths:
        q = tmp_path / p.relative_to(out)
        if p.name in ("report.md", "report.html"):
            assert _strip_stamp(p.read_text()) == _strip_stamp(q.read_text())
        else:
            assert p.read_bytes() == q.read_bytes(), p.name


def test_missing_data_is_visible(reports):
    out, _ = reports
    report = (out / "ae" / "report.md").read_text()
    assert "84 replications recorded: 82 done, 1 diverged, 1 failed" in report
    assert "**1 grid cell(s) have fewer than 2 done replications**" in report
    assert "| 10 | 80 | task | 1 | 1 | 1 | 3 | 0 | fewer than 2 done |" in report
    signs = pd.read_csv(out / "ae" / "sig_val_mse_by_lam_latent-80_train.monitor-task_signs.csv",
                        index_col=0, keep_default_na=False)
    assert (signs.loc[10.0].drop("10") == "?").all()
    assert "untestable (fewer than 2 replications)" in report
    assert "cells agree uncorrected" in report


def test_inapplicable_analyses_are_skipped_visibly(reports):
    report = (reports[0] / "ae" / "report.md").read_text()
    assert "**Skipped:** metric 'val_acc' has no values in the done replications." in report
    assert "**Skipped:** no column 'arch_typo' in the study's results." in report
    assert "**4 of 82 done replications stopped at train.max_epochs**" in report


def test_report_states_published_agreement_and_options(reports):
    out, _ = reports
    report = (out / "ae" / "report.md").read_text()
    assert "## Published vs replicated" in report
    assert "Fig. 3b: MNIST validation MSE, latent 80" in report
    assert "Student two-sided t-tests, α = 0.01" in report and "bonferroni" in report
    assert "| entropy.eps | 1 | 0.0001 |" in report
    cnn = (out / "cnn" / "report.md").read_text()
    assert re.search(r"\| Table 1: CIFAR-10 CNNs.* \(placement = first\): which architectures gain significantly \|"
                     r".*\| (reproduces|does not reproduce|inconclusive): \d of \d architectures agree", cnn)
    assert "## Entropy diagnostics per λ" in cnn


def _tiny_store(path, analyses=()):
    s = Store(f"sqlite:///{path}/tiny.db")
    s.record_study_dict({"name": "tiny", "settings": {}, "grid": {"lam": [0.0, 1.0], "seed": [0, 1]},
                         "analyses": [spec_to_dict(a) for a in analyses], "source": ""})
    s.record_study_dict({"name": "empty", "settings": {}, "grid": {}, "analyses": [], "source": ""})
    for k, lam in enumerate((0.0, 1.0)):
        for seed in range(2):
            s.record(_result("tiny", f"t{k}{seed}", "done", {"lam": lam, "seed": seed},
                             {"val_mse": 0.01 + 0.01 * k + 0.001 * seed}))
    return s


def test_all_studies_by_default_skips_empty_ones(tmp_path):
    paths = analyze(_tiny_store(tmp_path), None, tmp_path / "out")
    assert {p.parent.name for p in paths} == {"tiny"}
    report = (tmp_path / "out" / "tiny" / "report.md").read_text()
    assert "The study declares no analyses" in report
    assert "## Entropy diagnostics" not in report  # no diagnostics recorded: no section


def test_errors_are_one_line(store, tmp_path):
    with pytest.raises(AnalysisError, match="nothing recorded"):
        analyze(store, ["empty"], tmp_path)
    with pytest.raises(AnalysisError, match="unknown study 'cnnn'; did you mean 'cnn'"):
        analyze(store, ["cnnn"], tmp_path)
    with pytest.raises(AnalysisError, match="no studies"):
        analyze(Store(f"sqlite:///{tmp_path}/none.db"), None, tmp_path)
    assert not any(tmp_path.rglob("report.md"))


def test_study_object_round_trip(tmp_path):
    """Analyses declared on a Study survive the store and drive the report."""
    from harness.study import Study

    s = Store(f"sqlite:///{tmp_path}/q.db")
    study = Study("q", settings={"dataset": "digits", "model": "dense_ae"},
                  grid={"lam": [0.0, 1e-3], "seed": [0, 1]},
                  analyses=[SignificanceTable("val_mse", alpha=0.05)])
    s.record_study(study)
    for k, lam in enumerate((0.0, 1e-3)):
        for seed in range(2):
            s.record(_result("q", f"q{k}{seed}", "done", {"lam": lam, "seed": seed},
                             {"val_mse": 0.01 + 0.001 * k + 0.004 * seed}))
    paths = analyze(s, ["q"], tmp_path / "out")
    text = (tmp_path / "out" / "q" / "report.md").read_text()
    assert "## Validation MSE across λ1\n" in text
    # one pair, not significant: its detectable difference is one number, not a range
    assert re.search(r"For the blank pair, a true difference of [\d.e+-]+ \(val_mse units\) would have been found "
                     r"with power 0.8; the largest observed \|difference\| is 0.001\.", text)
    assert any(p.name == "sig_val_mse_by_lam_signs.csv" for p in paths)


def test_table1_with_a_single_placement_is_still_compared(tmp_path):
    """study_report works on plain data too; a split with one value is not a slice."""
    from harness.analysis.report import study_report
    from test_analysis_tables import cnn_frame

    frame = cnn_frame().assign(placement="first", study="c")
    definition = {"name": "c", "grid": {"arch": [[32], [32, 32]], "lam": [0.0, 1e-3, 1.0]},
                  "analyses": [spec_to_dict(Table1())]}
    study_report(definition, frame, None, tmp_path)
    report = (tmp_path / "report.md").read_text()
    assert re.search(r"\*\*Against Table 1: CIFAR-10 CNNs[^*]*\*\* Published \(CIFAR-10\): validation gain "
                     r"significant in 2 of 2", report)
    assert "§5.3" not in report  # the study's data set is not known to differ from Table 1's
    # on MNIST: judged against what the paper says of MNIST; CIFAR-10's pattern counted apart
    study_report(definition, frame.assign(dataset="mnist"), None, tmp_path / "mnist")
    rows = pd.read_csv(tmp_path / "mnist" / "verdict.csv")
    assert rows["claim"].str.startswith("§5.3: the same CNNs on MNIST").tolist() == [True, False]
    assert rows["verdict"][1].split(":")[0] in ("carries over to MNIST", "does not carry over to MNIST",
                                               "undecided on MNIST")
    assert "Of 1 published claim or table compared" in (tmp_path / "mnist" / "report.md").read_text()


def test_each_table1_slice_is_its_own_named_verdict_row(tmp_path):
    """Defect: a study varying another factor gave one Table 1 verdict row per slice, each
    claiming "placement = first" alone: rows that could differ, with nothing to tell them apart."""
    from harness.analysis.report import study_report
    from test_analysis_tables import cnn_frame

    frame = pd.concat([cnn_frame().assign(**{"data.augment": a, "id": lambda d, a=a: d["id"] + a})
                       for a in ("none", "flip")], ignore_index=True).assign(placement="first", study="c")
    definition = {"name": "c", "grid": {"arch": [[32], [32, 32]], "lam": [0.0, 1e-3, 1.0], "data.augment": ["none", "flip"]},
                  "analyses": [spec_to_dict(Table1())]}
    study_report(definition, frame, None, tmp_path)
    claims = list(pd.read_csv(tmp_path / "verdict.csv")["claim"])
    table1 = [c for c in claims if c.startswith("Table 1")]
    assert len(table1) == 2 and len(set(table1)) == 2
    assert all("placement = first, data.augment" in c for c in table1)


def test_settings_left_varying_by_overrides_split_the_tables(tmp_path):
    from harness.analysis.report import study_report
    from test_analysis_tables import ae_frame

    frame = ae_frame().assign(**{"train.monitor": lambda d: ["task", "total"] * (len(d) // 2)})
    definition = {"name": "o", "settings": {"train.monitor": "total"},
                  "grid": {"lam": LAMS, "latent": [20, 80], "seed": [0, 1, 2, 3]},
                  "analyses": [spec_to_dict(SignificanceTable("val_mse", at={"latent": 80}))]}
    study_report(definition, frame, None, tmp_path)
    report = (tmp_path / "report.md").read_text()
    assert "**Note:** train.monitor vary among the recorded replications" in report
    assert "### Validation MSE across λ1 at latent 80, stopping monitor task" in report


def test_a_grid_still_being_run_reports_what_is_there(tmp_path):
    """Mid-run (one λ recorded so far) a sign table says there is nothing to compare yet,
    instead of failing."""
    store = Store(f"sqlite:///{tmp_path}/h.db")
    store.record_study_dict({"name": "partial", "settings": {}, "grid": {"lam": LAMS, "seed": [0, 1]},
                             "analyses": [spec_to_dict(SignificanceTable("val_mse"))], "source": ""})
    for seed in range(2):
        config = {"dataset": "mnist", "model": "dense_ae", "lam": 0.0, "latent": 80, "seed": seed}
        store.record(_result("partial", f"p{seed}", "done", config, {"val_mse": 0.003 + 0.001 * seed}))
    analyze(store, ["partial"], tmp_path / "out")
    report = (tmp_path / "out" / "partial" / "report.md").read_text()
    assert "Only lam = 0 has replications at all replications: nothing to compare yet." in report
    assert "Skipped" not in report and "| 0 | 2 | 0.0035 |" in report


def test_training_curves_average_the_replications_still_training(tmp_path):
    """CurvePlot through the store: per λ and epoch, n of the done replications that
    trained that epoch and their mean with a t-interval (computed here with scipy); a
    failed replication's epochs are left out; the line ends where fewer than half train."""
    import numpy as np
    from scipy import stats as st

    from harness.analysis import plots, summaries

    store = Store(f"sqlite:///{tmp_path}/h.db")
    store.record_study_dict({
        "name": "curves", "settings": {}, "grid": {"lam": [0.0, 1.0], "seed": [0, 1, 2, 3]},
        "analyses": [spec_to_dict(CurvePlot("val_loss")), spec_to_dict(CurvePlot("val_acc"))], "source": ""})
    stops = {0: 3, 1: 4, 2: 6, 3: 5}

    def loss(k, seed, epoch):
        return 1 / epoch + 0.01 * seed + 0.1 * k

    for k, lam in enumerate((0.0, 1.0)):
        for seed, stop in stops.items():
            status = "failed" if seed == 3 else "done"
            result = _result("curves", f"c{k}{seed}", status, {"lam": lam, "seed": seed},
                             {"stop_epoch": float(stop)})
            result["history"] = [{"epoch": e, "train_loss": 0.0, "val_loss": loss(k, seed, e), "val_acc": None}
                                 for e in range(1, stop + 1)]
            store.record(result)
    analyze(store, ["curves"], tmp_path / "out")
    out = tmp_path / "out" / "curves"
    assert (out / "curve_val_loss_by_lam.png").is_file() and not (out / "curve_val_loss_by_lam.tex").exists()
    curves = pd.read_csv(out / "curve_val_loss_by_lam.csv")
    assert curves.groupby("lam")["epoch"].max().tolist() == [6, 6]  # seed 3 (failed, 5 epochs) left out
    assert (curves["of"] == 3).all()
    for k in (0, 1):
        for epoch in range(1, 7):
            row = curves[(curves["lam"] == float(k)) & (curves["epoch"] == epoch)].iloc[0]
            values = np.array([loss(k, seed, epoch) for seed in (0, 1, 2) if stops[seed] >= epoch])
            assert row["n"] == len(values) and row["mean"] == pytest.approx(values.mean(), rel=1e-6)
            if len(values) > 1:
                lo, hi = st.t.interval(0.95, len(values) - 1, loc=values.mean(), scale=st.sem(values))
                assert (row["lo"], row["hi"]) == (pytest.approx(lo, rel=1e-6), pytest.approx(hi, rel=1e-6))
            else:
                assert np.isnan(row["lo"]) and np.isnan(row["hi"])
    report = (out / "report.md").read_text()
    assert "![Validation loss per epoch" in report and "Skipped:** no per-epoch 'val_acc' recorded" in report

    ax = plots.curve_plot(summaries.curve_table(store.frame("curves"), store.history("curves"), "val_loss", "lam"), "lam")
    assert [list(line.get_xdata()) for line in ax.lines] == [[1, 2, 3, 4]] * 2  # n >= 1.5 of 3 train


def test_the_equivalence_margin_is_a_setting_of_the_table(tmp_path):
    """Two levels 0.5% apart with a 1% spread: not shown different, and shown equivalent
    within the default ±5%; within a declared ±1%, ten seeds cannot tell."""
    from harness.analysis.report import study_report

    noise = np.random.default_rng(0).normal(0, 0.01, (2, 10))
    rows = [dict(id=f"{lam}-{s}", study="e", status="done", lam=lam, seed=s,
                 y=(1.0 if lam == 0 else 1.005) + noise[k, s]) for k, lam in enumerate((0.0, 1.0)) for s in range(10)]
    frame = pd.DataFrame(rows)

    def verdicts(**kw) -> str:
        out = tmp_path / str(kw)
        definition = {"name": "e", "grid": {"lam": [0.0, 1.0], "seed": list(range(10))},
                      "analyses": [spec_to_dict(SignificanceTable("y", **kw))]}
        study_report(definition, frame, None, out)
        return pd.read_csv(out / "sig_y_by_lam_paired.csv")["verdict"].item()

    assert verdicts() == "equivalent"
    assert verdicts(equivalence=0.01) == "inconclusive"
    with pytest.raises(ValueError, match="equivalence"):
        SignificanceTable("y", equivalence=5)


def test_placement_is_compared_only_where_both_placements_ran(tmp_path):
    """On a one-block CNN "all" is "first" and is not trained: its slice says so instead of
    an empty table; the two-block one is compared seed by seed."""
    from harness.analysis.report import study_report
    from harness.analysis.spec import ProtocolEffect
    from test_analysis_tables import cnn_frame

    frame = cnn_frame().assign(study="c", model="cnn", placement="first")
    two_block = frame[frame["arch"] == "32-32"].assign(placement="all", id=lambda d: d["id"] + "a")
    # at λ2 = 0 the placements are one training; above, all layers lose a little, seed by seed
    two_block["val_acc"] -= np.where(two_block["lam"] > 0, 0.002 + 0.001 * (two_block["seed"] % 2), 0.0)
    frame = pd.concat([frame, two_block], ignore_index=True)
    definition = {"name": "c", "grid": {"arch": [[32], [32, 32]], "placement": ["first", "all"], "lam": [0.0, 1e-3, 1.0]},
                  "analyses": [spec_to_dict(ProtocolEffect(metric="val_acc", protocol="placement", alpha=0.05))]}
    study_report(definition, frame, None, tmp_path)
    report = (tmp_path / "report.md").read_text()
    assert "- At architecture 32: only placement first recorded, nothing to compare." in report
    assert "At λ2 = 0 every placement is one training" in report
    effect = pd.read_csv(tmp_path / "protocol_placement_val_acc_arch-32-32.csv")
    assert list(effect["lam"]) == [0.001, 1.0] and (effect["a"] == "first").all() and (effect["diff"] > 0).all()
    paired = pd.read_csv(tmp_path / "protocol_placement_val_acc_arch-32-32_paired.csv")
    assert list(paired["lam"]) == [0.001, 1.0] and (paired["mean_diff"] > 0).all()
    assert "### Effect of the placement on validation accuracy at architecture 32-32" in report
    assert "## Does the placement change validation accuracy?" in report
    assert not (tmp_path / "protocol_placement_val_acc_arch-32.csv").exists()
