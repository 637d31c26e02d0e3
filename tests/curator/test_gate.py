"""Gates: helper expansion, rule semantics and values, the verdict in the manifest, the CLI exit codes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import jsonschema
import pyarrow.parquet as pq
import pytest
import yaml
from click.testing import CliRunner

from curator.cli.gate import gate
from curator.database import cursor
from curator.errors import RecipeError, RunError
from curator.gate import GateRuleError, evaluate, expand, load_rules, value_expr
from curator.manifest import read_manifest, validate_manifest, verify
from curator.pipeline import run
from curator.query import connect
from curator.recipe import GateRule
from tests.support import ENGINE_STAGES, synthetic_rows, write_jsonl, write_recipe

RECIPES = Path(__file__).resolve().parents[2] / "recipes"


@pytest.fixture(scope="module")
def engine_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("gate")
    write_jsonl(base / "data.jsonl", synthetic_rows(150) + [{"prompt": "empty", "response": ""}])
    recipe = write_recipe(base, ["data.jsonl"], ENGINE_STAGES, shards=3,
                          gate=[{"name": "few_dups", "sql": "frac(is_duplicate) < 0.5"},
                                {"name": "no_quarantine", "sql": "n_quarantined() = 0"}])
    return run(recipe, base / "run", quiet=True)


@pytest.fixture()
def run_copy(engine_run, tmp_path):
    """A private copy of the finished run (gates write into it)."""
    dest = tmp_path / "run"
    shutil.copytree(engine_run.run_dir, dest)
    return dest


def _scores(run_dir: Path) -> list[dict]:
    return pq.read_table(run_dir / "scores" / "quality").to_pylist()


def test_expand_helpers():
    assert expand("frac(a > (1 + 2)) < 0.1") == \
        "(avg(CASE WHEN (a > (1 + 2)) THEN 1.0 WHEN NOT (a > (1 + 2)) THEN 0.0 END)) < 0.1"
    assert expand("quantile(x, 0.9) > 3") == "(quantile_cont(x, 0.9)) > 3"
    assert expand("n_quarantined() = 0") == "((SELECT count(*) FROM ledger WHERE status = 'quarantined')) = 0"
    assert "frac(" in expand("reason = 'frac(x)'")  # string literals are left alone
    assert "quantile_cont(x, 0.5)" in expand("frac(x > quantile(x, 0.5)) < 1")  # nested helpers
    with pytest.raises(RecipeError, match="wrong number of arguments"):
        expand("n_rows(1) > 0")
    with pytest.raises(RecipeError, match="unbalanced"):
        expand("frac(a > 1 < 2")


def test_value_expr_is_the_left_operand():
    assert value_expr("frac(x) < 0.1") == "frac(x)"
    assert value_expr("avg(a) >= 2 AND max(b) < 3") == "avg(a)"
    assert value_expr("f(a < b) = 1") == "f(a < b)"
    assert value_expr("bool_and(x)") == "bool_and(x)"


def test_values_and_verdicts_match_the_data(run_copy):
    rows, m = _scores(run_copy), read_manifest(run_copy)
    dup_frac = sum(r["is_duplicate"] for r in rows) / len(rows)
    p90 = sorted(r["char_len"] for r in rows)
    rules = [GateRule("dups", "frac(is_duplicate) < 0.001"),
             GateRule("quarantine", "n_quarantined() <= 1"),
             GateRule("rows", "n_rows() = n_kept() + n_dropped() + n_flagged() + n_quarantined()"),
             GateRule("dataset", f"n_dataset() = {m['dataset']['rows']}"),
             GateRule("dup_reason", "n_reason('duplicate') >= 1"),
             GateRule("maxlen", f"max(char_len) < {p90[-1]}"),
             GateRule("select", "SELECT count(*) >= 1, count(*) FROM dataset")]
    v = evaluate(run_copy, rules, record=False)
    got = {r["name"]: r for r in v["rules"]}
    assert dup_frac > 0 and got["dups"]["value"] == pytest.approx(dup_frac) and not got["dups"]["passed"]
    assert got["quarantine"]["value"] == m["totals"]["quarantined"] == 1 and got["quarantine"]["passed"]
    assert got["rows"]["value"] == m["totals"]["rows_in"] and got["rows"]["passed"]
    assert got["dataset"]["passed"] and got["dup_reason"]["passed"]
    assert got["maxlen"]["value"] == p90[-1] and not got["maxlen"]["passed"]
    assert got["select"] == {"name": "select", "sql": rules[-1].sql, "value": m["dataset"]["rows"], "passed": True}
    assert v["passed"] is False and v["dataset_digest"] == m["dataset"]["digest"]
    assert "gate" not in json.loads((run_copy / "manifest.json").read_text()) or read_manifest(run_copy)["gate"] is None


def test_per_row_rule_counts_failing_rows(run_copy):
    rows = _scores(run_copy)
    limit = sorted(r["char_len"] for r in rows)[len(rows) // 2]
    v = evaluate(run_copy, [GateRule("short", f"char_len < {limit}"), GateRule("all", "char_len >= 0")],
                 record=False)
    short, everything = v["rules"]
    assert short["value"] == sum(r["char_len"] >= limit for r in rows) and not short["passed"]
    assert everything == {"name": "all", "sql": "char_len >= 0", "value": 0, "passed": True}


def test_null_is_a_failure_with_a_note(run_copy):
    (r,) = evaluate(run_copy, [GateRule("empty", "avg(char_len) FILTER (WHERE false) < 10")], record=False)["rules"]
    assert r["passed"] is False and r["value"] is None and "NULL" in r["note"]


def test_verdict_recorded_in_manifest_and_gate_json(run_copy):
    v = evaluate(run_copy)  # the recipe's own gate: list
    assert [r["name"] for r in v["rules"]] == ["few_dups", "no_quarantine"]
    assert [r["passed"] for r in v["rules"]] == [True, False] and v["passed"] is False
    m = read_manifest(run_copy)
    validate_manifest(m)
    assert m["gate"] == v == json.loads((run_copy / "gate.json").read_text())
    assert verify(run_copy) == []


def test_unknown_column_is_a_usage_error_naming_rule_and_columns(run_copy):
    with pytest.raises(GateRuleError) as err:
        evaluate(run_copy, [GateRule("ok", "n_rows() > 0"), GateRule("typo", "frac(risk_sqsd > 0.5) < 0.1")])
    msg = str(err.value)
    assert "'typo'" in msg and "risk_sqsd" in msg and "char_len" in msg and "is_duplicate" in msg
    assert err.value.exit_code == 2
    assert [r.get("error") is not None for r in err.value.verdict["rules"]] == [False, True]
    assert not (run_copy / "gate.json").exists()


def test_rules_cannot_touch_files_outside_the_run(run_copy, tmp_path):
    secret = tmp_path / "secret.csv"
    secret.write_text("a\n1\n")
    with pytest.raises(GateRuleError, match="disabled by configuration|Permission"):
        evaluate(run_copy, [GateRule("peek", f"SELECT count(*) > 0 FROM read_csv('{secret}')")], record=False)
    inside = run_copy / "ledger" / "shard-00000.parquet"
    v = evaluate(run_copy, [GateRule("own", f"SELECT count(*) > 0 FROM read_parquet('{inside}')")], record=False)
    assert v["passed"] is True


def test_the_gates_sandbox_stays_in_its_own_database(run_copy, tmp_path):
    """The gate locks its database's configuration; queries and decide rules of the same process share another
    database (``curator.database``) and can still read any run."""
    other = tmp_path / "other"
    shutil.copytree(run_copy, other)
    rows = pq.read_table(other / "ledger").num_rows
    evaluate(run_copy, [GateRule("any", "count(*) > 0")], record=False)
    assert connect(other).execute("SELECT count(*) FROM ledger").fetchone()[0] == rows
    scratch = cursor()
    scratch.execute("SET threads = 1")  # the shared database's configuration is not locked
    assert scratch.execute(f"SELECT count(*) FROM read_parquet('{other}/ledger/*.parquet')").fetchone()[0] == rows


def test_rules_file_validation(tmp_path):
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump([{"name": "a", "sql": "n_rows() > 0"}, {"name": "a", "sql": "n_rows() > 1"}]))
    with pytest.raises(RecipeError, match="more than once"):
        load_rules(path)
    path.write_text(yaml.safe_dump([{"name": "a", "sql": "n_rows() > 0; DROP VIEW ledger"}]))
    with pytest.raises(RecipeError, match="without ';'"):
        load_rules(path)
    path.write_text(yaml.safe_dump([{"name": "a", "sqll": "x"}]))
    with pytest.raises(RecipeError, match="sqll"):
        load_rules(path)


def test_cli_exit_codes(run_copy, tmp_path):
    rules = tmp_path / "rules.yaml"
    runner = CliRunner()
    rules.write_text(yaml.safe_dump([{"name": "rows", "sql": "n_rows() > 10"}]))
    res = runner.invoke(gate, [str(run_copy), "--rules", str(rules)])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["rules"][0]["value"] == read_manifest(run_copy)["totals"]["rows_in"]
    rules.write_text(yaml.safe_dump([{"name": "rows", "sql": "n_rows() > 1000000"}]))
    res = runner.invoke(gate, [str(run_copy), "--rules", str(rules), "--quiet"])
    assert res.exit_code == 1 and res.stdout == "" and "FAIL  rows" in res.stderr
    rules.write_text(yaml.safe_dump([{"name": "bad", "sql": "no_such_col > 1"}]))
    res = runner.invoke(gate, [str(run_copy), "--rules", str(rules)])
    assert res.exit_code == 2 and "gate rule 'bad'" in res.stderr and "char_len" in res.stderr
    assert runner.invoke(gate, []).exit_code == 2
    assert runner.invoke(gate, [str(tmp_path / "missing")]).exit_code == 2


def _docs(n: int, dup_every: int = 0) -> list[dict]:
    words = "data river model city music page history science art train web text".split()
    rows = [{"text": " ".join(words[(i * 7 + j) % len(words)] for j in range(60 + i % 50)) + f" doc {i}.",
             "url": f"https://example.org/{i}"} for i in range(n)]
    return rows + ([dict(rows[i]) for i in range(0, n, dup_every)] if dup_every else [])


def test_pretrain_gate_recipe_passes_clean_docs_and_fails_duplicated_ones(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    recipe = str(RECIPES / "pretrain-gate.yaml")
    write_jsonl(tmp_path / "clean.jsonl", _docs(80))
    write_jsonl(tmp_path / "dups.jsonl", _docs(80, dup_every=4))
    runner = CliRunner()
    res = runner.invoke(gate, ["--recipe", recipe, "clean.jsonl", "--run-dir", "clean", "-q"])
    assert res.exit_code == 0, res.output
    done = {p: p.stat().st_mtime_ns for p in (tmp_path / "clean" / "markers").rglob("*.done")}
    res = runner.invoke(gate, ["--recipe", recipe, "clean.jsonl", "--run-dir", "clean"])
    assert res.exit_code == 0 and json.loads(res.stdout)["passed"] is True
    assert {p: p.stat().st_mtime_ns for p in done} == done  # the second call reused finished work
    res = runner.invoke(gate, ["--recipe", recipe, "dups.jsonl"])  # default run dir runs/gate-<name>
    assert res.exit_code == 1, res.output
    verdict = json.loads(res.stdout)
    failed = {r["name"]: r["value"] for r in verdict["rules"] if not r["passed"]}
    assert failed == {"few_exact_duplicates": 20}
    assert read_manifest(tmp_path / "runs" / "gate-pretrain-gate")["gate"] == verdict


def test_the_shipped_manifest_schema_is_a_valid_schema_and_rejects_a_broken_manifest(run_copy):
    """``validate_manifest`` no longer checks the schema on every call: this test does, once."""
    from curator.manifest import _schema

    schema = _schema()
    jsonschema.validators.validator_for(schema).check_schema(schema)
    m = read_manifest(run_copy)
    del m["totals"]
    with pytest.raises(RunError, match="manifest does not match its schema"):
        validate_manifest(m)


def test_rules_skip_the_rows_a_score_does_not_cover_and_fail_when_it_covers_none(tmp_path):
    from tests.support import make_toy_run
    res = make_toy_run(tmp_path / "toy")  # the toy hardness is NULL on about a quarter of the rows
    con = connect(res.run_dir)
    n, scored, high = con.execute("SELECT count(*), count(hardness), count(*) FILTER (WHERE hardness >= 0.5) "
                                  "FROM scores").fetchone()
    assert 0 < scored < n
    verdict = evaluate(res.run_dir, [GateRule("share", "frac(hardness >= 0.5) < 2"),
                                     GateRule("every_row", "hardness < 2"), GateRule("some_rows", "hardness < 0.5"),
                                     GateRule("none_scored", "frac(hardness > 100 OR NULL) < 0.5")], record=False)
    rules = {r["name"]: r for r in verdict["rules"]}
    assert rules["share"]["value"] == pytest.approx(high / scored)  # not high / n: the unscored rows are not "false"
    assert rules["every_row"]["passed"] and rules["every_row"]["value"] == 0
    assert not rules["some_rows"]["passed"] and rules["some_rows"]["value"] == high
    assert not rules["none_scored"]["passed"] and "NULL counts as a failure" in rules["none_scored"]["note"]


def test_verify_refuses_to_gate_a_run_whose_files_changed(run_copy):
    clean = CliRunner().invoke(gate, [str(run_copy), "--verify", "-q"])
    assert clean.exit_code == CliRunner().invoke(gate, [str(run_copy), "-q"]).exit_code == 1  # n_quarantined fails
    data = next((run_copy / "dataset").glob("*.arrow"))
    raw = data.read_bytes()
    data.write_bytes(raw.replace(b"Question", b"Questiom", 1))  # same size, still readable: only a hash tells
    assert CliRunner().invoke(gate, [str(run_copy), "-q"]).exit_code == 1  # gated as if nothing changed
    res = CliRunner().invoke(gate, [str(run_copy), "--verify", "-q"])
    assert res.exit_code == 2 and "not gated: 1 file(s) differ from the manifest" in res.output
    assert "dataset/" in res.output and f"curator verify {run_copy}" in res.output
