"""CLI contracts: exit codes for paths that are not run directories, ``--json`` outputs, ``validate``'s dry run,
``status`` by stage name, ``verify`` naming files, ``stages`` showing help and columns."""

from __future__ import annotations

import json
import shutil

import datasets
import pytest
import yaml
from click.testing import CliRunner

from curator.cli.main import main
from tests.support import ENGINE_STAGES, synthetic_rows, write_jsonl, write_recipe


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    base = tmp_path_factory.mktemp("contracts")
    write_jsonl(base / "d.jsonl", synthetic_rows(40))
    recipe = write_recipe(base, ["d.jsonl"], ENGINE_STAGES, shards=2,
                          gate=[{"name": "few_dups", "sql": "frac(is_duplicate) < 0.5"}])
    res = CliRunner().invoke(main, ["run", str(recipe), "-o", str(base / "run"), "-q"])
    assert res.exit_code == 0, res.output
    return base


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.mark.parametrize("command", [["status"], ["verify"], ["gate"], ["report"], ["query", "{}", "SELECT 1"]])
def test_a_path_that_is_not_a_run_directory_is_exit_2(command, tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    for path in (tmp_path, tmp_path / "missing"):
        res = cli(*[str(path) if c == "{}" else c for c in command], *([] if "{}" in command else [path]))
        assert res.exit_code == 2, (command, res.output)
        assert "not a curator run directory" in res.stderr or "is not a directory" in res.stderr


def test_gate_and_verify_on_an_unfinished_run_are_exit_2(finished, tmp_path):
    shutil.copytree(finished / "run", tmp_path / "run")
    (tmp_path / "run" / "manifest.json").unlink()
    for command in ("gate", "verify", "report"):
        res = cli(command, tmp_path / "run")
        assert res.exit_code == 2 and "the run has not finished" in res.stderr
    status = json.loads(cli("status", tmp_path / "run").stdout)
    assert not status["finished"] and [s["stage"] for s in status["stages"]] == ["normalize", "patterns", "quality",
                                                                               "decide"]


def test_status_is_keyed_by_stage_name(finished):
    status = json.loads(cli("status", finished / "run").stdout)
    assert [s["stage"] for s in status["stages"]] == ["normalize", "patterns", "quality", "decide"]
    assert status["stages"][1]["done"] == 2 and status["stages"][1]["failed"] == []
    assert isinstance(status["warnings"], list) and status["totals"]["rows_in"] == 42


def test_verify_names_changed_and_missing_files_and_only_warns_about_datasets_caches(finished, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(finished / "run", run)
    ds = datasets.load_from_disk(str(run / "dataset"))
    ds.map(lambda r: {"n": len(r["response"])})  # training code writes cache-*.arrow into dataset/
    assert list((run / "dataset").glob("cache-*.arrow"))
    res = cli("verify", run, "--json")
    out = json.loads(res.stdout)
    assert res.exit_code == 0 and out["ok"] and out["problems"] == []
    assert any(w.startswith("dataset/cache-") and "not listed in the manifest" in w for w in out["warnings"])
    (run / "ledger" / "shard-00001.parquet").write_bytes(b"tampered")
    (run / "input" / "shard-00000.parquet").unlink()
    res = cli("verify", run)
    assert res.exit_code == 1
    assert "mismatch: ledger/shard-00001.parquet: sha256 differs from the manifest" in res.stderr
    assert "mismatch: input/shard-00000.parquet: missing" in res.stderr


def _recipe(base, stages, gate):
    path = base / "v.yaml"
    path.write_text(yaml.safe_dump({"curator": 1, "name": "v", "inputs": [{"path": "d.jsonl"}], "stages": stages,
                                    "gate": gate}))
    return path


def test_validate_dry_runs_decide_rules_and_gate_sql(finished):
    good = _recipe(finished, ENGINE_STAGES, [{"name": "g", "sql": "frac(is_duplicate) < 0.5"}])
    res = cli("validate", good, "--json")
    assert res.exit_code == 0 and json.loads(res.stdout)[0]["ok"]
    stages = [*ENGINE_STAGES[:3], {"use": "decide", "with": {"drop_if": ["char_lenn > 900"]}}]
    bad = _recipe(finished, stages, [{"name": "g", "sql": "(n_rows() > 1"}, {"name": "h", "sql": "frac(is_dup) < 1"}])
    res = cli("validate", bad, "--json")
    assert res.exit_code == 2
    errors = json.loads(res.stdout)[0]["errors"]
    assert any("stages[3] (decide)" in e and "char_lenn" in e and "did you mean char_len" in e for e in errors)
    assert any(e.startswith("gate[0] (g): unbalanced parentheses") for e in errors)
    assert any(e.startswith("gate[1] (h):") and "Candidate bindings" in e and "is_duplicate" in e for e in errors)
    text = cli("validate", bad)
    assert text.exit_code == 2 and "did you mean char_len" in text.stderr and "ok:" not in text.stdout


def test_validate_columns_of_unread_inputs_are_a_warning(finished, tmp_path):
    path = tmp_path / "u.yaml"
    stages = [*ENGINE_STAGES[:3], {"use": "decide", "with": {"drop_if": ["category = 'x'"]}}]
    path.write_text(yaml.safe_dump({"curator": 1, "name": "u", "inputs": [{"path": "memory://b/d.jsonl"}],
                                    "stages": stages}))
    out = json.loads(cli("validate", path, "--json").stdout)[0]
    assert out["ok"] and "memory://b/d.jsonl" in out["warnings"][0]


def test_stages_json_shows_parameter_help_and_columns():
    res = cli("stages", "--json")
    assert res.exit_code == 0
    by_name = {s["name"]: s for s in json.loads(res.stdout)}
    quality = by_name["quality"]
    assert "char_len" in quality["columns"] and "is_duplicate" in quality["columns"]
    hardness = {p["name"]: p for p in by_name["hardness"]["params"]}
    assert hardness["where"]["help"].startswith("DuckDB predicate") and hardness["k"]["default"] == "8"
    assert by_name["decide"]["columns"] == ["ledger verdicts: status, reason, rule"]
    text = cli("stages").stdout
    assert "writes: char_len" in text and "where: null | str = None  -- DuckDB predicate" in text.replace("str | null", "null | str")


def test_version_names_the_distribution():
    res = cli("--version")
    assert res.exit_code == 0 and res.stdout.strip() == "curator (safety-curator) 0.1.0"
