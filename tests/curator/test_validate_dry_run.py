"""``curator validate`` reports, as errors (exit 2) naming the recipe key, the problems ``curator run`` refuses; a
column it cannot find is a warning only when an input whose columns are not read could have it."""

from __future__ import annotations

import json

import pytest
import yaml
from click.testing import CliRunner

from curator.cli.main import main
from curator.gate import parse_rules
from tests.support import synthetic_rows, write_jsonl

QUALITY = [{"use": "normalize"}, {"use": "quality"}]


def _validate(tmp_path, stages, **top) -> dict:
    if not (tmp_path / "d.jsonl").exists():
        write_jsonl(tmp_path / "d.jsonl", synthetic_rows(6))
    recipe = {"curator": 1, "name": "v", "inputs": top.pop("inputs", [{"path": "d.jsonl"}]), "shards": 2,
              "stages": stages, **top}
    path = tmp_path / "v.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    res = CliRunner().invoke(main, ["validate", str(path), "--json"])
    out = json.loads(res.stdout)[0]
    assert res.exit_code == (0 if out["ok"] else 2)
    return out


def _decide(*drop_if: str) -> dict:
    return {"use": "decide", "with": {"drop_if": list(drop_if)}}


@pytest.mark.parametrize(("rule", "kind"), [("char_len", "BIGINT"), ("'yes'", "VARCHAR"), ("prompt", "VARCHAR"),
                                            ("quantile(char_len, 0.5)", "DOUBLE")])
def test_a_decide_rule_that_is_not_a_boolean_is_an_error(tmp_path, rule, kind):
    out = _validate(tmp_path, [*QUALITY, _decide("is_duplicate", rule)])
    assert not out["ok"]
    (error,) = out["errors"]
    assert f"(stages[2].with.drop_if[1]): its value has type {kind}, not BOOLEAN" in error and repr(rule) in error
    assert "write a comparison such as `char_len > 700`" in error


def test_run_refuses_a_non_boolean_rule_instead_of_dropping_every_row(tmp_path):
    write_jsonl(tmp_path / "d.jsonl", synthetic_rows(6))
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump({"curator": 1, "name": "r", "inputs": [{"path": "d.jsonl"}], "shards": 1,
                                    "stages": [*QUALITY, _decide("char_len")]}))
    res = CliRunner().invoke(main, ["run", str(path), "-q", "-o", str(tmp_path / "run")])
    assert res.exit_code == 2 and not (tmp_path / "run" / "manifest.json").exists()
    assert "decide rule 'char_len' (stages[2].with.drop_if[0]): its value has type BIGINT, not BOOLEAN" in res.stderr


def test_a_decide_rule_that_reads_a_file_is_an_error(tmp_path):
    out = _validate(tmp_path, [*QUALITY, _decide("(SELECT count(*) FROM read_text('/etc/passwd')) > 0")])
    assert not out["ok"] and "cannot read files or reach the network" in out["errors"][0]


def test_a_semicolon_inside_quotes_is_valid_and_one_outside_is_not(tmp_path):
    assert _validate(tmp_path, [*QUALITY, _decide("prompt LIKE '%;%'")])["ok"]
    assert parse_rules([{"name": "semi", "sql": "n_reason('a;b') = 0"}], "rules")[0].sql == "n_reason('a;b') = 0"
    out = _validate(tmp_path, [*QUALITY, _decide("char_len > 1; DROP TABLE x")])
    assert "drop_if[0] 'char_len > 1; DROP TABLE x': one statement per rule, without ';'" in out["errors"][0]


def test_what_run_refuses_is_an_error(tmp_path):
    out = _validate(tmp_path, [{"use": "quality"}, {"use": "normalize"}, {"use": "normalize"}],
                    inputs=[{"path": "d.jsonl"}, {"path": "nope.jsonl"}], output={"scores": ["risk_sqsd"]},
                    gate=[{"name": "g", "sql": "n_rows() > 0"}, {"name": "g", "sql": " "}])
    text = "\n".join(out["errors"])
    assert "inputs[1].path: nope.jsonl: input not found" in "\n".join(out["warnings"])
    assert "stages[1].use: `normalize` runs at ingest, so it must be the first stage" in text
    assert "stages[2].use: `normalize`" in text
    assert "output.scores: no score stage of this recipe provides ['risk_sqsd']" in text
    assert "gate[1].name: rule name 'g' is used more than once" in text and "gate[1].sql: the rule is empty" in text
    out = _validate(tmp_path, [*QUALITY, _decide("")])
    assert "stages[2].with: drop_if[0] '': the rule is empty" in out["errors"][0]


