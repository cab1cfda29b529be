"""harness.analysis.spec: JSON round trip, validation, and staying light to import."""

import json
import subprocess
import sys

import pytest

from harness.analysis.spec import (AnalysisError, CIPlot, CurvePlot, ProfilePlot, ProtocolEffect,
                                   SignificanceTable, SummaryTable, Table1, describe,
                                   spec_from_dict, spec_to_dict)
from harness.errors import UserError

SPECS = [
    SignificanceTable("val_mse", at={"latent": 80}, published="fig3b"),
    SignificanceTable("stop_epoch", test="welch", correction="bonferroni", alpha=0.05),
    CIPlot("val_mse", logx=True),
    CurvePlot("val_loss", at={"train.monitor": "task"}, logy=True),
    Table1(),
    Table1(split_by=None, published=None, at={"train.monitor": "task"}),
    ProfilePlot(at={"lam": 0.0}, split_by="arch", kind="conv"),
    SummaryTable(("stop_epoch", "wall_s", "val_acc", "val_iou"), published="table3"),
    ProtocolEffect("val_mse", "train.monitor", at={"latent": 80}),
]


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: type(s).__name__)
def test_round_trip_through_json(spec):
    d = json.loads(json.dumps(spec_to_dict(spec)))
    assert d["type"] == type(spec).__name__
    back = spec_from_dict(d)
    assert back == spec and hash(back) == hash(spec)


def test_at_is_a_mapping_in_json_and_hashable_in_python():
    spec = SignificanceTable("val_mse", at={"latent": 80, "arch": "32"})
    assert spec.at == (("arch", "32"), ("latent", 80))
    assert spec_to_dict(spec)["at"] == {"arch": "32", "latent": 80}
    assert "at=arch=32, latent=80" in describe(spec)


@pytest.mark.parametrize("make,message", [
    (lambda: SignificanceTable("val_mse", test="welsh"), "did you mean 'welch'"),
    (lambda: SignificanceTable("val_mse", correction="hlm"), "did you mean 'holm'"),
    (lambda: SignificanceTable("val_mse", alpha=1.5), "alpha"),
    (lambda: CIPlot("val_mse", confidence=95), "confidence"),
    (lambda: CurvePlot(min_share=0), "min_share"),
    (lambda: SignificanceTable("val_mse", at={"latent": [80]}), "at['latent']"),
])
def test_bad_values_fail_at_once(make, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        make()


def test_from_dict_errors_are_one_line_user_errors():
    with pytest.raises(AnalysisError, match="did you mean 'SignificanceTable'"):
        spec_from_dict({"type": "SignificanceTabel", "metric": "x"})
    with pytest.raises(AnalysisError, match="did you mean 'metric'"):
        spec_from_dict({"type": "CIPlot", "metrc": "x"})
    with pytest.raises(AnalysisError, match="bad SignificanceTable"):
        spec_from_dict({"type": "SignificanceTable", "metric": "x", "alpha": 2})
    assert issubclass(AnalysisError, UserError)


def test_import_stays_light():
    code = ("import sys, harness.analysis.spec; "
            "print(sorted(m for m in ('pandas', 'numpy', 'scipy', 'matplotlib') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_every_analysis_type_has_its_report_section():
    """spec.SPECS is the one list of analysis types; each section registers itself for its
    type (sections.base.renders), so a new type without a section fails here."""
    from harness.analysis.sections import RENDERERS
    from harness.analysis.spec import SPECS

    assert set(RENDERERS) == set(SPECS.values())
