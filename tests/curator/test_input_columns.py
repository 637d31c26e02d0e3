"""Input columns curator cannot keep as they are stop the run before any work, with an error (exit 2) that names
the file, the column and the fix: a name used twice or one of the engine's, a name a stage of the recipe writes,
a type ``datasets`` cannot hold, one column of two types across inputs. A ``map`` column is kept as what it is
physically (a list of key/value structs), and ``curator.apply`` reads a DataFrame column of mixed types as text."""

from __future__ import annotations

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

import curator
from curator.cli import main
from curator.errors import InputError, RecipeError
from curator.pipeline import run
from tests.support import write_jsonl, write_recipe

STAGES = [{"use": "normalize"}, {"use": "quality"}, {"use": "decide", "with": {"drop_if": ["is_duplicate"]}}]


def _run(tmp_path, inputs, stages=STAGES):
    return run(write_recipe(tmp_path, inputs, stages, shards=2), tmp_path / "run", quiet=True)


def test_a_column_named_like_a_stage_output_is_an_error_before_the_stages_run(tmp_path):
    write_jsonl(tmp_path / "shadow.jsonl", [{"prompt": "p1", "response": "r1", "is_duplicate": True},
                                            {"prompt": "p2", "response": "r2", "is_duplicate": False}])
    with pytest.raises(InputError, match=r"shadow.jsonl: the input column 'is_duplicate' .* stage 'quality' writes.*"
                                         r"rename it in the file \(e.g. 'input_is_duplicate'\)"):
        _run(tmp_path, ["shadow.jsonl"])
    assert not (tmp_path / "run" / "scores").exists()


def test_the_error_names_only_the_input_that_holds_the_column(tmp_path):
    write_jsonl(tmp_path / "a.jsonl", [{"prompt": "p1", "response": "r1"}])
    write_jsonl(tmp_path / "b.jsonl", [{"prompt": "p2", "response": "r2", "char_len": 1000}])
    with pytest.raises(InputError) as err:
        _run(tmp_path, ["a.jsonl", "b.jsonl"])
    assert str(err.value).startswith(f"{tmp_path / 'b.jsonl'}: the input column 'char_len'")


def test_a_map_column_passes_through_as_key_value_structs(tmp_path):
    tags = pa.array([[("lang", 1)], None], pa.map_(pa.string(), pa.int64()))
    nested = pa.array([{"m": [("a", 2)]}, None], pa.struct([("m", pa.map_(pa.string(), pa.int64()))]))
    pq.write_table(pa.table({"prompt": ["p1", "p2"], "response": ["r1", "r2"], "tags": tags, "nested": nested}),
                   tmp_path / "map.parquet")
    res = _run(tmp_path, ["map.parquet"])
    rows = sorted(res.dataset.select_columns(["prompt", "tags", "nested"]).to_list(), key=lambda r: r["prompt"])
    assert rows == [{"prompt": "p1", "tags": [{"key": "lang", "value": 1}], "nested": {"m": [{"key": "a", "value": 2}]}},
                    {"prompt": "p2", "tags": None, "nested": None}]


def test_a_type_datasets_cannot_hold_is_an_error_at_ingest(tmp_path):
    union = pa.UnionArray.from_dense(pa.array([0, 1], pa.int8()), pa.array([0, 0], pa.int32()),
                                     [pa.array([1]), pa.array(["x"])])
    table = pa.table({"prompt": ["p1", "p2"], "response": ["r1", "r2"], "u": union})
    with pa.ipc.new_file(str(tmp_path / "union.arrow"), table.schema) as writer:
        writer.write_table(table)
    with pytest.raises(InputError, match=r"union.arrow: column 'u' cannot be written to dataset/ .*dense_union"):
        _run(tmp_path, ["union.arrow"])
    assert not (tmp_path / "run" / "input").exists()


@pytest.mark.parametrize("header,column,times", [("prompt,response,response", "response", 2),
                                                 ("prompt,response,x,x", "x", 2)])
def test_a_csv_column_name_used_twice_is_an_input_error(header, column, times, tmp_path):
    (tmp_path / "dup.csv").write_text(header + "\n" + ",".join(["a"] * header.count(",")) + ",b\n")
    recipe = write_recipe(tmp_path, ["dup.csv"], STAGES, shards=2)
    res = CliRunner().invoke(main, ["run", str(recipe), "-o", str(tmp_path / "run"), "-q"])
    assert res.exit_code == 2, res.output
    assert f"dup.csv: column '{column}' appears {times} times" in res.output
    assert "Traceback" not in res.output


def test_a_parquet_column_name_used_twice_is_an_input_error(tmp_path):
    table = pa.Table.from_arrays([pa.array(["p"]), pa.array(["r"]), pa.array([1]), pa.array([2])],
                                 names=["prompt", "response", "x", "x"])
    pq.write_table(table, tmp_path / "dup.parquet")
    with pytest.raises(InputError, match="dup.parquet: column 'x' appears 2 times"):
        _run(tmp_path, ["dup.parquet"])


@pytest.mark.parametrize("column", ["_bad_reason", "_input_row", "_input_idx", "_file_row"])
def test_a_column_named_like_an_engine_column_is_an_input_error(column, tmp_path):
    write_jsonl(tmp_path / "r.jsonl", [{"prompt": "p", "response": "r", column: "mine"}])
    with pytest.raises(InputError, match=rf"r.jsonl: column '{column}' has a name curator uses for its own columns.*"
                                         rf"rename it \(e.g. '{column[1:]}'\)"):
        _run(tmp_path, ["r.jsonl"])


