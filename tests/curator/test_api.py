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


def test_apply_follows_a_datasets_selection_and_removes_its_temporary_run_dir(tmp_path, monkeypatch):
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    ds = datasets.Dataset.from_list(ROWS[:10]).select([9, 0, 5])
    out = curator.apply(ds, stages=["quality"])
    assert out["prompt"] == ["question 9?", "question 0?", "question 5?"] and set(out["status"]) == {"kept"}
    assert out.to_pandas()["char_len"].tolist() == [61, 16, 41]  # the result is in memory
    assert list(tmp_path.iterdir()) == []


def test_apply_with_a_recipe_of_several_inputs_needs_the_input_name(tmp_path):
    (tmp_path / "a.jsonl").write_text('{"prompt": "p", "response": "r"}\n')
    recipe = {"curator": 1, "name": "two", "inputs": [{"path": str(tmp_path / "a.jsonl")}, {"path": "builtin:advbench"}],
              "stages": [{"use": "normalize", "with": {"require_response": False}}, {"use": "quality"}]}
    with pytest.raises(RecipeError, match=r"2 inputs \(a, advbench\); pass input=NAME"):
        curator.apply(pa.Table.from_pylist(ROWS), recipe=recipe)
    out = curator.apply(pa.Table.from_pylist(ROWS), recipe=recipe, input="a", run_dir=tmp_path / "run")
    assert out.num_rows == len(ROWS)




def test_apply_into_a_later_input_returns_that_inputs_rows(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "first.jsonl").write_text(('{"prompt": "x", "response": "' + "y" * 500 + '"}\n') * 3)
    recipe = {"curator": 1, "name": "two", "inputs": [{"path": "first.jsonl"}, {"path": "first.jsonl", "name": "mine"}],
              "stages": [{"use": "quality"}, {"use": "decide", "with": {"drop_if": ["char_len > 100"]}}]}
    mine = pd.DataFrame({"prompt": ["short one", "short two", "short three"], "response": ["ok", "fine", "good"]})
    out = curator.apply(mine, recipe=recipe, input="mine", run_dir=tmp_path / "run").to_pandas()
    assert out["char_len"].tolist() == [11, 13, 15] and set(out["status"]) == {"kept"}
    with pytest.raises(RecipeError, match=r"input='nope': recipe 'two' has no input of that name; its inputs are first, "
                                          "mine"):
        curator.apply(mine, recipe=recipe, input="nope")


