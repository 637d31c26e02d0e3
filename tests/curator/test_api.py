"""``curator.apply`` on the three in-memory types, ``RunResult`` accessors, ``curator.query`` after ``import curator``,
and the README's Python example, run as written."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import datasets
import pandas as pd
import pyarrow as pa
import pytest

import curator
from curator.errors import RecipeError

README = Path(__file__).parents[2] / "README.md"
ROWS = [{"prompt": f"question {i}?", "response": "word " * (i + 1), "id": i} for i in range(12)]
ROWS += [dict(ROWS[2]), {"prompt": "no answer", "response": ""}]
STAGES = ["quality", {"use": "decide", "with": {"drop_if": ["char_len > 50"], "flag_if": ["is_duplicate"]}}]


@pytest.mark.parametrize("kind", ["dataset", "arrow", "pandas"])
def test_apply_returns_every_input_row_with_scores_and_status(kind, tmp_path):
    data = {"dataset": datasets.Dataset.from_list(ROWS), "arrow": pa.Table.from_pylist(ROWS),
            "pandas": pd.DataFrame(ROWS)}[kind]
    out = curator.apply(data, stages=STAGES, run_dir=tmp_path / "run")
    assert isinstance(out, datasets.Dataset) and out.num_rows == len(ROWS)
    assert out["prompt"] == [r["prompt"] for r in ROWS]  # input order and columns kept
    assert {"sample_id", "char_len", "is_duplicate", "status", "status_reason"} <= set(out.column_names)
    status = dict(zip(range(len(ROWS)), zip(out["status"], out["status_reason"])))
    assert status[0] == ("kept", None)
    assert status[11] == ("dropped", "char_len > 50")  # 'question 11?' + 12 words
    assert status[12] == ("dropped", "duplicate") and status[13] == ("quarantined", "empty response")
    res = curator.RunResult.load(tmp_path / "run")
    assert res.dataset.num_rows == res.counts["kept"] + res.counts["flagged"]
    assert res.ledger.num_rows == len(ROWS) and "char_len" in res.scores.column_names


def test_apply_follows_a_datasets_selection_and_uses_a_temporary_run_dir():
    ds = datasets.Dataset.from_list(ROWS[:10]).select([9, 0, 5])
    out = curator.apply(ds, stages=["quality"])
    assert out["prompt"] == ["question 9?", "question 0?", "question 5?"] and set(out["status"]) == {"kept"}


def test_apply_with_a_recipe_of_several_inputs_needs_the_input_name(tmp_path):
    (tmp_path / "a.jsonl").write_text('{"prompt": "p", "response": "r"}\n')
    recipe = {"curator": 1, "name": "two", "inputs": [{"path": str(tmp_path / "a.jsonl")}, {"path": "builtin:advbench"}],
              "stages": [{"use": "normalize", "with": {"require_response": False}}, {"use": "quality"}]}
    with pytest.raises(RecipeError, match=r"2 inputs \(a, advbench\); pass input=NAME"):
        curator.apply(pa.Table.from_pylist(ROWS), recipe=recipe)
    out = curator.apply(pa.Table.from_pylist(ROWS), recipe=recipe, input="a", run_dir=tmp_path / "run")
    assert out.num_rows == len(ROWS)




def test_apply_rejects_other_types_clearly():
    with pytest.raises(RecipeError, match="expected a datasets.Dataset, a pyarrow.Table or a pandas DataFrame, got list"):
        curator.apply(ROWS, stages=["quality"])
    with pytest.raises(RecipeError, match="either stages"):
        curator.apply(pa.Table.from_pylist(ROWS))


def test_query_is_an_attribute_after_import_curator():
    code = "import curator, sys; assert 'duckdb' not in sys.modules; print(curator.query.connect.__name__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=README.parent)
    assert out.returncode == 0 and out.stdout.strip() == "connect", out.stderr


def test_readme_python_example_runs(tmp_path, monkeypatch):
    block = re.search(r"## Python API\n.*?```python\n(.*?)```", README.read_text(), re.S).group(1)
    monkeypatch.chdir(tmp_path)
    exec(compile(block, "README.md", "exec"), {})
