"""Inputs that name many files: a glob pattern or a directory of data files (shards another tool wrote) is read as
one input per file, in path order, under the pattern's name; what names no data file is an error naming it."""

from __future__ import annotations

import gzip
import json
import shutil

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

import curator
from curator.cli.main import main
from curator.errors import InputError
from curator.pipeline import run
from tests.support import write_jsonl, write_recipe

STAGES = [{"use": "normalize"}, {"use": "quality"}]


def _rows(tag: str, n: int = 3) -> list[dict]:
    return [{"prompt": f"{tag} question {i}?", "response": f"{tag} answer {i}."} for i in range(n)]


@pytest.fixture
def shards(tmp_path):
    """data/: two JSONL shards, a gzipped one in a subfolder, a Parquet shard, and files a reader must skip."""
    d = tmp_path / "data"
    (d / "more").mkdir(parents=True)
    write_jsonl(d / "part-0.jsonl", _rows("a"))
    write_jsonl(d / "part-1.jsonl", _rows("b"))
    with gzip.open(d / "more" / "part-2.jsonl.gz", "wt", encoding="utf-8") as f:
        f.write("".join(json.dumps(r) + "\n" for r in _rows("c")))
    pq.write_table(pa.Table.from_pylist(_rows("d")), d / "part-3.parquet")
    (d / "_SUCCESS").write_text("")
    (d / "README.md").write_text("shards of a corpus")
    (d / ".hidden").mkdir()
    write_jsonl(d / ".hidden" / "part-9.jsonl", _rows("hidden"))
    return tmp_path


def _prompts(run_dir) -> list[str]:
    return [r["prompt"] for r in curator.RunResult.load(run_dir).dataset]


def test_a_directory_of_shards_is_read_file_by_file_in_path_order(shards):
    result = run(write_recipe(shards, ["data"], STAGES, shards=2), shards / "run", quiet=True)
    inputs = result.manifest["inputs"]
    assert [i["uri"].rsplit("/data/", 1)[1] for i in inputs] == ["more/part-2.jsonl.gz", "part-0.jsonl",
                                                                "part-1.jsonl", "part-3.parquet"]
    assert {i["name"] for i in inputs} == {"data"} and all(len(i["sha256"]) == 64 for i in inputs)
    assert result.counts["kept"] == 12 and not any("hidden" in p for p in _prompts(shards / "run"))
    assert {r["source"] for r in result.dataset} == {"data"}


def test_a_glob_pattern_reads_the_files_it_matches(shards):
    result = run(write_recipe(shards, ["data/part-[01].jsonl"], STAGES, shards=2), shards / "run", quiet=True)
    assert sorted(_prompts(shards / "run")) == sorted(r["prompt"] for r in _rows("a") + _rows("b"))
    assert [i["name"] for i in result.manifest["inputs"]] == ["data", "data"]
    everything = run(write_recipe(shards, ["data/**/*.jsonl*"], STAGES, shards=2), shards / "run2", quiet=True)
    assert everything.counts["kept"] == 9  # part-0, part-1, more/part-2.jsonl.gz; not .hidden/
    rerun = run(write_recipe(shards, ["data/**/*.jsonl*"], STAGES, shards=2), shards / "run2", quiet=True)
    assert rerun.digest == everything.digest


def test_input_replaces_a_pattern_input_by_its_name(shards, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    write_jsonl(other / "x-1.jsonl", _rows("x"))
    write_jsonl(other / "x-2.jsonl", _rows("y"))
    recipe = write_recipe(shards, ["data/*.jsonl"], STAGES, shards=2)
    result = run(recipe, tmp_path / "run", inputs=[f"data={other}/x-*.jsonl"], quiet=True)
    assert sorted(_prompts(tmp_path / "run")) == sorted(r["prompt"] for r in _rows("x") + _rows("y"))
    assert {r["source"] for r in result.dataset} == {"data"}


def test_apply_finds_its_input_after_a_pattern_input(shards, monkeypatch):
    monkeypatch.chdir(shards)  # a recipe given as a dict reads paths under the working directory
    recipe = {"curator": 1, "name": "r", "inputs": [{"path": "data/*.jsonl"},
                                                     {"path": "mine.jsonl", "name": "mine"}], "stages": STAGES}
    mine = [{"prompt": f"z question {i}?", "response": "z" * (10 + i)} for i in range(3)]
    out = curator.apply(pa.Table.from_pylist(mine), recipe=recipe, input="mine")
    assert out["char_len"] == [len(r["prompt"]) + len(r["response"]) for r in mine]  # its own rows' scores
    assert set(out["status"]) == {"kept"}


def test_a_pattern_or_directory_without_data_files_is_an_error_naming_it(shards):
    with pytest.raises(InputError, match=r"inputs\[0\]\.path: the pattern 'data/\*\.csv' names no data file"):
        run(write_recipe(shards, ["data/*.csv"], STAGES), shards / "run", quiet=True)
    empty = shards / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no data here")
    res = CliRunner().invoke(main, ["run", str(write_recipe(shards, ["empty"], STAGES)), "-o", str(shards / "r2"), "-q"])
    assert res.exit_code == 2 and "the directory" in res.output and "names no data file" in res.output
    res = CliRunner().invoke(main, ["validate", str(write_recipe(shards, ["data/*.csv"], STAGES))])
    assert res.exit_code == 0 and "names no data file" in res.output  # a placeholder, as a missing file is


def test_a_save_to_disk_directory_is_still_one_dataset(shards):
    import datasets

    datasets.Dataset.from_list(_rows("hf")).save_to_disk(str(shards / "hf"))
    result = run(write_recipe(shards, ["hf"], STAGES), shards / "run", quiet=True)
    assert len(result.manifest["inputs"]) == 1 and result.counts["kept"] == 3
    shutil.rmtree(shards / "hf")


def test_save_to_disk_directories_among_the_files_are_one_input_each(shards):
    import datasets

    datasets.Dataset.from_list(_rows("hf")).save_to_disk(str(shards / "data" / "export"))
    result = run(write_recipe(shards, ["data"], STAGES, shards=2), shards / "run", quiet=True)
    uris = [i["uri"].rsplit("/data/", 1)[1] for i in result.manifest["inputs"]]
    assert uris == ["export", "more/part-2.jsonl.gz", "part-0.jsonl", "part-1.jsonl", "part-3.parquet"]
    assert result.counts["kept"] == 15  # not its state.json, dataset_info.json or Arrow file read as inputs
    pattern = run(write_recipe(shards, ["data/*"], STAGES, shards=2), shards / "run2", quiet=True)
    assert [i["uri"].rsplit("/data/", 1)[1] for i in pattern.manifest["inputs"]] == [
        "export", "part-0.jsonl", "part-1.jsonl", "part-3.parquet"]
