"""The report's first screen and its HTML twin: the verdict table comes first, report.html
is one self-contained page with the same tables and one embedded <img> per figure, and it
renders in a real headless browser where one is installed."""

import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest

from harness.analysis.report import analyze
from harness.store import Store
from test_analysis_report import ae_study, cnn_study


@pytest.fixture(scope="module")
def out(tmp_path_factory):
    root = tmp_path_factory.mktemp("html")
    store = Store(f"sqlite:///{root}/harness.db")
    ae_study(store)
    cnn_study(store)
    analyze(store, ["ae", "cnn"], root / "results")
    return root / "results"


class _Page(HTMLParser):
    """The tables (their header cells), images, ids and links of a page."""

    def __init__(self):
        super().__init__()
        self.tables, self.images, self.ids, self.links = [], [], set(), []
        self._in_th = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if "id" in attrs:
            self.ids.add(attrs["id"])
        if tag == "table":
            self.tables.append([])
        elif tag == "th":
            self._in_th = True
            self.tables[-1].append("")
        elif tag == "img":
            self.images.append(attrs.get("src", ""))
        elif tag == "a" and attrs.get("href"):
            self.links.append(attrs["href"])

    def handle_endtag(self, tag):
        if tag == "th":
            self._in_th = False

    def handle_data(self, data):
        if self._in_th:
            self.tables[-1][-1] += data


def _parse(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text(encoding="utf-8"))
    return page


VERDICT_HEADER = ["claim", "published", "replicated", "verdict", "evidence"]


def test_the_verdict_comes_first(out):
    report = (out / "ae" / "report.md").read_text()
    assert report.index("## Verdict") < report.index("## Which protocol reproduces the paper?")
    assert report.index("## Verdict") == min(report.index(h) for h in ("## Verdict", "## Which", "## Replications"))
    verdict = pd.read_csv(out / "ae" / "verdict.csv", keep_default_na=False)
    assert list(verdict.columns) == VERDICT_HEADER
    assert verdict["verdict"].str.match(r"(reproduces|does not reproduce|inconclusive)\b").all()
    signs = verdict[verdict["claim"].str.contains("sign table")]
    assert len(signs) == 6 and signs["replicated"].str.match(
        r"\d+ of \d+ cells agree; of its 21 pairs, \d+ differ, \d+ equivalent, \d+ inconclusive").all()
    claims = verdict[~verdict["claim"].str.contains("sign table")]
    assert len(claims) == 6
    # every evidence link points at a heading of the report (GitHub's anchors)
    page = _parse(out / "ae" / "report.html")
    for link in verdict["evidence"]:
        assert link.startswith("report.md#")
        anchor = link.split("#")[1]
        assert anchor in page.ids, anchor
        assert f"#{anchor}" in page.links


def test_html_is_self_contained_with_every_table_and_figure(out):
    for study in ("ae", "cnn"):
        md = (out / study / "report.md").read_text()
        page = _parse(out / study / "report.html")
        pngs = [line for line in md.splitlines() if line.startswith("![")]
        assert len(page.images) == len(pngs) >= 1  # one <img> per figure of the report
        assert all(src.startswith("data:image/png;base64,") for src in page.images)  # embedded, no files
        assert len(page.tables) == sum(line.startswith("|---") for line in md.splitlines())
    ae = _parse(out / "ae" / "report.html")
    assert ae.tables[0] == VERDICT_HEADER


def _chromium():
    return next((shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)


@pytest.mark.skipif(_chromium() is None, reason="no chromium on PATH (apt-get install chromium) to render report.html")
def test_html_renders_in_headless_chromium(out, tmp_path):
    path = out / "ae" / "report.html"
    run = subprocess.run([_chromium(), "--headless", "--disable-gpu", "--no-sandbox", f"--user-data-dir={tmp_path}",
                          "--dump-dom", path.as_uri()], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    dom = _Page()
    dom.feed(run.stdout)
    assert dom.tables and dom.tables[0] == VERDICT_HEADER
    assert len(dom.images) == len(_parse(path).images) >= 1
    assert all(src.startswith("data:image/png;base64,") for src in dom.images)
