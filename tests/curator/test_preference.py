"""Preference data (TRL's DPO rows: ``prompt``, ``chosen``, ``rejected``) is read, scored on its chosen answer and
written back as preference pairs; it used to be read as prompts alone, so its dataset came out empty."""

from __future__ import annotations

import datasets
import pytest

from curator.errors import RecipeError
from curator.pipeline import run
from tests.support import write_jsonl, write_recipe

PAIRS = [
    {"prompt": "How do I bake bread?", "chosen": "Mix flour, water and yeast, knead, rise, bake.", "rejected": "No."},
    {"prompt": "Say hi", "chosen": "Hello!", "rejected": "Go away."},
    {"prompt": "Say hi", "chosen": "Hello!", "rejected": "Whatever."},  # another pair for the same answer
    {"prompt": "Say hi", "chosen": "Hello!", "rejected": "Go away."},  # an exact copy of the second
    {"prompt": "Say hi", "chosen": "Hello!", "rejected": ["not", "text"]},
]
STAGES = [{"use": "normalize"}, {"use": "quality"}, {"use": "decide", "with": {"drop_if": ["is_duplicate"]}}]


def _run(tmp_path, output=None, rows=PAIRS):
    write_jsonl(tmp_path / "dpo.jsonl", rows)
    extra = {"output": output} if output else {}
    result = run(write_recipe(tmp_path, ["dpo.jsonl"], STAGES, shards=2, **extra), tmp_path / "run", quiet=True)
    return result, datasets.load_from_disk(str(tmp_path / "run" / "dataset"))


def test_preference_rows_are_scored_on_their_chosen_answer_and_keep_the_rejected_one(tmp_path):
    result, ds = _run(tmp_path)
    assert result.counts == {"rows_in": 5, "kept": 3, "dropped": 1, "flagged": 0, "quarantined": 1, "probe": 0,
                             "added": 0}
    rows = sorted(ds.to_list(), key=lambda r: r["rejected"])
    assert [(r["prompt"], r["response"], r["rejected"]) for r in rows] == [
        ("Say hi", "Hello!", "Go away."), ("How do I bake bread?", PAIRS[0]["chosen"], "No."),
        ("Say hi", "Hello!", "Whatever.")]
    assert len({r["sample_id"] for r in rows}) == 3  # pairs that differ only in their rejected answer differ


def test_the_preference_output_is_what_trls_dpo_trainer_reads(tmp_path):
    _, ds = _run(tmp_path, output={"format": "preference", "scores": ["char_len"]})
    assert set(ds.column_names) == {"prompt", "chosen", "rejected", "sample_id", "source", "parent_id",
                                    "rebalance_role", "char_len"}
    assert sorted(ds["rejected"]) == ["Go away.", "No.", "Whatever."]
    assert all(isinstance(v, str) for v in ds["chosen"])


def test_rows_that_are_not_pairs_cannot_be_written_as_preference(tmp_path):
    write_jsonl(tmp_path / "sft.jsonl", [{"prompt": "q", "response": "a"}])
    write_jsonl(tmp_path / "dpo.jsonl", PAIRS[:2])
    recipe = write_recipe(tmp_path, ["sft.jsonl", "dpo.jsonl"], STAGES, output={"format": "preference"})
    with pytest.raises(RecipeError, match=r"output format 'preference': 1 dataset row\(s\) are not preference pairs"):
        run(recipe, tmp_path / "run", quiet=True)


