"""Input columns named like the columns of the rows an augment stage adds (``parent_id``, ``seed``, ...): in
``dataset/`` the input's values are written as ``input_<name>``, next to the added rows' own column, instead of
sharing one column (a user's ``parent_id`` read as curator's) or failing the run when the types differ."""

import logging

import datasets
import pyarrow as pa

from curator.finalize import input_renames
from curator.pipeline import run
from curator.registry import register
from tests.curator.test_rerun_states import ToyAugment
from tests.support import write_jsonl, write_recipe


def test_input_columns_named_like_added_columns_keep_their_values(tmp_path, caplog):
    register(ToyAugment)
    rows = [{"prompt": f"question {i}?", "response": f"answer number {i}.", "parent_id": 1000 + i,
             "seed": f"s{i}", "input_seed": "taken", "topic": "t"} for i in range(6)]
    write_jsonl(tmp_path / "data.jsonl", rows)
    recipe = write_recipe(tmp_path, ["data.jsonl"], [{"use": "normalize"}, {"use": "test.toy_augment"}], shards=2)
    with caplog.at_level(logging.WARNING, logger="curator.finalize"):
        result = run(recipe, tmp_path / "run", quiet=True)  # int vs string parent_id/seed used to fail here
    ds = datasets.load_from_disk(str(tmp_path / "run" / "dataset"))
    assert ds.num_rows == 9
    by_prompt = {}
    for row in ds:
        by_prompt.setdefault(row["prompt"], []).append(row)
    for i in range(6):
        kept = next(r for r in by_prompt[f"question {i}?"] if r["generator"] is None)
        assert kept["input_parent_id"] == 1000 + i and kept["parent_id"] is None
        assert kept["input_input_seed"] == f"s{i}" and kept["input_seed"] == "taken" and kept["seed"] is None
        assert kept["topic"] == "t"
    added = [r for r in ds if r["generator"] == "toy"]
    assert len(added) == 3 and all(r["input_parent_id"] is None and isinstance(r["seed"], int) for r in added)
    ids = {r["sample_id"] for r in ds if r["generator"] is None}
    assert all(r["parent_id"] in ids for r in added)
    assert "'parent_id' is written as 'input_parent_id'" in caplog.text
    assert result.counts["added"] == 3


def test_no_rename_without_a_clash():
    schema = pa.schema([("sample_id", pa.string()), ("prompt", pa.string()), ("topic", pa.string()),
                        ("_input_idx", pa.int32())])
    assert input_renames([schema], []) == {}
    assert input_renames([schema], ["prompt", "response", "source", "parent_id"]) == {}
    assert input_renames([schema], ["topic"]) == {"topic": "input_topic"}


def test_a_renamed_input_column_keeps_the_features_its_input_declared(tmp_path):
    register(ToyAugment)
    rows = [{"prompt": f"question {i}?", "response": f"answer number {i}.", "seed": i % 2} for i in range(4)]
    features = datasets.Features({"prompt": datasets.Value("string"), "response": datasets.Value("string"),
                                  "seed": datasets.ClassLabel(names=["low", "high"])})
    datasets.Dataset.from_list(rows, features=features).to_parquet(str(tmp_path / "data.parquet"))
    recipe = write_recipe(tmp_path, ["data.parquet"], [{"use": "normalize"}, {"use": "test.toy_augment"}], shards=2)
    run(recipe, tmp_path / "run", quiet=True)
    ds = datasets.load_from_disk(str(tmp_path / "run" / "dataset"))
    assert ds.features["input_seed"] == datasets.ClassLabel(names=["low", "high"])
    assert ds.features["seed"] == datasets.Value("int64")  # the added rows' own column
    assert sorted(ds.features["input_seed"].int2str(v) for v in ds["input_seed"] if v is not None) == \
        ["high", "high", "low", "low"]