def test_a_missing_input_is_a_warning_and_validate_checks_the_file_given_with_input(tmp_path):
    """A shipped recipe names a placeholder file: validate says so, and checks the user's file with ``--input``."""
    write_jsonl(tmp_path / "mine.jsonl", [{"prompt": "p", "response": "r", "lang": "en"}])
    rule = _decide("langg = 'en'")
    out = _validate(tmp_path, [*QUALITY, rule], inputs=[{"path": "placeholder.jsonl", "name": "sft"}])
    assert out["ok"] and "give a file in its place with --input sft=PATH" in out["warnings"][0]
    res = CliRunner().invoke(main, ["validate", str(tmp_path / "v.yaml"), "--json", "--input",
                                    f"sft={tmp_path / 'mine.jsonl'}"])
    checked = json.loads(res.stdout)[0]
    assert res.exit_code == 2 and "langg" in checked["errors"][0] and "lang" in checked["errors"][0]


def test_a_column_a_later_stage_writes_is_an_error_naming_that_stage(tmp_path):
    (tmp_path / "d.jsonl").write_text("not json\n" + json.dumps(synthetic_rows(6)[0]) + "\n")
    out = _validate(tmp_path, [{"use": "normalize"}, _decide("is_duplicate"), {"use": "quality"}])
    assert not out["ok"] and not out["warnings"]
    assert "`is_duplicate` is written by stages[2] (quality), which must come before stages[1]" in out["errors"][0]


def test_a_malformed_line_does_not_hide_the_inputs_columns(tmp_path):
    rows = synthetic_rows(6)
    (tmp_path / "d.jsonl").write_text("{broken\n" + "".join(json.dumps(r) + "\n" for r in rows))
    assert _validate(tmp_path, [*QUALITY, _decide("row_no > 2")])["ok"]
    out = _validate(tmp_path, [*QUALITY, _decide("row_noo > 2")])
    assert not out["ok"] and not out["warnings"] and "did you mean row_no" in out["errors"][0]


def test_unknown_gate_columns_are_errors_even_when_an_input_is_not_read(tmp_path):
    out = _validate(tmp_path, QUALITY, inputs=[{"path": "memory://b/d.jsonl"}],
                    gate=[{"name": "g", "sql": "frac(char_lenn > 5) < 0.1"}, {"name": "h", "sql": "n_rows()"}])
    assert not out["ok"] and not out["warnings"]
    assert out["errors"][0].startswith("gate[0] (g):") and "did you mean char_len" in out["errors"][0]
    assert out["errors"][1].startswith("gate[1] (h): its value has type BIGINT, not BOOLEAN")


def test_an_input_column_named_like_a_stage_output_is_an_error(tmp_path):
    """``curator run`` refuses it before any stage runs (``plan.check_shadowing``): validate says so first."""
    write_jsonl(tmp_path / "d.jsonl", [{"prompt": "p", "response": "r", "is_duplicate": True}])
    out = _validate(tmp_path, [*QUALITY, _decide("is_duplicate")])
    assert not out["ok"]
    assert "input column 'is_duplicate' has the name of a column that stages[1] (quality) writes" in out["errors"][0]


def test_two_stages_writing_the_same_columns_is_one_error(tmp_path):
    out = _validate(tmp_path, [*QUALITY, {"use": "quality", "id": "q2"}])
    assert not out["ok"]
    assert [e for e in out["errors"] if "writes the column" in e] == [
        "stages[2] (q2): it writes the column 'char_len' (and 10 more of its columns), which stage 'quality' writes "
        "too, so rules and the scores view would read only the first; give one of them other column names, or drop "
        "one stage"]


def test_model_directories_a_run_needs_and_that_are_not_here_are_warnings(tmp_path, tiny_model_dir):
    out = _validate(tmp_path, [*QUALITY, {"use": "risk.compliance"}], model="models/missing-lm")
    assert out["ok"], out["errors"]
    assert [w.split(":")[0] for w in out["warnings"] if "not a local Hugging Face model directory" in w] == ["model"]
    judge = {"ensemble": ["keyword", {"llm": {"path": "/models/missing-guard", "format": "wildguard"}}]}
    out = _validate(tmp_path, [*QUALITY, {"use": "hardness", "with": {"judge": judge}}], model=str(tiny_model_dir))
    assert [w.split(":")[0] for w in out["warnings"] if "not a local Hugging Face model directory" in w] == \
        ["stages[2].with.judge"]
    assert not any("model directory" in w for w in _validate(tmp_path, QUALITY, model="models/x")["warnings"])


def test_device_cuda_without_cuda_is_a_recipe_error_before_any_work(tmp_path):
    import torch

    from curator.errors import RecipeError
    from curator.pipeline import run
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    write_jsonl(tmp_path / "d.jsonl", synthetic_rows(8))
    recipe = {"curator": 1, "name": "gpu", "inputs": [{"path": str(tmp_path / "d.jsonl")}], "device": "cuda",
              "stages": [*QUALITY, {"use": "risk.compliance"}]}
    with pytest.raises(RecipeError, match="device: cuda, but torch .* sees no CUDA device"):
        run(recipe, tmp_path / "run", quiet=True)
    assert not (tmp_path / "run" / "input").exists()