def test_conversational_pairs_in_trl_and_ultrafeedback_layouts(tmp_path):
    user = {"role": "user", "content": "Say hi"}
    rows = [
        {"prompt": [user], "chosen": [{"role": "assistant", "content": "Hello!"}],  # TRL conversational
         "rejected": [{"role": "assistant", "content": "Go away."}]},
        {"prompt": "Say hi", "chosen": [user, {"role": "assistant", "content": "Hi there!"}],  # UltraFeedback
         "rejected": [user, {"role": "assistant", "content": "No."}]},
        {"prompt": "Say hi", "chosen": [user, {"role": "assistant", "content": "Hi there!"}],
         "rejected": [user, {"role": "assistant", "content": "Whatever."}]},
    ]
    result, ds = _run(tmp_path, rows=rows)
    assert result.counts["kept"] == 3 and result.counts["quarantined"] == 0
    assert sorted(ds["response"]) == ["Hello!", "Hi there!", "Hi there!"] and set(ds["prompt"]) == {"Say hi"}
    (tmp_path / "run").rename(tmp_path / "table")
    _, out = _run(tmp_path, output={"format": "preference"}, rows=rows)
    pairs = sorted((r["prompt"][-1]["content"], r["chosen"][0]["content"], r["rejected"][0]["content"]) for r in out)
    assert pairs == [("Say hi", "Hello!", "Go away."), ("Say hi", "Hi there!", "No."),
                     ("Say hi", "Hi there!", "Whatever.")]
    assert all(r["chosen"][0]["role"] == r["rejected"][0]["role"] == "assistant" for r in out)


def test_a_file_mixing_string_and_conversational_pairs_is_read_row_by_row(tmp_path):
    user = {"role": "user", "content": "Say hi"}
    rows = [{"prompt": "Say hi", "chosen": "Hello!", "rejected": "Go away."},
            {"prompt": [user], "chosen": [{"role": "assistant", "content": "Hey!"}],
             "rejected": [{"role": "assistant", "content": "No."}]}]
    result, ds = _run(tmp_path, rows=rows)  # JSONL keeps the lists of a mixed column as tagged text
    assert result.counts["kept"] == 2 and sorted(ds["response"]) == ["Hello!", "Hey!"]
    assert set(ds["prompt"]) == {"Say hi"}
    (tmp_path / "run").rename(tmp_path / "table")
    _, out = _run(tmp_path, output={"format": "preference"}, rows=rows)
    assert sorted(r["rejected"][0]["content"] for r in out) == ["Go away.", "No."]


def test_pii_in_a_rejected_answer_is_counted(tmp_path):
    rows = [{"prompt": "Contact?", "chosen": "I can't share that.", "rejected": "Mail jane.doe@example.com now."},
            {"prompt": "Hi", "chosen": "Hello!", "rejected": "Go away."}]
    write_jsonl(tmp_path / "dpo.jsonl", rows)
    stages = [{"use": "normalize"}, {"use": "patterns"}, {"use": "decide", "with": {"drop_if": ["pat_email > 0"]}}]
    run(write_recipe(tmp_path, ["dpo.jsonl"], stages), tmp_path / "run", quiet=True)
    assert datasets.load_from_disk(str(tmp_path / "run" / "dataset"))["prompt"] == ["Hi"]


def test_a_rejected_column_outside_preference_data_is_kept_as_input_rejected(tmp_path):
    rows = [{"prompt": "q", "response": "a", "rejected": True}, {"prompt": "q", "response": "a", "rejected": False}]
    write_jsonl(tmp_path / "sft.jsonl", rows)  # a moderation flag, say: not an answer the stages should read
    stages = [{"use": "normalize"}, {"use": "quality"}, {"use": "patterns"}]
    result = run(write_recipe(tmp_path, ["sft.jsonl"], stages), tmp_path / "run", quiet=True)
    ds = datasets.load_from_disk(str(tmp_path / "run" / "dataset"))
    assert "rejected" not in ds.column_names and ds["input_rejected"] == [True]
    assert result.counts["dropped"] == 1  # the second row is an exact copy of the first's prompt and response


def test_an_empty_rejected_conversation_is_not_a_pair():
    import pyarrow as pa

    from curator.export import OutputSpec, export
    from curator.samples import MESSAGE_TYPE

    chat = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "x"}]
    rows = pa.table({"prompt": ["a", "a"], "response": ["x", "x"], "messages": pa.array([chat, chat], MESSAGE_TYPE),
                     "rejected": pa.array([[{"role": "assistant", "content": "no"}], []], MESSAGE_TYPE)})
    with pytest.raises(RecipeError, match=r"1 dataset row\(s\) are not preference pairs"):
        export(rows, OutputSpec(format="preference"))
