"""A user's own stage (``curator.registry.register``) is held to the stage contract: a class the engine could not
run is refused when it is registered; a score stage's output must carry its batch's ``sample_id``s, a text
``flag_reason``, no NaN/infinity and no column it does not declare; no two stages (nor one of curator's own columns) share an output column;
errors name the stage by its index in the list the user wrote; a stage defined in an interactive ``__main__`` runs
in the driver instead of breaking the worker pool."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

import curator
from curator.errors import RecipeError, RunError
from curator.registry import register
from curator.stage import NoParams, Stage

ROWS = pa.table({"prompt": [f"question {i}" for i in range(6)], "response": [f"answer {i}" for i in range(6)]})


def _score_stage(name: str, body, provides: tuple[str, ...] = ("v",)) -> type[Stage]:
    return register(type(name, (Stage,), {"name": name, "kind": "score", "provides": provides,
                                          "process_batch": lambda self, batch: body(batch)}))


def _ids(batch) -> pa.Array:
    return batch.column("sample_id")


@pytest.mark.parametrize("body, message", [
    (lambda b: pa.table({"sample_id": pa.array([f"x{i}" for i in range(b.num_rows)], pa.string()),
                         "v": pa.array([1.0] * b.num_rows)}), "sample_ids that are not those of its batch"),
    (lambda b: pa.table({"sample_id": pa.array([b.column("sample_id")[0].as_py()] * b.num_rows, pa.string()),
                         "v": pa.array([1.0] * b.num_rows)}), "sample_ids that are not those of its batch"),
    (lambda b: pa.table({"sample_id": _ids(b), "v": pa.array([float("nan")] + [1.0] * (b.num_rows - 1))}),
     r"NaN or infinity in 'v' \(1 of 6 rows\)"),
    (lambda b: pa.table({"sample_id": _ids(b), "v": pa.array([float("inf")] * b.num_rows)}),
     r"NaN or infinity in 'v' \(6 of 6 rows\)"),
    (lambda b: pa.table({"sample_id": _ids(b), "v": pa.array([1.0] * b.num_rows),
                         "debug": pa.array(["x"] * b.num_rows)}), r"returned the column\(s\) \['debug'\], which it does "
                                                                   r"not declare \(it declares \['v'\]\)"),
], ids=["unknown ids", "repeated id", "nan", "inf", "undeclared column"])
def test_a_score_stage_output_that_breaks_the_contract_fails_the_run(body, message, tmp_path):
    _score_stage("contract_breaker", body)
    with pytest.raises(RunError, match=message):
        curator.apply(ROWS, stages=["contract_breaker"], run_dir=tmp_path / "run")


def test_a_non_text_flag_reason_fails_the_run(tmp_path):
    _score_stage("int_flag", lambda b: pa.table({"sample_id": _ids(b), "flag_reason": pa.array([1] * b.num_rows)}),
                 provides=("flag_reason",))
    with pytest.raises(RunError, match="returned 'flag_reason' of type int64"):
        curator.apply(ROWS, stages=["int_flag"], run_dir=tmp_path / "run")


def test_rows_in_another_order_and_null_scores_with_a_reason_are_fine(tmp_path):
    def body(batch):
        ids = pc.take(_ids(batch), pa.array(range(batch.num_rows - 1, -1, -1)))
        return pa.table({"sample_id": ids, "v": pa.array([None] + [2.0] * (batch.num_rows - 1), pa.float64()),
                         "flag_reason": pa.array(["cannot score"] + [None] * (batch.num_rows - 1))})
    _score_stage("reversed_nulls", body, provides=("v", "flag_reason"))
    out = curator.apply(ROWS, stages=["reversed_nulls"], run_dir=tmp_path / "run").to_pandas()
    assert (out["status"] == "flagged").sum() == 1 and (out["status"] == "kept").sum() == 5
    assert out.loc[out["status"] == "flagged", "status_reason"].tolist() == ["cannot score"]


def test_two_stages_writing_one_column_is_a_recipe_error(tmp_path):
    _score_stage("my_len", lambda b: pa.table({"sample_id": _ids(b), "char_len": pa.array([9] * b.num_rows)}),
                 provides=("char_len",))
    with pytest.raises(RecipeError, match=r"stages\[1\] \(my_len\): it writes the column 'char_len', which stage "
                                          r"'quality' writes too"):
        curator.apply(ROWS, stages=["quality", "my_len"], run_dir=tmp_path / "run")


@pytest.mark.parametrize("column", ["source", "prompt", "status"])
def test_a_stage_writing_one_of_curators_columns_is_a_recipe_error(column, tmp_path):
    _score_stage(f"writes_{column}", lambda b: pa.table({"sample_id": _ids(b), column: pa.array(["x"] * b.num_rows)}),
                 provides=(column,))
    with pytest.raises(RecipeError, match=rf"stages\[0\] \(writes_{column}\): it writes the column '{column}', one of "
                                          "curator's own"):
        curator.apply(ROWS, stages=[f"writes_{column}"], run_dir=tmp_path / "run")


def test_errors_name_the_stage_by_its_index_in_the_users_list(tmp_path):
    with pytest.raises(RecipeError, match=r"^stages\[1\] \(decide\): decide rule 'nonexistent > 1'"):
        curator.apply(ROWS, stages=["quality", {"use": "decide", "with": {"drop_if": ["nonexistent > 1"]}}],
                      run_dir=tmp_path / "run")


@pytest.mark.parametrize("attrs, error, message", [
    ({"name": "my stage"}, ValueError, "is not one folder name|names a folder under scores/"),
    ({"name": "../up"}, ValueError, "names a folder under scores/"),
    ({"name": "ok_name", "kind": "scorer"}, ValueError, r"kind = 'scorer'; expected one of \['ingest', 'score'"),
    ({"name": "ok_name", "Params": dict}, TypeError, "Params must be a dataclass"),
])
def test_register_refuses_a_class_the_engine_could_not_run(attrs, error, message):
    with pytest.raises(error, match=message):
        register(type("Bad", (Stage,), attrs))
    with pytest.raises(TypeError, match="is not a subclass of curator.stage.Stage"):
        register(type("NotAStage", (), {"name": "x"}))


def test_register_accepts_a_well_formed_stage():
    @dataclass(frozen=True)
    class Params:
        k: int = 1

    cls = type("Fine", (Stage,), {"name": "fine.stage-1", "Params": Params})
    assert register(cls) is cls
    assert type("AlsoFine", (Stage,), {"name": "also_fine", "Params": NoParams}) is not None


def test_a_stage_defined_in_an_interactive_session_runs_without_the_pool(tmp_path):
    code = f"""