def test_two_applies_on_one_run_dir_do_not_mix_their_data(tmp_path):
    import threading
    frames = [pd.DataFrame({"prompt": [f"p{k}-{i}" for i in range(200)], "response": ["r " * 40] * 200})
              for k in range(2)]
    outcomes: dict[int, object] = {}

    def job(k):
        try:
            outcomes[k] = curator.apply(frames[k], stages=["quality"], run_dir=tmp_path / "run", wait=120)
        except Exception as exc:  # noqa: BLE001 (reported below)
            outcomes[k] = exc
    threads = [threading.Thread(target=job, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for k in range(2):  # each waited for the other and got its own rows back
        assert not isinstance(outcomes[k], Exception), outcomes[k]
        assert outcomes[k]["prompt"] == frames[k]["prompt"].tolist()


@pytest.mark.parametrize("kwargs, message", [
    ({"workers": "2"}, r"workers='2'; expected a whole number >= 1"),
    ({"workers": 0}, r"workers=0; expected a whole number >= 1"),
    ({"stages": "quality"}, r"stages= takes a list .* got 'quality' \(write stages=\['quality'\] for one stage\)"),
    ({"format": "chat"}, r"format='chat'; expected one of auto, alpaca, .*messages"),
])
def test_apply_refuses_bad_arguments_clearly(kwargs, message):
    with pytest.raises(RecipeError, match=message):
        curator.apply(pa.Table.from_pylist(ROWS), **{"stages": ["quality"], **kwargs})


def test_data_whose_columns_fit_two_layouts_is_read_with_format(tmp_path):
    chat = [{"role": "user", "content": "How do I boil an egg?"}, {"role": "assistant", "content": "Simmer it 9 min."}]
    table = pa.table({"prompt": ["stale"], "response": ["stale"], "messages": [chat]})
    with pytest.raises(curator.errors.InputError) as err:  # named as the caller knows the data, with the fix
        curator.apply(table, stages=["quality"])
    assert str(err.value).startswith("the data given to apply: the column layout ['messages', 'prompt', 'response'] "
                                     "is ambiguous") and str(err.value).endswith("Pass format= to curator.apply.")
    assert "data.parquet" not in str(err.value)
    out = curator.apply(table, stages=["quality"], format="messages").to_list()
    assert out[0]["char_len"] == len("How do I boil an egg?") + len("Simmer it 9 min.") and out[0]["status"] == "kept"
    recipe = {"curator": 1, "name": "r", "inputs": [{"path": "x.jsonl"}], "stages": [{"use": "quality"}]}
    assert curator.apply(table, recipe=recipe, format="prompt_response").to_list()[0]["char_len"] == 10


def test_apply_names_what_to_do_with_streamed_and_split_datasets():
    ds = datasets.Dataset.from_list(ROWS)
    with pytest.raises(RecipeError, match=r"got a IterableDataset.*materialise it first"):
        curator.apply(ds.to_iterable_dataset(), stages=["quality"])
    with pytest.raises(RecipeError, match=r"got a DatasetDict \(splits: train, test\); pass one split, e.g. "
                                          r"data\['train'\]"):
        curator.apply(datasets.DatasetDict(train=ds, test=ds), stages=["quality"])


def test_a_float16_column_is_kept_as_float32_and_the_views_read_it(tmp_path):
    import numpy as np
    frame = pd.DataFrame({"prompt": ["a", "b"], "response": ["one", "two"], "w": np.array([0.5, 1.0], np.float16)})
    out = curator.apply(frame, stages=["quality"], run_dir=tmp_path / "run")
    assert out.num_rows == 2 and set(out["status"]) == {"kept"}
    result = curator.RunResult.load(tmp_path / "run")
    assert result.dataset.features["w"].dtype == "float32" and sorted(result.dataset["w"]) == [0.5, 1.0]
    assert result.ledger.num_rows == 2


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


def test_a_dataframe_of_chats_whose_turns_differ_in_shape_is_read(tmp_path):
    chats = [[{"role": "user", "content": [{"type": "text", "text": "hi "}, {"type": "text", "text": "there"}]},
              {"role": "assistant", "content": "hello, how can I help?"}],
             [{"role": "user", "content": "plain question"}, {"role": "assistant", "content": "plain answer"}]]
    out = curator.apply(pd.DataFrame({"messages": chats}), stages=["quality"], run_dir=tmp_path / "run")
    assert out["status"] == ["kept", "kept"]
    prompts = sorted(curator.RunResult.load(tmp_path / "run").dataset["prompt"])
    assert prompts == ["hi there", "plain question"]


def test_a_result_kept_across_a_rerun_of_its_directory_says_so(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "d.jsonl").write_text('{"prompt": "p", "response": "r"}\n')
    recipe = {"curator": 1, "name": "again", "inputs": [{"path": "d.jsonl"}], "stages": [{"use": "quality"}]}
    first = curator.run(recipe, "run", quiet=True)
    assert first.run_dir == tmp_path / "run" and first.ledger.num_rows == 1
    (tmp_path / "d.jsonl").write_text('{"prompt": "p", "response": "r"}\n{"prompt": "q", "response": "s"}\n')
    second = curator.run(recipe, "run", quiet=True)
    for stale in (lambda: first.ledger, lambda: first.scores, lambda: first.dataset):
        with pytest.raises(curator.errors.RunError, match="this result is of an earlier run of the directory"):
            stale()
    assert second.ledger.num_rows == 2 and curator.RunResult.load("run").dataset.num_rows == 2


def test_the_library_functions_take_what_a_python_user_passes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "d.jsonl").write_text('{"prompt": "p", "response": "r"}\n')
    recipe = curator.load_recipe('{curator: 1, name: flow, inputs: [{path: d.jsonl}], stages: [{use: quality}]}')
    assert recipe.name == "flow"  # a one-line flow mapping is YAML, not a path
    curator.run(recipe, "run", quiet=True)
    from curator import gate, query, status
    assert status.run_status("run")["finished"] is True
    assert query.connect(("run",)).sql("SELECT count(*) FROM ledger").fetchall() == [(1,)]
    verdict = gate.evaluate("run", [{"name": "no_drops", "sql": "SELECT count(*) = 0 FROM ledger WHERE status = 'dropped'"}],
                            record=False)
    assert verdict["passed"] is True
