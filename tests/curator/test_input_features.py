"""The ``datasets`` features an input declares for the columns curator passes through (a ``ClassLabel``'s names,
a list of class labels, a ``Translation``) are the features of those columns in ``dataset/``, also under their
``input_<name>`` rename; an image column keeps its feature and gets its bytes embedded; inputs that declare
different ones for a column leave it plain, with a warning saying why. Real data sets throughout: ``save_to_disk`` directories, Parquet files ``datasets`` wrote, ``curator.apply``."""

from __future__ import annotations

import json
import logging
import subprocess
import sys

import datasets
import pyarrow.parquet as pq
import pytest

import curator
from curator.pipeline import run
from tests.support import write_jsonl, write_recipe

STAGES = [{"use": "normalize"}, {"use": "quality"}]
FEATURES = datasets.Features({
    "prompt": datasets.Value("string"), "response": datasets.Value("string"),
    "label": datasets.ClassLabel(names=["neg", "pos"]),
    "tags": datasets.Sequence(datasets.ClassLabel(names=["a", "b", "c"])),
    "tr": datasets.Translation(languages=["fr", "en"]),
    "_split": datasets.ClassLabel(names=["train", "test"]),  # kept as input_split
})
ROWS = {"prompt": ["hello there", "how are you", "what is two plus two"], "response": ["hi", "fine", "four"],
        "label": [0, 1, 1], "tags": [[0, 2], [], [1]], "tr": [{"en": "a", "fr": "b"}] * 3, "_split": [0, 1, 0]}


def _dataset(features=FEATURES, rows=ROWS) -> datasets.Dataset:
    return datasets.Dataset.from_dict({k: rows[k] for k in features}, features=features)


def _run(tmp_path, inputs):
    return run(write_recipe(tmp_path, inputs, STAGES, shards=2), tmp_path / "run", quiet=True)


def _check_declared(features: datasets.Features) -> None:
    assert features["label"] == datasets.ClassLabel(names=["neg", "pos"])
    assert features["label"].int2str(1) == "pos"
    assert features["tags"] == datasets.List(datasets.ClassLabel(names=["a", "b", "c"]))
    assert features["tr"] == datasets.Translation(languages=["fr", "en"])
    assert features["input_split"].names == ["train", "test"]
    assert features["sample_id"] == features["source"] == datasets.Value("string")  # curator's columns as before


def test_a_save_to_disk_input_keeps_its_features_in_the_dataset(tmp_path):
    _dataset().save_to_disk(str(tmp_path / "hf"))
    res = _run(tmp_path, ["hf"])
    ds = datasets.load_from_disk(str(tmp_path / "run" / "dataset"))
    _check_declared(ds.features)
    assert sorted(ds.features["label"].int2str(ds["label"])) == ["neg", "pos", "pos"]
    assert json.loads((tmp_path / "run" / "dataset" / "dataset_info.json").read_text())["features"]["label"] == \
        {"names": ["neg", "pos"], "_type": "ClassLabel"}
    assert res.dataset.features == ds.features


def test_a_parquet_file_datasets_wrote_keeps_its_features_without_importing_datasets(tmp_path):
    _dataset().to_parquet(str(tmp_path / "d.parquet"))
    recipe = write_recipe(tmp_path, ["d.parquet"], STAGES, shards=2)
    code = (f"import sys; from curator.pipeline import run; run({str(recipe)!r}, {str(tmp_path / 'run')!r}, "
            "quiet=True); print('datasets' in sys.modules)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "False"
    _check_declared(datasets.load_from_disk(str(tmp_path / "run" / "dataset")).features)


def test_apply_on_a_dataset_keeps_its_features_in_the_run_dataset(tmp_path):
    out = curator.apply(_dataset(), stages=["quality"], run_dir=tmp_path / "run")
    assert out.features["label"].names == ["neg", "pos"]
    _check_declared(curator.RunResult.load(tmp_path / "run").dataset.features)


def test_inputs_declaring_different_features_leave_the_column_plain_and_say_why(tmp_path, caplog):
    other = datasets.Features({**FEATURES, "label": datasets.ClassLabel(names=["no", "yes"])})
    _dataset().save_to_disk(str(tmp_path / "a"))
    _dataset(other, {**ROWS, "prompt": ["x", "y", "z"]}).to_parquet(str(tmp_path / "b.parquet"))
    write_jsonl(tmp_path / "c.jsonl", [{"prompt": "p", "response": "r", "tags": [0]}])
    with caplog.at_level(logging.WARNING, logger="curator"):
        _run(tmp_path, ["a", "b.parquet", "c.jsonl"])
    features = datasets.load_from_disk(str(tmp_path / "run" / "dataset")).features
    assert features["label"] == datasets.Value("int64")
    assert features["tags"] == datasets.List(datasets.Value("int64"))  # c.jsonl declares none
    assert features["tr"] == datasets.Translation(languages=["fr", "en"])  # c.jsonl has no such column
    warned = [r.getMessage() for r in caplog.records if "declare different features" in r.getMessage()]
    assert len(warned) == 2
    assert warned[0].startswith(f"inputs: column 'label': inputs {tmp_path / 'a'} and {tmp_path / 'b.parquet'} "
                                "declare different features for it")
    assert "'tags'" in warned[1] and "c.jsonl" in warned[1] and "and none)" in warned[1]


def test_an_input_without_features_writes_what_it_wrote_before(tmp_path):
    write_jsonl(tmp_path / "d.jsonl", [{"prompt": "p", "response": "r", "label": 1}])
    _run(tmp_path, ["d.jsonl"])
    assert "curator.features" not in str(pq.read_schema(tmp_path / "run" / "input" / "shard-00000.parquet").metadata)
    assert datasets.load_from_disk(str(tmp_path / "run" / "dataset")).features["label"] == datasets.Value("int64")


def test_an_image_column_keeps_its_feature_and_its_bytes_are_embedded(tmp_path):
    image = pytest.importorskip("PIL.Image")
    image.new("RGB", (4, 4)).save(tmp_path / "x.png")
    features = datasets.Features({"prompt": datasets.Value("string"), "response": datasets.Value("string"),
                                  "image": datasets.Image()})
    ds = datasets.Dataset.from_dict({"prompt": ["p1", "p2"], "response": ["r1", "r2"],
                                     "image": [str(tmp_path / "x.png"), None]}, features=features)
    pq.write_table(ds.data.table, tmp_path / "paths.parquet")  # the image by its path, as datasets holds it
    _run(tmp_path, ["paths.parquet"])
    out = datasets.load_from_disk(str(tmp_path / "run" / "dataset"))
    assert out.features["image"] == datasets.Image()
    stored = [r for r in out.with_format("arrow")[:]["image"].to_pylist() if r is not None]
    assert [(r["path"], r["bytes"] == (tmp_path / "x.png").read_bytes()) for r in stored] == [("x.png", True)]