import pyarrow as pa, curator, curator.executors.local as local
from curator.registry import register
from curator.stage import Stage
local.POOL_MIN_BYTES = 0  # the pool for any input
class MainStage(Stage):
    name, kind, provides = "main_stage", "score", ("v",)
    def process_batch(self, batch):
        return pa.table({{"sample_id": batch.column("sample_id"), "v": pa.array([1] * batch.num_rows)}})
register(MainStage)
recipe = {{"curator": 1, "name": "m", "inputs": [{{"path": "d.jsonl"}}], "shards": 4,
           "executor": {{"workers": 2}}, "stages": [{{"use": "main_stage"}}]}}
result = curator.run(recipe, {str(tmp_path / "run")!r}, quiet=True)
print(result.counts["kept"])
"""
    (tmp_path / "d.jsonl").write_text("".join(f'{{"prompt": "p{i}", "response": "r{i}"}}\n' for i in range(40)))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=300,
                         env={"CURATOR_ALLOWED_ROOTS": str(tmp_path), "PATH": "/usr/bin:/bin",
                              "PYTHONPATH": str(Path(__file__).parents[2])})
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "40"
    assert "MainStage is defined in an interactive session" in out.stderr


def test_a_column_of_two_types_across_shards_fails_the_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    def body(batch):
        first = batch.column("prompt")[0].as_py() if batch.num_rows else ""
        values = [1.5] * batch.num_rows if first < "question 3" else ["high"] * batch.num_rows
        return pa.table({"sample_id": _ids(batch), "v": pa.array(values)})
    _score_stage("two_types", body)
    rows = pa.table({"prompt": [f"question {i}" for i in range(40)], "response": ["r"] * 40})
    recipe = {"curator": 1, "name": "types", "inputs": [{"path": "d.parquet"}], "shards": 4,
              "stages": [{"use": "two_types"}]}
    pq.write_table(rows, tmp_path / "d.parquet")
    with pytest.raises(RunError, match=r"stage 'two_types' wrote column 'v' as (double|string) in shard-0000\d.parquet "
                                       r"and as (double|string) in shard-0000\d.parquet"):
        curator.run(recipe, "run", quiet=True)


def test_a_stage_before_the_one_that_writes_its_column_names_that_stage(tmp_path):
    with pytest.raises(RecipeError, match=r"stages\[0\] \(decide\): .*char_len.* \(stages\[1\] \(quality\) "
                                          r"writes 'char_len': move it before stage 'decide'\)"):
        curator.apply(ROWS, stages=[{"use": "decide", "with": {"drop_if": ["char_len > 5"]}}, "quality"],
                      run_dir=tmp_path / "run")
