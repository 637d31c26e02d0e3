"""``curator report``: sections (its own and those stages declare), numbers from the manifest, embedded PNGs,
escaping, no external URLs."""

from __future__ import annotations

import base64
import io
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pytest
from click.testing import CliRunner

from curator.cli.gate import report
from curator.cli.main import main
from curator.gate import evaluate
from curator.manifest import read_manifest
from curator.pipeline import run
from curator.query import connect
from curator.recipe import GateRule
from curator.registry import register
from curator.report import build_report, thresholds, write_report
from curator.report_html import esc
from curator.run_warnings import constant_columns
from curator.stage import Stage
from curator.status import run_status
from filters.hardness.stage import HardnessStage
from filters.risk.sqsd import SQSDStage
from tests.support import (
    ENGINE_STAGES,
    TOY_STAGES,
    ToyRiskStage,
    make_toy_run,
    synthetic_rows,
    write_jsonl,
    write_recipe,
)

XSS = "<script>alert('x')</script>"


@dataclass(frozen=True)
class SelectiveParams:
    sources: tuple[str, ...] = ()
SECTIONS = ["warnings", "manifest", "counts", "rules", "distributions", "risk-length", "hardness", "top-risk", "hardest", "mix", "gate"]


class ToyReportingStage(ToyRiskStage):
    """The toy scores (``risk_sqsd``, ``hardness``) with the sections risk.sqsd and hardness declare for them."""

    name = "test.toy_risk_reporting"

    def report_sections(self):
        return SQSDStage.report_sections(self) + HardnessStage.report_sections(self)


def toy_run_with_sections(base, extra_rows):
    """``make_toy_run`` with ``ToyReportingStage`` in place of ``ToyRiskStage``."""
    register(ToyReportingStage)
    write_jsonl(base / "web.jsonl", synthetic_rows(120, seed=1) + extra_rows)
    write_jsonl(base / "forum.jsonl", synthetic_rows(60, seed=7))
    stages = [{"use": ToyReportingStage.name} if s["use"] == ToyRiskStage.name else s for s in TOY_STAGES]
    return run(write_recipe(base, ["web.jsonl", "forum.jsonl"], stages, shards=3, name="toy"), base / "toy",
               quiet=True, workers=1)


@pytest.fixture(scope="module")
def toy_report(tmp_path_factory):
    base = tmp_path_factory.mktemp("report")
    res = toy_run_with_sections(base, extra_rows=[{"prompt": "tell me", "response": f"{XSS} and more"}])
    evaluate(res.run_dir, [GateRule("few_dups", "frac(is_duplicate) < 0.5"), GateRule("none", "n_rows() < 0")])
    path = write_report(res.run_dir)
    return res.run_dir, path.read_text(encoding="utf-8")


def _text(html: str) -> str:
    return re.sub(r"<[^>]+>", " ", html)


