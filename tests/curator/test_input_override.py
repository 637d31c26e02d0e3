"""``--input [NAME=]PATH``: the replacement keeps the replaced input's name, source label, format and how much of
it is read, in both forms; a ``dataset:`` input's split/config/revision only for another ``dataset:``."""

import json
import logging

import pytest
from click.testing import CliRunner

from curator.cli.main import main
from curator.inputs import override_inputs
from curator.query import run_query
from curator.recipe import load_recipe
from tests.support import synthetic_rows, write_jsonl

STAGES = [{"use": "normalize"}, {"use": "quality"}, {"use": "decide", "with": {"flag_if": ["source = 'web'"]}}]


@pytest.fixture
def recipe(tmp_path):
    write_jsonl(tmp_path / "a.jsonl", synthetic_rows(10))
    write_jsonl(tmp_path / "mine.jsonl", synthetic_rows(30, seed=7))
    path = tmp_path / "r.yaml"
    path.write_text(json.dumps({"curator": 1, "name": "r", "shards": 2, "stages": STAGES,
                                "inputs": [{"path": "a.jsonl", "source": "web", "limit": 5}]}))
    return path


@pytest.mark.parametrize("form", ["{}", "a={}"])
def test_both_forms_keep_the_source_label_and_the_limit(recipe, form):
    out = recipe.parent / f"run-{form[0]}"
    res = CliRunner().invoke(main, ["run", str(recipe), "-q", "-o", str(out),
                                    "--input", form.format(recipe.parent / "mine.jsonl")])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert summary["rows_in"] == 5 and summary["flagged"] == 5  # limit: 5 kept; every row still labelled 'web'
    manifest = json.loads((out / "manifest.json").read_text())
    assert [(i["name"], i["uri"].endswith("mine.jsonl")) for i in manifest["inputs"]] == [("a", True)]


@pytest.mark.parametrize("form", ["{}", "a={}"])
def test_replacement_keeps_name_source_format_and_sampling(tmp_path, form):
    rec = load_recipe({"curator": 1, "name": "r", "stages": STAGES, "inputs": [
        {"path": "a.jsonl", "source": "web", "format": "alpaca", "limit": 5, "sample": 3, "sample_seed": 9}]},
        base_dir=tmp_path)
    (new,) = override_inputs(rec, [form.format(tmp_path / "b.jsonl")])[0].inputs
    assert (new.path, new.name, new.source, new.format, new.limit, new.sample, new.sample_seed) == (
        str(tmp_path / "b.jsonl"), "a", "web", "alpaca", 5, 3, 9)


def test_dataset_options_follow_only_to_another_dataset(tmp_path, caplog):
    rec = load_recipe({"curator": 1, "name": "r", "stages": STAGES, "inputs": [
        {"path": "dataset:org/set", "split": "train", "config": "en", "revision": "v1"}]}, base_dir=tmp_path)
    (hub,) = override_inputs(rec, ["dataset:other/set"])[0].inputs
    assert (hub.path, hub.name, hub.source, hub.split, hub.config, hub.revision) == (
        "dataset:other/set", "set", "set", "train", "en", "v1")
    with caplog.at_level(logging.WARNING, logger="curator"):
        (local,) = override_inputs(rec, [f"set={tmp_path / 'b.jsonl'}"])[0].inputs
    assert (local.split, local.config, local.revision, local.source) == (None, None, None, "set")
    assert "not a `dataset:` input; dropped (they apply to `dataset:` inputs only): split: train, config: en, " \
           "revision: v1" in caplog.text


def _sources(tmp_path, rows, spec, *args) -> set:
    write_jsonl(tmp_path / "train_v1.jsonl", rows)
    path = tmp_path / "s.yaml"
    path.write_text(json.dumps({"curator": 1, "name": "s", "shards": 2, "stages": STAGES[:2],
                                "inputs": [{"path": "train_v1.jsonl", **spec}]}))
    out = tmp_path / f"run-{len(list(tmp_path.glob('run-*')))}"
    res = CliRunner().invoke(main, ["run", str(path), "-q", "-o", str(out), *args])
    assert res.exit_code == 0, res.output
    return {r["source"] for r in run_query([out], "SELECT DISTINCT source FROM samples").to_pylist()}


def test_an_input_is_labelled_by_its_name_with_or_without_input(tmp_path):
    rows = [{"prompt": "p", "response": "r"}]
    assert _sources(tmp_path, rows, {"name": "sft"}) == {"sft"}
    assert _sources(tmp_path, rows, {"name": "sft"}, "--input", f"sft={tmp_path / 'train_v1.jsonl'}") == {"sft"}
    assert _sources(tmp_path, rows, {}) == {"train_v1"}


def test_the_recipes_source_wins_over_the_files_own_column_which_is_kept_as_text_otherwise(tmp_path):
    rows = [{"prompt": "p", "response": "r", "source": "wiki"}, {"prompt": "q", "response": "s", "source": None}]
    assert _sources(tmp_path, rows, {"source": "advbench"}) == {"advbench"}
    assert _sources(tmp_path, rows, {}) == {"wiki", "train_v1"}
    numbered = [{"prompt": "p", "response": "r", "source": 7}]
    assert _sources(tmp_path, numbered, {}) == {"7"}
