"""``output:``: the dataset's layout (messages / prompt_completion / text / table) with provenance and scores."""

import datasets
import pyarrow as pa
import pytest

from curator.errors import RecipeError
from curator.export import OutputSpec, export
from curator.pipeline import run
from curator.recipe import load_recipe
from curator.samples import MESSAGE_TYPE
from tests.support import ENGINE_STAGES, synthetic_rows, write_jsonl, write_recipe

CONVO = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"},
         {"role": "assistant", "content": "hello"}]
ROWS = pa.table({"sample_id": ["a", "b"], "prompt": ["What is 2+2?", "hi"], "response": ["4", "hello"],
                 "messages": pa.array([None, CONVO], MESSAGE_TYPE), "source": ["s", "t"],
                 "parent_id": [None, "p"], "rebalance_role": [None, "benign"], "extra": [1, 2]})


def test_messages_rows_are_conversations_with_provenance():
    out = export(ROWS, OutputSpec("messages")).to_pylist()
    assert out[0] == {"messages": [{"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": "4"}],
                      "sample_id": "a", "source": "s", "parent_id": None, "rebalance_role": None}
    assert out[1]["messages"] == CONVO and out[1]["rebalance_role"] == "benign"


def test_prompt_completion_conversational_and_plain():
    conv = export(ROWS, OutputSpec("prompt_completion")).to_pylist()
    assert conv[0]["prompt"] == [{"role": "user", "content": "What is 2+2?"}]
    assert conv[0]["completion"] == [{"role": "assistant", "content": "4"}]
    assert conv[1]["prompt"] == CONVO[:2] and conv[1]["completion"] == CONVO[2:]
    with pytest.raises(RecipeError, match="1 dataset row.* multi-turn.*format: messages"):
        export(ROWS, OutputSpec("prompt_completion", conversational=False))
    plain = export(ROWS.slice(0, 1), OutputSpec("prompt_completion", conversational=False)).to_pylist()
    assert plain[0]["prompt"] == "What is 2+2?" and plain[0]["completion"] == "4"


def test_text_holds_documents_only_and_table_everything():
    docs = pa.table({"sample_id": ["d"], "prompt": pa.nulls(1, pa.string()), "response": ["A document."],
                     "source": ["web"]})
    assert export(docs, OutputSpec("text")).to_pylist() == [
        {"text": "A document.", "sample_id": "d", "source": "web", "parent_id": None, "rebalance_role": None}]
    with pytest.raises(RecipeError, match="conversations .*format: messages"):
        export(ROWS, OutputSpec("text"))
    with pytest.raises(RecipeError, match="documents without a prompt.*format: text"):
        export(docs, OutputSpec("messages"))
    assert export(ROWS, OutputSpec("table")) is ROWS


def test_recipe_output_keys_are_checked():
    base = {"curator": 1, "name": "t", "inputs": ["x.jsonl"], "stages": [{"use": "normalize"}]}
    assert load_recipe({**base, "output": {"format": "messages", "scores": ["char_len"]}}).output.scores == ("char_len",)
    with pytest.raises(RecipeError, match="output.format"):
        load_recipe({**base, "output": {"format": "chatml"}})


def test_a_run_exports_messages_with_requested_scores(tmp_path):
    write_jsonl(tmp_path / "data.jsonl", synthetic_rows(40))
    stages = [s for s in ENGINE_STAGES if s["use"] != "patterns"]
    rec = write_recipe(tmp_path, ["data.jsonl"], stages, shards=3,
                       output={"format": "messages", "scores": ["char_len", "word_count"]})
    res = run(rec, tmp_path / "run", quiet=True)
    ds = datasets.load_from_disk(str(tmp_path / "run" / "dataset"))
    assert ds.column_names == ["messages", "sample_id", "source", "parent_id", "rebalance_role", "char_len",
                               "word_count"]
    assert len(ds) == res.counts["kept"] + res.counts["flagged"]
    row = ds[0]
    assert [t["role"] for t in row["messages"]] == ["user", "assistant"] and row["char_len"] > 0
    bad = write_recipe(tmp_path, ["data.jsonl"], stages, shards=3, output={"format": "messages", "scores": ["nope"]})
    with pytest.raises(RecipeError, match=r"no score stage of this recipe provides \['nope'\].*char_len"):
        run(bad, tmp_path / "run", quiet=True)


def test_conversations_split_into_prompt_and_completion_turn_by_turn():
    """Every turn before the last is the prompt, the last the completion; only [user, assistant] is single-turn."""
    from curator.export import _single_turn, _split_messages

    u, a, s = ({"role": r, "content": r[0] * (i + 1)} for i, r in enumerate(("user", "assistant", "system")))
    convos = [[u, a], [s, u, a], [u, a, u, a], [u], [a, u], [s, u, a, u, u, a]]
    column = pa.array([[], *convos, None], MESSAGE_TYPE).slice(1, len(convos))  # offsets not starting at 0
    head, last = _split_messages(column)
    assert head.to_pylist() == [c[:-1] for c in convos] and last.to_pylist() == [c[-1:] for c in convos]
    with_null = pa.array([*convos, None], MESSAGE_TYPE)
    assert _single_turn(with_null).to_pylist() == [True, False, False, False, False, False, True]


def test_flagged_drop_leaves_flagged_rows_out_of_the_dataset_and_verify_agrees(tmp_path):
    from curator.manifest import verify
    from curator.pipeline import run
    from tests.support import synthetic_rows, write_jsonl, write_recipe
    write_jsonl(tmp_path / "d.jsonl", synthetic_rows(40))
    stages = [{"use": "normalize"}, {"use": "quality"},
              {"use": "decide", "with": {"flag_if": ["char_len > quantile(char_len, 0.5)"]}}]
    keep = run(write_recipe(tmp_path, ["d.jsonl"], stages, shards=2), tmp_path / "keep", quiet=True)
    drop = run(write_recipe(tmp_path, ["d.jsonl"], stages, shards=2, output={"flagged": "drop"}), tmp_path / "drop",
               quiet=True)
    assert keep.counts == drop.counts and drop.counts["flagged"] > 0
    assert keep.dataset.num_rows == keep.counts["kept"] + keep.counts["flagged"]
    assert drop.dataset.num_rows == drop.counts["kept"]
    flagged = {r["sample_id"] for r in drop.ledger.to_pylist() if r["status"] == "flagged"}
    assert not flagged & set(drop.dataset["sample_id"]) and flagged <= set(keep.dataset["sample_id"])
    assert verify(drop.run_dir) == [] and verify(keep.run_dir) == []
