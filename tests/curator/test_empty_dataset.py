"""A run whose dataset has no row (every row dropped, or an empty input) writes a ``dataset/`` that
``datasets.load_from_disk`` opens: 0 rows, the features a run of the same recipe with rows has; the ``dataset``
view exists (empty) and a gate on the run fails (exit 1) rather than erring. Before, ``dataset/`` held no data
file (IndexError on load) and the ``dataset`` view was missing."""

from __future__ import annotations

from pathlib import Path

import datasets
import pytest
import yaml
from click.testing import CliRunner

from curator.cli import main
from curator.pipeline import run
from tests.support import synthetic_rows, write_jsonl

STAGES = [{"use": "normalize"}, {"use": "quality"}]
PRETRAIN_GATE = Path(__file__).parents[2] / "recipes" / "pretrain-gate.yaml"


def _decide(rule: str) -> dict:
    return {"use": "decide", "with": {"drop_if": [rule]}}


def _run(data: Path, name: str, data_file: str, stages: list[dict], output: dict, input_format: str = "auto"):
    """Run a recipe over ``data/data_file`` into ``data/name``."""
    recipe = {"curator": 1, "name": name, "inputs": [{"path": data_file, "format": input_format}], "shards": 3,
              "stages": stages, "output": output,
              "gate": [{"name": "has_rows", "sql": "n_dataset() >= 1"}]}
    (data / f"{name}.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
    return run(data / f"{name}.yaml", data / name, quiet=True)


def _features(run_dir: Path) -> datasets.Features:
    return datasets.load_from_disk(str(run_dir / "dataset")).features


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("empty-dataset")
    write_jsonl(d / "rows.jsonl", synthetic_rows(30))
    write_jsonl(d / "docs.jsonl", [{"text": r["response"]} for r in synthetic_rows(30)])
    (d / "empty.jsonl").write_text("")
    return d


@pytest.mark.parametrize("fmt", ["table", "messages", "prompt_completion"])
def test_a_run_that_drops_every_row_writes_a_loadable_empty_dataset(data, fmt):
    output = {"format": fmt, "scores": ["char_len"]}
    kept = _run(data, f"kept-{fmt}", "rows.jsonl", [*STAGES, _decide("char_len < 0")], output)
    empty = _run(data, f"none-{fmt}", "rows.jsonl", [*STAGES, _decide("char_len >= 0")], output)
    assert kept.counts["kept"] > 0 and empty.counts["kept"] + empty.counts["flagged"] == 0
    ds = datasets.load_from_disk(str(empty.run_dir / "dataset"))
    assert ds.num_rows == 0 and ds.features == _features(kept.run_dir)
    assert empty.dataset.num_rows == 0
    _check_views_and_gate(empty.run_dir)


@pytest.mark.parametrize("fmt, data_file, input_format", [("messages", "rows.jsonl", "auto"),
                                                          ("text", "docs.jsonl", "text")])
def test_an_empty_input_writes_a_loadable_empty_dataset(data, fmt, data_file, input_format):
    kept = _run(data, f"rows-{fmt}", data_file, STAGES, {"format": fmt}, input_format)
    empty = _run(data, f"empty-{fmt}", "empty.jsonl", STAGES, {"format": fmt}, input_format)
    assert empty.counts["rows_in"] == 0
    ds = datasets.load_from_disk(str(empty.run_dir / "dataset"))
    assert ds.num_rows == 0 and ds.features == _features(kept.run_dir)
    _check_views_and_gate(empty.run_dir)


def test_the_shipped_pretrain_gate_fails_an_empty_input(data):
    """Every rule over a missing value evaluates to NULL, a failure (exit 1): not a missing column (exit 2)."""
    res = CliRunner().invoke(main, ["gate", "--recipe", str(PRETRAIN_GATE), str(data / "empty.jsonl"),
                                    "-o", str(data / "pretrain-empty"), "-q"])
    failed = {line.split()[1].rstrip(":") for line in res.stderr.splitlines() if line.startswith("FAIL")}
    assert res.exit_code == 1, res.output
    assert failed == {"has_documents", "few_near_duplicates", "documents_not_tiny"}


def _check_views_and_gate(run_dir: Path) -> None:
    res = CliRunner().invoke(main, ["query", str(run_dir), "SELECT count(*) AS n FROM dataset", "--format", "csv"])
    assert res.exit_code == 0 and res.output.splitlines() == ["\"n\"", "0"], res.output
    res = CliRunner().invoke(main, ["gate", str(run_dir)])
    assert res.exit_code == 1 and "FAIL  has_rows" in res.stderr, res.output