def test_other_underscore_columns_are_kept_with_an_input_prefix(tmp_path):
    write_jsonl(tmp_path / "mongo.jsonl", [{"_id": "64f1", "prompt": "p1", "response": "r1", "__v": 0},
                                           {"_id": "64f2", "prompt": "p2", "response": "r2", "__v": 1}])
    rows = sorted(_run(tmp_path, ["mongo.jsonl"]).dataset.to_list(), key=lambda r: r["prompt"])
    assert [(r["input_id"], r["input__v"]) for r in rows] == [("64f1", 0), ("64f2", 1)]
    write_jsonl(tmp_path / "both.jsonl", [{"_id": "a", "input_id": "b", "prompt": "p", "response": "r"}])
    with pytest.raises(InputError, match=r"both.jsonl: columns '_id' and 'input_id'.*rename or drop one"):
        _run(tmp_path, ["both.jsonl"])


@pytest.mark.parametrize("kind", ["parquet", "csv", "json"])
def test_an_input_file_row_column_is_refused_not_read_as_row_numbers(kind, tmp_path):
    table = pa.table({"prompt": ["p1", "p2"], "response": ["r1", "r2"], "_file_row": [7, 7]})
    path = tmp_path / f"rows.{kind}"
    if kind == "parquet":
        pq.write_table(table, path)
    elif kind == "csv":
        table.to_pandas().to_csv(path, index=False)
    else:
        path.write_text(table.to_pandas().to_json(orient="records"))
    with pytest.raises(InputError, match=rf"rows.{kind}: column '_file_row' has a name curator uses"):
        _run(tmp_path, [path.name])


def test_an_input_sample_id_column_is_kept_as_input_sample_id(tmp_path):
    write_jsonl(tmp_path / "ids.jsonl", [{"prompt": "p1", "response": "r1", "sample_id": "mine-1"},
                                         {"prompt": "p2", "response": "r2", "sample_id": "mine-2"}])
    rows = {r["prompt"]: r for r in _run(tmp_path, ["ids.jsonl"]).dataset.to_list()}
    assert {p: r["input_sample_id"] for p, r in rows.items()} == {"p1": "mine-1", "p2": "mine-2"}
    assert all(len(r["sample_id"]) == 64 for r in rows.values())  # curator's own content id


def test_an_input_with_sample_id_and_input_sample_id_is_an_input_error(tmp_path):
    write_jsonl(tmp_path / "both.jsonl", [{"prompt": "p", "response": "r", "sample_id": "a", "input_sample_id": "b"}])
    with pytest.raises(InputError, match=r"both.jsonl: columns 'sample_id' and 'input_sample_id'.*rename or drop"):
        _run(tmp_path, ["both.jsonl"])


def test_a_messages_column_a_prompt_response_layout_does_not_read_is_kept(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    turns = [{"role": "user", "content": "earlier"}, {"role": "assistant", "content": "context"}]
    write_jsonl(tmp_path / "pr.jsonl", [{"prompt": "p1", "response": "r1", "messages": turns}])
    recipe = {"curator": 1, "name": "pr", "inputs": [{"path": "pr.jsonl", "format": "prompt_response"}],
              "stages": STAGES}
    row = run(recipe, tmp_path / "run", quiet=True).dataset.to_list()[0]
    assert row["prompt"] == "p1" and row["messages"] is None and row["input_messages"] == turns


def test_a_pandas_index_stored_in_parquet_is_not_a_column(tmp_path):
    frame = pd.DataFrame({"prompt": ["p1", "p2", "p3"], "response": ["r1", "r2", "r3"]}, index=[10, 11, 12])
    pa_table = pa.Table.from_pandas(frame, preserve_index=True)
    assert "__index_level_0__" in pa_table.column_names
    pq.write_table(pa_table, tmp_path / "indexed.parquet")
    result = _run(tmp_path, ["indexed.parquet"])
    assert result.dataset.column_names == ["sample_id", "prompt", "response", "messages", "source"]
    assert sorted(result.dataset["prompt"]) == ["p1", "p2", "p3"]


def test_two_inputs_with_one_column_of_two_types_are_named(tmp_path):
    write_jsonl(tmp_path / "ea.jsonl", [{"prompt": "p1", "response": "r1", "extra": 1}])
    write_jsonl(tmp_path / "eb.jsonl", [{"prompt": "p2", "response": "r2", "extra": "two"}])
    with pytest.raises(InputError) as err:
        _run(tmp_path, ["ea.jsonl", "eb.jsonl"])
    assert str(err.value) == (f"inputs {tmp_path / 'ea.jsonl'} and {tmp_path / 'eb.jsonl'}: column 'extra' is int64 "
                              "in the first and string in the second; rename it in one of them, or convert it to one "
                              "type in both")


def test_apply_reads_a_mixed_dataframe_column_as_text(tmp_path):
    df = pd.DataFrame({"prompt": ["a", "b", "c"], "response": ["x", "y", "z"], "extra": [1, "two", None]})
    out = curator.apply(df, stages=["quality"], run_dir=tmp_path / "run")
    assert out["extra"] == ["1", "two", None] and out["status"] == ["kept"] * 3


def test_apply_names_a_mixed_column_a_layout_reads(tmp_path):
    df = pd.DataFrame({"prompt": ["a", 5], "response": ["x", "y"]})
    with pytest.raises(RecipeError, match=r"column 'prompt' holds values Arrow cannot store as one type \(int, str\)"):
        curator.apply(df, stages=["quality"], run_dir=tmp_path / "run")


def test_apply_names_a_dataframe_column_used_twice(tmp_path):
    df = pd.DataFrame([["a", "x", "y"]], columns=["prompt", "response", "response"])
    with pytest.raises(InputError, match="curator.apply: column 'response' appears 2 times"):
        curator.apply(df, stages=["quality"], run_dir=tmp_path / "run")
