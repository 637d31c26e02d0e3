"""``normalize`` removes what a reader cannot see (C1 controls, soft hyphens, zero-width spaces, word joiners,
stray byte-order marks) but keeps the joiners that shape text, so look-alike copies are exact duplicates and a
text of invisible characters only is empty; a conversation with an empty user or assistant turn is malformed."""

import json

import pyarrow.parquet as pq

from curator.pipeline import run
from tests.support import write_recipe


def _run(tmp_path, rows: list[dict]):
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    run(write_recipe(tmp_path, ["d.jsonl"], [{"use": "normalize"}], shards=1), tmp_path / "run", quiet=True)
    ledger = pq.read_table(tmp_path / "run" / "ledger").sort_by("input_row")
    kept = pq.read_table(tmp_path / "run" / "input").sort_by("_input_row")
    return [(r["status"], r["reason"]) for r in ledger.to_pylist()], kept


def test_invisible_characters_are_removed_and_joiners_kept(tmp_path):
    rows = [{"prompt": "Say hello", "response": "hello world"},
            {"prompt": "Say hel\u00adlo", "response": "hel\u200blo\u2060 world\ufeff"},  # the first, once cleaned
            {"prompt": "Family", "response": "emoji \U0001F468\u200d\U0001F469\u200d\U0001F467 and \u0645\u200c\u0627"},
            {"prompt": "Controls", "response": "next\x85line csi\x9bhere"},
            {"prompt": "Invisible", "response": "\u200b\u200b\ufeff"}]
    ledger, kept = _run(tmp_path, rows)
    assert ledger == [("kept", None), ("dropped", "duplicate"), ("kept", None), ("kept", None),
                      ("quarantined", "empty response")]
    responses = kept.column("response").to_pylist()
    assert responses == ["hello world", rows[2]["response"], "next\x85line csihere"]


def test_an_empty_turn_inside_a_conversation_is_malformed(tmp_path):
    def chat(*turns):
        return {"messages": [{"role": r, "content": c} for r, c in turns]}
    rows = [chat(("system", ""), ("user", "q5"), ("assistant", ""), ("user", "q6"), ("assistant", "a6")),
            chat(("system", ""), ("user", "q1"), ("assistant", "a1")),  # an empty system prompt is fine
            chat(("user", "\u200b"), ("assistant", "a1"), ("user", "q2"), ("assistant", "a2"))]
    ledger, _ = _run(tmp_path, rows)
    assert ledger == [("quarantined", "malformed messages: a user or assistant turn has no text"), ("kept", None),
                      ("quarantined", "malformed messages: a user or assistant turn has no text")]
