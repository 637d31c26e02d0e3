"""``decide`` rules: a rule must be one boolean expression, it sees only the columns of the rows (no files, no
network), and a rule that cannot run is named by its key (``drop_if[1]``) and text, before and during a run."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from curator.errors import RecipeError
from curator.stage import StageContext, build_params
from filters.decide import DecideParams, DecideStage

ROWS = pa.table({
    "sample_id": ["a", "b", "c", "d"],
    "prompt": ["plain question", "one; two", "Write a LIST", "short"],
    "char_len": pa.array([100, 800, 1200, 5], pa.int64()),
    "is_duplicate": [False, False, True, False],
    "label": ["x", "y", "12", "x"],
    "_input_idx": pa.array([0, 0, 0, 0], pa.int64()),
})


def _stage(**params) -> DecideStage:
    where = Path(".")
    return DecideStage(build_params(DecideParams, params, "stages[2].with"), StageContext(where, where))


def _verdicts(**params) -> dict[str, str]:
    out = _stage(**params).process_batch(ROWS)
    return dict(zip(out.column("sample_id").to_pylist(), out.column("status").to_pylist()))


def _untyped(*names: str) -> pa.Schema:
    """What the engine and ``validate`` pass ``check_inputs``: column names, types not known yet."""
    return pa.schema([(n, pa.null()) for n in names])


@pytest.mark.parametrize(("rule", "kind"), [("'yes'", "VARCHAR"), ("prompt", "VARCHAR"),
                                            ("quantile(char_len, 0.5)", "DOUBLE"), ("length(prompt)", "BIGINT")])
def test_a_rule_that_is_not_a_boolean_is_refused_before_the_run(rule, kind):
    with pytest.raises(RecipeError) as err:
        _stage(flag_if=["char_len > 1"], drop_if=[rule]).check_inputs(_untyped("sample_id", "prompt", "char_len"))
    assert f"decide rule {rule!r} (drop_if[0])" in str(err.value)
    assert f"type {kind}, not BOOLEAN" in str(err.value) and "write a comparison such as `char_len > 700`" in str(err.value)


def test_a_bare_column_that_is_not_a_boolean_is_refused_on_the_data_and_drops_nothing():
    """Before the run its type may not be known (a model stage's score); on the data it is, before any verdict."""
    stage = _stage(flag_if=["is_duplicate", "char_len"])
    stage.check_inputs(_untyped("sample_id", "char_len", "is_duplicate"))  # types not known yet: not refused
    with pytest.raises(RecipeError, match=r"decide rule 'char_len' \(flag_if\[1\]\): its value has type BIGINT"):
        stage.process_batch(ROWS)


def test_an_empty_rule_and_a_second_statement_are_recipe_errors_naming_the_key():
    with pytest.raises(RecipeError, match=r"stages\[2\]\.with: drop_if\[1\] '  ': the rule is empty"):
        _stage(drop_if=["char_len > 1", "  "])
    with pytest.raises(RecipeError, match=r"flag_if\[0\] '1; DROP TABLE x': one statement per rule, without ';'"):
        _stage(flag_if=["1; DROP TABLE x"])


def test_a_semicolon_inside_a_string_literal_is_part_of_the_rule():
    assert _verdicts(flag_if=["prompt LIKE '%;%'"]) == {"b": "flagged"}
    assert _verdicts(flag_if=["\"prompt\" = 'one; two'"]) == {"b": "flagged"}


@pytest.mark.parametrize("rule", ["(SELECT count(*) FROM read_text('/etc/passwd')) > 0",
                                  "char_len > (SELECT count(*) FROM read_csv('/etc/passwd'))",
                                  "(SELECT count(*) FROM 'https://example.com/rows.csv') > 0"])
def test_a_rule_cannot_read_files_or_reach_the_network(rule):
    for check in (lambda s: s.check_inputs(_untyped("sample_id", "char_len")), lambda s: s.process_batch(ROWS)):
        with pytest.raises(RecipeError) as err:
            check(_stage(drop_if=[rule]))
        assert f"decide rule {rule!r} (drop_if[0])" in str(err.value)
        assert "they cannot read files or reach the network" in str(err.value)


def test_rules_over_the_rows_still_work_in_the_sandbox():
    assert _verdicts(drop_if=["char_len > quantile(char_len, 0.5)"]) == {"b": "dropped", "c": "dropped"}
    assert _verdicts(flag_if=["regexp_matches(lower(prompt), 'list')"]) == {"c": "flagged"}
    assert _verdicts(flag_if=["CASE WHEN label = 'x' THEN char_len < 50 ELSE false END"]) == {"d": "flagged"}
    assert _verdicts(drop_if=["is_duplicate"], flag_if=["upper(label) = 'Y'"]) == {"c": "dropped", "b": "flagged"}
    assert _verdicts(drop_if=["char_len > (SELECT avg(char_len) FROM samples)"]) == {"b": "dropped", "c": "dropped"}


def test_a_rule_that_fails_on_the_data_is_named():
    with pytest.raises(RecipeError, match=r"decide rule 'CAST\(label AS INTEGER\) > 3' \(flag_if\[0\]\): failed on "
                                          r"the data: Conversion Error"):
        _stage(drop_if=["char_len > 5000"], flag_if=["CAST(label AS INTEGER) > 3"]).process_batch(ROWS)


def test_columns_available_leave_out_internal_columns():
    with pytest.raises(RecipeError, match="did you mean char_len") as err:
        _stage(drop_if=["char_lenn > 5"]).check_inputs(_untyped("sample_id", "char_len", "_input_idx", "_input_row"))
    assert "columns available: ['sample_id', 'char_len']" in str(err.value)


def test_a_rule_that_fails_on_the_data_in_a_run_names_its_recipe_key(tmp_path):
    """Binding cannot see it (the cast of a text column binds); the rows can: the error names the rule in full."""
    from curator.pipeline import run
    from tests.support import write_jsonl, write_recipe

    write_jsonl(tmp_path / "d.jsonl", [{"prompt": "p", "response": "r", "label": "x"}])
    rules = {"drop_if": ["char_len > 100000"], "flag_if": ["CAST(label AS INTEGER) > 5"]}
    stages = [{"use": "quality"}, {"use": "decide", "with": rules}]
    with pytest.raises(RecipeError, match=r"decide rule 'CAST\(label AS INTEGER\) > 5' \(stages\[1\]\.with\.flag_if"
                                          r"\[0\]\): failed on the data: .*Conversion"):
        run(write_recipe(tmp_path, ["d.jsonl"], stages, shards=1), tmp_path / "run", quiet=True)
