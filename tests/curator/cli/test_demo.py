"""The README's demo command, run as written in a clean temporary directory (slow: real model)."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).parents[3] / "README.md"


def test_readme_names_the_demo_and_test_commands():
    text = README.read_text()
    assert "bash .ci/install && .venv/bin/curator demo" in text
    assert "bash .ci/install && .venv/bin/python -m pytest -q" in text


@pytest.mark.slow
def test_curator_demo_runs_end_to_end_and_a_rerun_reuses_everything(tmp_path):
    cmd = [sys.executable, "-m", "curator.cli", "demo", "-o", str(tmp_path / "runs" / "demo"), "-q"]
    first = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=3600)
    assert first.returncode == 0, first.stderr[-2000:]
    out = first.stdout
    assert "curator demo finished" in out and "curator query" in out
    run = tmp_path / "runs" / "demo"
    for rel in ("manifest.json", "report.html", "gate.json", "dataset/state.json"):
        assert (run / rel).exists(), rel
    added = int(re.search(r"(\d+) added by rebalance", out).group(1))
    assert added >= 0
    second = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=3600)
    assert second.returncode == 0 and second.stdout.split("run directory")[1] == out.split("run directory")[1]
