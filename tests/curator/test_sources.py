"""Inputs: names and ``--input NAME=PATH``, fsspec URLs in every file format (fsspec's memory filesystem), a
local dataset repository through ``dataset:`` (``datasets.load_dataset``), and what the manifest records."""

from __future__ import annotations

import json

import fsspec
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from curator.cli.main import main
from curator.errors import InputError, RecipeError
from curator.inputs import input_name, override_inputs
from curator.io import sha256_file
from curator.pipeline import run
from curator.recipe import load_recipe
from curator.sources import canonical_uri

ROWS = [{"prompt": f"p{i}", "response": f"answer number {i}", "tag": i % 3} for i in range(9)]
STAGES = [{"use": "normalize"}, {"use": "quality"}]


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("CURATOR_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def _recipe(tmp_path, inputs):
    return load_recipe({"curator": 1, "name": "src", "shards": 2, "inputs": inputs, "stages": STAGES}, tmp_path)


def test_input_names_default_to_builtin_name_or_file_stem(tmp_path):
    (tmp_path / "my_sft.jsonl").write_text("")
    rec = _recipe(tmp_path, [{"path": "my_sft.jsonl"}, {"path": "builtin:advbench"},
                             {"path": "s3://bucket/dir/shard-1.parquet"}, {"path": "dataset:org/set", "split": "train"},
                             {"path": "builtin:harmbench", "name": "harm"}])
    assert [input_name(i) for i in rec.inputs] == ["my_sft", "advbench", "shard-1", "set", "harm"]
    with pytest.raises(RecipeError, match=r"inputs\[1\]\.name: 'x' is also the name of inputs\[0\]"):
        _recipe(tmp_path, [{"path": "my_sft.jsonl", "name": "x"}, {"path": "builtin:advbench", "name": "x"}])
    with pytest.raises(RecipeError, match="split, config and revision apply to `dataset:"):
        _recipe(tmp_path, [{"path": "my_sft.jsonl", "split": "train"}])


def test_override_by_name_keeps_the_other_inputs_and_the_source_label(tmp_path):
    (tmp_path / "placeholder.jsonl").write_text("")
    new = tmp_path / "elsewhere" / "harmful.jsonl"
    new.parent.mkdir()
    rec = _recipe(tmp_path, [{"path": "placeholder.jsonl"}, {"path": "builtin:advbench", "sample": 5}])
    out, roots = override_inputs(rec, [f"advbench={new}"])
    assert [i.path for i in out.inputs] == ["placeholder.jsonl", str(new)]
    assert (out.inputs[1].name, out.inputs[1].source, out.inputs[1].sample) == ("advbench", "advbench", 5)
    assert roots == (new.parent,)
    with pytest.raises(RecipeError, match=r"has 2 inputs: placeholder \(placeholder.jsonl\), advbench "
                                          r"\(builtin:advbench\)\. Say which one to replace: --input NAME=PATH"):
        override_inputs(rec, [str(new)])
    with pytest.raises(RecipeError, match="has no input named 'nope'; its inputs are placeholder"):
        override_inputs(rec, [f"nope={new}"])


def test_cli_bare_input_on_a_recipe_with_several_inputs_is_an_error_listing_them(tmp_path):
    (tmp_path / "a.jsonl").write_text(json.dumps(ROWS[0]) + "\n")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(json.dumps({"curator": 1, "name": "r", "inputs": [{"path": "a.jsonl"}, {"path": "builtin:advbench"}],
                                  "stages": STAGES}))
    res = CliRunner().invoke(main, ["run", str(recipe), "--input", str(tmp_path / "a.jsonl"), "-o", str(tmp_path / "o")])
    assert res.exit_code == 2 and "a (a.jsonl), advbench (builtin:advbench)" in res.stderr


def _put(fs, path: str, kind: str) -> None:
    table = pa.Table.from_pylist(ROWS)
    with fs.open(path, "wb") as fh:
        if kind == "jsonl":
            fh.write("".join(json.dumps(r) + "\n" for r in ROWS).encode())
        elif kind == "json":
            fh.write(json.dumps(ROWS).encode())
        elif kind in ("csv", "tsv"):
            pacsv.write_csv(table, fh, pacsv.WriteOptions(delimiter="\t" if kind == "tsv" else ","))
        elif kind == "parquet":
            pq.write_table(table, fh)
        else:
            with pa.ipc.new_file(fh, table.schema) as w:
                w.write_table(table)


@pytest.mark.parametrize("kind", ["jsonl", "json", "csv", "tsv", "parquet", "arrow"])
def test_memory_url_inputs_in_every_format(kind, tmp_path, home):
    fs = fsspec.filesystem("memory")
    url = f"memory://bucket-{kind}/data.{kind}"
    _put(fs, url, kind)
    res = run(_recipe(tmp_path, [{"path": url}]), tmp_path / "run", quiet=True)
    assert res.counts["rows_in"] == len(ROWS) and res.counts["kept"] == len(ROWS)
    (entry,) = res.manifest["inputs"]
    local = next((home / "inputs").glob(f"*/data.{kind}"))
    assert entry["uri"] == url and entry["name"] == "data" and entry["sha256"] == sha256_file(local)
    assert entry["origin"]["url"] == url and int(entry["origin"]["size"]) == local.stat().st_size
    assert sorted(res.dataset["prompt"]) == sorted(r["prompt"] for r in ROWS)


def test_memory_url_save_to_disk_directory_and_changed_object_is_fetched_again(tmp_path, home):
    import datasets

    datasets.Dataset.from_list(ROWS).save_to_disk(str(tmp_path / "saved"))
    fs = fsspec.filesystem("memory")
    fs.put(str(tmp_path / "saved"), "/store/saved", recursive=True)
    res = run(_recipe(tmp_path, [{"path": "memory://store/saved"}]), tmp_path / "run", quiet=True)
    assert res.counts["kept"] == len(ROWS)
    _put(fs, "memory://store/v.jsonl", "jsonl")
    first = run(_recipe(tmp_path, [{"path": "memory://store/v.jsonl"}]), tmp_path / "r1", quiet=True)
    with fs.open("memory://store/v.jsonl", "ab") as fh:
        fh.write((json.dumps({"prompt": "new", "response": "row"}) + "\n").encode())
    second = run(_recipe(tmp_path, [{"path": "memory://store/v.jsonl"}]), tmp_path / "r2", quiet=True)
    assert second.counts["rows_in"] == first.counts["rows_in"] + 1
    assert second.manifest["inputs"][0]["sha256"] != first.manifest["inputs"][0]["sha256"]


def test_url_errors_name_the_url(tmp_path, home):
    with pytest.raises(InputError, match="memory://nowhere/x.jsonl: input not found"):
        run(_recipe(tmp_path, [{"path": "memory://nowhere/x.jsonl"}]), tmp_path / "run", quiet=True)
    fsspec.filesystem("memory").pipe("/bad/b.jsonl", b'{"prompt": "a", "response": "b"}\n{broken\n')
    with pytest.raises(InputError, match=r"memory://bad/b.jsonl: 1 row\(s\) cannot be read \(row 1: invalid JSON"):
        run(_recipe(tmp_path, [{"path": "memory://bad/b.jsonl"}]), tmp_path / "run2", quiet=True)
    assert canonical_uri("s3:/b/k.jsonl") == "s3://b/k.jsonl"


def test_dataset_input_from_a_local_dataset_repository(tmp_path, home, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))
    repo = tmp_path / "repo"
    (repo / "data").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(ROWS[:6]), repo / "data" / "train-00000-of-00001.parquet")
    pq.write_table(pa.Table.from_pylist(ROWS[6:]), repo / "data" / "test-00000-of-00001.parquet")
    rec = _recipe(tmp_path, [{"path": f"dataset:{repo}", "split": "test"}])
    res = run(rec, tmp_path / "run", quiet=True)
    assert res.counts["rows_in"] == 3 and set(res.dataset["source"]) == {"repo"}
    origin = res.manifest["inputs"][0]["origin"]
    assert origin["dataset"] == str(repo) and origin["split"] == "test" and origin["fingerprint"]
    with pytest.raises(InputError, match=r"has splits \['test', 'train'\]; choose one with `split:`"):
        run(_recipe(tmp_path, [{"path": f"dataset:{repo}"}]), tmp_path / "run2", quiet=True)
