"""``curator report``: sections (its own and those stages declare), numbers from the manifest, embedded PNGs,
escaping, no external URLs."""

from __future__ import annotations

import base64
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from curator.cli.gate import report
from curator.gate import evaluate
from curator.manifest import read_manifest
from curator.pipeline import run
from curator.recipe import GateRule
from curator.registry import register
from curator.report import build_report, write_report
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
SECTIONS = ["manifest", "counts", "distributions", "risk-length", "hardness", "top-risk", "hardest", "mix", "gate"]


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


def test_figures_are_embedded_pngs_and_nothing_external(toy_report):
    _, html = toy_report
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', html)
    # numeric columns (5 from quality + risk_sqsd + hardness) + risk vs length + hardness histogram
    assert len(images) == 9
    assert all(base64.b64decode(i)[:8] == b"\x89PNG\r\n\x1a\n" for i in images)
    assert not re.search(r"(src|href)=[\"'](?!data:)", html)
    assert "http://" not in html and "https://" not in html.replace("https://example", "")
    assert "<script" not in html and "<link" not in html


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


def test_engine_only_run_says_what_is_missing(tmp_path):
    write_jsonl(tmp_path / "d.jsonl", synthetic_rows(50))
    res = run(write_recipe(tmp_path, ["d.jsonl"], ENGINE_STAGES, shards=2), tmp_path / "run", quiet=True)
    html = build_report(res.run_dir)
    text = _text(html)
    assert "no risk_* column" in text and "no hardness column" in text
    assert "no added samples" in text and "no gate verdict recorded" in text
    assert html.count("data:image/png;base64,") == 5 + 4  # quality (5) and patterns (4) numeric columns


def test_cli_report_out(tmp_path):
    res = make_toy_run(tmp_path, n=30)
    out = tmp_path / "elsewhere" / "r.html"
    cli = CliRunner().invoke(report, [str(res.run_dir), "--out", str(out)])
    assert cli.exit_code == 0, cli.output
    assert out.read_text().startswith("<!DOCTYPE html>") and not (res.run_dir / "report.html").exists()
    bad = CliRunner().invoke(report, [str(tmp_path)])
    assert bad.exit_code == 2 and "not a curator run directory" in bad.stderr


@pytest.mark.slow
def test_report_renders_in_headless_chromium(toy_report, tmp_path):
    chromium = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
    if not chromium:
        pytest.skip("chromium is not installed")
    run_dir, _ = toy_report
    shot = run_dir / "report.png"
    subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                    f"--screenshot={shot}", "--window-size=1100,3000", (run_dir / "report.html").as_uri()],
                   check=True, capture_output=True, timeout=120)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
