"""Rows a user would lose or see merged: a null or absent prompt is quarantined like an empty one (every layout
with a prompt, files and ``curator.apply``), and with ``normalize: {dedupe: false}`` every exact copy is a sample of
its own (ledger, verdicts, scores)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

import curator
from curator.pipeline import run
from curator.query import run_query
from tests.support import write_jsonl, write_recipe

STAGES = [{"use": "normalize"}, {"use": "quality"}]
GOOD = {"prompt_response": {"prompt": "ok", "response": "fine"},
        "prompt_completion": {"prompt": "ok", "completion": "fine"},
        "alpaca": {"instruction": "ok", "input": "", "output": "fine"},
        "dolly": {"instruction": "ok", "context": "", "response": "fine"}}
PROMPT = {"prompt_response": "prompt", "prompt_completion": "prompt", "alpaca": "instruction", "dolly": "instruction"}


def _run(tmp_path, rows, stages=STAGES, **top):
    write_jsonl(tmp_path / "data.jsonl", rows)
    return run(write_recipe(tmp_path, ["data.jsonl"], stages, shards=2, **top), tmp_path / "run", quiet=True)


def _quarantine(tmp_path):
    return run_query([tmp_path / "run"], "SELECT input_row, reason, raw FROM quarantine ORDER BY 1").to_pylist()


@pytest.mark.parametrize("layout", sorted(GOOD))
def test_a_null_or_absent_prompt_is_quarantined_in_every_layout_with_a_prompt(layout, tmp_path):
    col = PROMPT[layout]
    null = {**GOOD[layout], col: None}
    absent = {k: v for k, v in GOOD[layout].items() if k != col}
    res = _run(tmp_path, [GOOD[layout], null, absent])
    assert (res.counts["kept"], res.counts["quarantined"]) == (1, 2)
    reason = f"missing prompt: column '{col}' is null or absent"
    assert [(q["input_row"], q["reason"]) for q in _quarantine(tmp_path)] == [(1, reason), (2, reason)]


@pytest.mark.parametrize("layout,extra", [("alpaca", "input"), ("dolly", "context")])
def test_a_null_instruction_is_quarantined_with_its_input_text_not_dropped(layout, extra, tmp_path):
    row = {**GOOD[layout], "instruction": None, extra: "Translate: bonjour"}
    res = _run(tmp_path, [GOOD[layout], row])
    assert res.counts["quarantined"] == 1
    (q,) = _quarantine(tmp_path)
    assert q["reason"] == "missing prompt: column 'instruction' is null or absent"
    assert json.loads(q["raw"])[extra] == "Translate: bonjour"  # the text the row held is in quarantine/


def test_a_null_prompt_no_longer_fails_a_messages_export(tmp_path):
    res = _run(tmp_path, [{"prompt": None, "response": "orphan answer"}, {"prompt": "ok", "response": "fine"}],
               output={"format": "messages"})
    assert (res.counts["kept"], res.counts["quarantined"]) == (1, 1)
    assert res.dataset["messages"] == [[{"role": "user", "content": "ok"}, {"role": "assistant", "content": "fine"}]]


def test_apply_quarantines_none_and_nan_prompts(tmp_path):
    df = pd.DataFrame({"prompt": ["ok", None, np.nan], "response": ["fine", "a", "b"]})
    out = curator.apply(df, stages=["quality"], run_dir=tmp_path / "run")
    assert out["status"] == ["kept", "quarantined", "quarantined"]
    assert out["status_reason"][1:] == ["missing prompt: column 'prompt' is null or absent"] * 2


DEDUPE_OFF = [{"use": "normalize", "with": {"dedupe": False}}, {"use": "quality"},
              {"use": "decide", "with": {"flag_if": ["is_duplicate"]}}]


def test_dedupe_false_keeps_every_copy_as_its_own_sample(tmp_path):
    rows = [{"prompt": "Say hi", "response": "hi"}, {"prompt": "Say hi", "response": "hi"},
            {"prompt": "other", "response": "x"}]
    res = _run(tmp_path, rows, DEDUPE_OFF)
    runs = [tmp_path / "run"]
    ledger = run_query(runs, "SELECT input_row, status FROM ledger ORDER BY 1").to_pylist()
    assert ledger == [{"input_row": 0, "status": "kept"}, {"input_row": 1, "status": "flagged"},
                      {"input_row": 2, "status": "kept"}]
    assert run_query(runs, "SELECT count(*) AS n FROM scores").to_pylist() == [{"n": 3}]
    assert run_query(runs, "SELECT count(*) AS n FROM samples JOIN scores USING (sample_id)").to_pylist() == [{"n": 3}]
    assert len(set(res.dataset["sample_id"])) == 3
    (tmp_path / "default").mkdir()
    deduped = _run(tmp_path / "default", rows, DEDUPE_OFF[1:])
    assert set(deduped.dataset["sample_id"]) < set(res.dataset["sample_id"])  # first copies keep their content id


def test_dedupe_false_ids_are_the_same_however_the_file_is_cut(tmp_path, monkeypatch):
    from curator import readers

    rows = [{"prompt": f"p{i % 3}", "response": "r"} for i in range(40)]
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    whole = _run(tmp_path / "a", rows, DEDUPE_OFF)
    monkeypatch.setattr(readers, "BLOCK_BYTES", 100)
    monkeypatch.setattr(readers, "PART_BYTES", 300)  # a file this large would be read in parts
    cut = _run(tmp_path / "b", rows, DEDUPE_OFF)
    assert cut.digest == whole.digest and whole.counts["flagged"] == 37