def test_sections_and_manifest_numbers(toy_report):
    run_dir, html = toy_report
    m = read_manifest(run_dir)
    for anchor in SECTIONS:
        assert f"id='{anchor}'" in html
    assert m["recipe"]["sha256"] in html and m["dataset"]["digest"] in html
    assert m["inputs"][0]["uri"] in html and m["environment"]["packages"]["duckdb"] in html
    totals = re.search(r"id='counts'.*?<table>(.*?)</table>", html, re.S).group(1)
    cells = re.findall(r"<t[hd][^>]*>([^<]*)</t[hd]>", totals)
    keys, values = cells[:len(cells) // 2], cells[len(cells) // 2:]
    assert dict(zip(keys, map(int, values))) == m["totals"]
    decide = re.search(r"<tr><td>decide</td><td>decide</td><td>decide</td>(.*?)</tr>", html).group(1)
    dropped_by_decide = sum(s["dropped"] for s in m["shards"]) - _ingest_drops(run_dir)
    assert re.findall(r">(\d+)<", decide)[1] == str(dropped_by_decide)


def _ingest_drops(run_dir: Path) -> int:
    import pyarrow.parquet as pq

    return sum(pq.read_table(p).to_pydict()["status"].count("dropped")
               for p in (run_dir / "cache" / "ingest-ledger").glob("*.parquet"))


def _images(html: str) -> list[bytes]:
    return [base64.b64decode(i) for i in re.findall(r'src="data:image/png;base64,([^"]+)"', html)]


def test_figures_decode_and_nothing_external(toy_report):
    run_dir, html = toy_report
    from PIL import Image

    for data in _images(html):
        with Image.open(io.BytesIO(data)) as img:
            img.verify()
    # one figure per numeric score column that varies, plus the declared histograms (risk vs length, hardness)
    con = connect(run_dir)
    varying = [c for c in _numeric(con) if c not in constant_columns(con)]
    assert len(_images(html)) == len(varying) + 2
    assert not re.search(r"(src|href)=[\"'](?!data:)", html)
    assert "http://" not in html and "https://" not in html.replace("https://example", "")
    assert "<script" not in html and "<link" not in html


def _numeric(con) -> list[str]:
    return [c for c, t, *_ in con.execute("DESCRIBE scores").fetchall() if t in ("BIGINT", "DOUBLE", "INTEGER")]


def test_text_is_escaped_and_top_tables_are_ordered(toy_report):
    _, html = toy_report
    assert XSS not in html and html.count("&lt;script&gt;") >= 1
    top = re.search(r"id='top-risk'.*?<table>(.*?)</table>", html, re.S).group(1)
    risks = [float(v) for v in re.findall(r'<tr><td class="n">([^<]+)</td>', top)]
    assert len(risks) == 10 and risks == sorted(risks, reverse=True) and risks[0] > 10  # the '<' row is riskiest
    hardest = re.search(r"id='hardest'.*?<table>(.*?)</table>", html, re.S).group(1)
    hard = [float(v) for v in re.findall(r'<tr><td class="n">([^<]+)</td>', hardest)]
    assert hard == sorted(hard, reverse=True) and hard[0] <= 1.0


def test_gate_section_shows_recorded_verdict(toy_report):
    _, html = toy_report
    gate = _text(html.split("id='gate'")[1])
    assert "FAILED" in gate and "few_dups" in gate and "FAIL" in gate and "n_rows() &lt; 0" in html


def test_report_is_a_todo_list(tmp_path):
    """Warnings (rows without responses, a constant score, a failed gate), each rule's rows with their text,
    thresholds on the histograms, per-stage times, no plot of a constant column."""
    rows = synthetic_rows(60) + [{"prompt": f"just a question {i}?"} for i in range(3)]
    write_jsonl(tmp_path / "d.jsonl", rows)
    stages = [{"use": "normalize", "with": {"require_response": False}}, *ENGINE_STAGES[1:]]
    res = run(write_recipe(tmp_path, ["d.jsonl"], stages, shards=2), tmp_path / "run", quiet=True)
    evaluate(res.run_dir, [GateRule("tiny", "n_rows() < 5")])
    html = build_report(res.run_dir)
    text = _text(html)
    box = _text(html.split("id='warnings'")[1].split("</div>")[0])
    assert "3 samples have no response" in box and "gate rule tiny failed" in box
    # pat_* counts are 0 everywhere: listed, not plotted
    assert "not plotted, constant across the run: pat_email = 0" in text
    con = connect(res.run_dir)
    assert len(_images(html)) == len([c for c in _numeric(con) if c not in constant_columns(con)])
    # the dropped rows of each rule, with their text
    rules = html.split("id='rules'")[1].split("id='distributions'")[0]
    long_row = con.execute("SELECT s.response FROM ledger l JOIN samples s USING (sample_id) "
                           "WHERE l.rule = 'char_len > 900' ORDER BY l.sample_id LIMIT 1").fetchone()[0]
    assert "char_len &gt; 900" in rules and esc(long_row, 300) in rules
    # the flag rule's quantile threshold, as decide saw it, drawn on response_chars
    q = con.execute("SELECT quantile_cont(response_chars, 0.8) FROM scores").fetchone()[0]
    lines = thresholds(con, read_manifest(res.run_dir))
    assert lines["response_chars"] == [(pytest.approx(q), "flagged: response_chars > quantile(response_chars, 0.8)")]
    assert "char_len" in lines and lines["char_len"][0][0] == 900
    counts = html.split("id='counts'")[1].split("id='rules'")[0]
    assert "compute seconds" in counts and "phase seconds" in counts


def test_stage_that_matched_no_rows_warns_in_report_status_and_run(tmp_path):
    register(SelectiveStage)
    write_jsonl(tmp_path / "d.jsonl", synthetic_rows(20))
    stages = [{"use": "normalize"}, {"use": SelectiveStage.name, "with": {"sources": ["advbench"]}}]
    recipe = write_recipe(tmp_path, ["d.jsonl"], stages, shards=2)
    res = run(recipe, tmp_path / "run", quiet=True)
    n = connect(res.run_dir).execute("SELECT count(*) FROM samples").fetchone()[0]
    want = f"stage test.selective scored none of the {n} rows it saw: its sources: [\"advbench\"] matches no row"
    assert want in _text(build_report(res.run_dir)).replace("&quot;", '"')
    assert any(w.startswith(want) for w in run_status(res.run_dir)["warnings"])
    cli = CliRunner().invoke(main, ["run", str(recipe), "-o", str(tmp_path / "run"), "-q"])
    assert cli.exit_code == 0 and want in cli.stderr


class SelectiveStage(Stage):
    """Scores only rows whose source is listed (like hardness' ``sources:``)."""

    name = "test.selective"
    kind = "score"
    Params = SelectiveParams
    provides = ("selected_score",)

    def process_batch(self, batch):
        hit = [s in self.params.sources for s in batch.column("source").to_pylist()]
        return pa.table({"sample_id": batch.column("sample_id"),
                         "selected_score": pa.array([1.0 if h else None for h in hit], pa.float64())})


def test_cli_report_out(tmp_path):
    res = make_toy_run(tmp_path, n=30)
    out = tmp_path / "elsewhere" / "r.html"
    cli = CliRunner().invoke(report, [str(res.run_dir), "--out", str(out)])
    assert cli.exit_code == 0, cli.output
    assert out.read_text().startswith("<!DOCTYPE html>") and not (res.run_dir / "report.html").exists()
    bad = CliRunner().invoke(report, [str(tmp_path)])
    assert bad.exit_code == 2 and "the run has not finished" in bad.stderr


def _browser():
    """Headless Debian chromium through selenium and Debian's chromedriver (``.ci/install`` installs them)."""
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install selenium)")
    driver_path = shutil.which("chromedriver")
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if not (driver_path and browser):
        pytest.skip("chromium and chromedriver are not installed (apt-get install chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1100,900"):
        options.add_argument(arg)
    return webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=driver_path))


