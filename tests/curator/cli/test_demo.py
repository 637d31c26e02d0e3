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


def check_added_rows(rows: list[dict]) -> None:
    """What the demo trains on: harmful rows are complete refusals by both judges, benign rows answers of at
    least 8 words neither judge calls a refusal, strictly alternating."""
    from filters.hardness.judges.factory import make_judge
    from filters.target_checks import is_complete, n_words

    roles = [r["rebalance_role"] for r in rows]
    assert len(rows) >= 16 and roles == ["harmful", "benign"] * (len(rows) // 2)
    pairs = [(r["prompt"], r["response"]) for r in rows]
    verdicts = [make_judge(j).judge(pairs) for j in ("keyword", "classifier")]
    for r, votes in zip(rows, zip(*verdicts)):
        if r["rebalance_role"] == "harmful":
            assert is_complete(r["response"], "length"), r["response"]  # a whole refusal, to its last sentence
            assert all(v.harmful is False and v.refusal is True for v in votes), (r["response"], votes)
        else:
            assert all(v.refusal is False for v in votes) and n_words(r["response"]) >= 8, (r["response"], votes)


@pytest.mark.slow
def test_curator_demo_runs_end_to_end_and_a_rerun_reuses_everything(tmp_path):
    from curator.query import connect

    cmd = [sys.executable, "-m", "curator.cli", "demo", "-o", str(tmp_path / "runs" / "demo"), "-q"]
    first = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=3600)
    assert first.returncode == 0, first.stderr[-2000:]
    out = first.stdout
    assert "curator demo finished" in out and "curator query" in out and "gate passed" in out
    run = tmp_path / "runs" / "demo"
    for rel in ("manifest.json", "report.html", "gate.json", "dataset/state.json"):
        assert (run / rel).exists(), rel
    added = int(re.search(r"(\d+) added by rebalance", out).group(1))
    assert added >= 16 and "Safety mix added by rebalance" in out and out.count("    USER: ") == 3
    con = connect(run)
    rows = con.sql("SELECT prompt, response, rebalance_role FROM added ORDER BY _order").to_arrow_table().to_pylist()
    check_added_rows(rows)
    h = [x for (x,) in con.sql("SELECT hardness FROM scores WHERE hardness IS NOT NULL").fetchall()]
    assert len(h) == 32 and sum(0 < x < 1 for x in h) >= 8
    probes = con.execute("SELECT count(*) FROM ledger WHERE status = 'probe'").fetchone()[0]
    assert probes == 32 and con.execute("SELECT count(*) FROM dataset WHERE rebalance_role IS NULL").fetchone()[0] == \
        con.execute("SELECT count(*) FROM ledger WHERE status IN ('kept', 'flagged') AND reason IS DISTINCT FROM "
                    "'added'").fetchone()[0]
    import datasets

    from tests.curator.test_trl_export import train_two_steps

    train_two_steps(datasets.load_from_disk(str(run / "dataset")), tmp_path / "trl")  # TRL reads the demo's export
    second = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=3600)
    assert second.returncode == 0 and second.stdout.split("run directory")[1] == out.split("run directory")[1]