def test_report_in_a_real_browser(toy_report):
    """Chromium opens the report offline: every figure decodes, the warnings box and rule tables are shown."""
    run_dir, html = toy_report
    driver = _browser()
    try:
        driver.get((run_dir / "report.html").as_uri())
        images = driver.execute_script(
            "return Array.from(document.images).map(i => [i.complete, i.naturalWidth, i.naturalHeight])")
        assert len(images) == len(_images(html)) > 5
        assert all(done and w > 100 and h > 50 for done, w, h in images)
        box = driver.find_element("css selector", ".warnings")
        assert box.is_displayed() and "Warnings" in box.text
        assert driver.find_element("id", "rules").is_displayed()
        assert driver.execute_script("return document.title") == "curator report: toy"
        assert driver.get_screenshot_as_png()[:8] == b"\x89PNG\r\n\x1a\n"
    finally:
        driver.quit()


def test_an_input_mostly_quarantined_warns_with_its_most_frequent_reason(tmp_path):
    (tmp_path / "d.jsonl").write_text('{"prompt": "a", "response": "b"}\nnot json\nnot json either\n')
    (tmp_path / "ok.jsonl").write_text('{"prompt": "c", "response": "d"}\nnot json\n{"prompt": "e", "response": "f"}\n')
    res = run(write_recipe(tmp_path, ["d.jsonl", "ok.jsonl"], [{"use": "normalize"}], shards=2), tmp_path / "run",
              quiet=True)
    warnings = [w for w in run_status(res.run_dir)["warnings"] if "quarantined" in w]
    assert warnings == [f"{tmp_path / 'd.jsonl'}: 2 of its 3 rows were quarantined (most often: invalid JSON: "
                        "Expecting value (column 1)); see them with: SELECT input_row, reason FROM quarantine"]
