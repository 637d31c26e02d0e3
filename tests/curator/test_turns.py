"""Conversations read with Arrow kernels (``curator.turns``) give what the row-by-row reader gives: the same
messages, prompt, response, error wording, sample ids and lengths, for clean and broken rows alike."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.json as paj
import pytest

from curator.samples import _ends_with_user, _id_of, _parse_turns, adapt, sample_ids
from curator.turns import MESSAGE_TYPE, ends_with_user, turn_chars

U, A, S = "user", "assistant", "system"
TEXTS = ["plain", 'quote " and \\ slash', "tab\tnew\nline\rcr", "ünïcödé ✓ 中文 🙂", "ctrl \x01 \x1f", "", " "]


def turn(role, content, **extra):
    return {"role": role, "content": content, **extra}


MESSAGES_ROWS = [
    [turn(U, "hi"), turn(A, "hello")],
    [turn(S, "be brief"), turn(U, "first"), turn(A, "a"), turn(U, "second"), turn(A, "b")],
    *[[turn(U, t), turn(A, t2)] for t in TEXTS for t2 in TEXTS[::3]],
    [turn("tool", "42"), turn(U, "and?"), turn(A, "done")],
    [turn(U, "only a question")],                      # ends with the user's turn
    [turn(A, "no user")],                              # no user turn
    [],                                                # empty
    None,                                              # null row
    [turn(U, "x"), None, turn(A, "y")],                # a turn that is not an object
    [turn(U, "x"), turn("bot", "y")],                  # unknown role
    [turn(U, "x"), turn(None, "y")],                   # null role
    [turn(U, "x"), turn(A, None)],                     # content not a string
    [turn(U, "x", name="ann"), {"role": A}],           # a missing key (another row has an extra one)
    [turn(S, "s"), turn(U, "q"), turn(A, "r"), turn(A, "r2")],
]


def reference(raw_rows: list, sharegpt: bool, last: str) -> list[tuple]:
    """What the row-by-row reader gives: (messages, prompt, response, reason) per row."""
    out = []
    for raw in raw_rows:
        try:
            turns = _parse_turns(raw, sharegpt, last)
        except ValueError as exc:
            out.append((None, None, None, f"malformed messages: {exc}"))
            continue
        asked = turns if last == "user" else turns[:-1]
        prompt = next((t["content"] for t in reversed(asked) if t["role"] == "user"), None)
        out.append((turns, prompt, None if last == "user" else turns[-1]["content"], None))
    return out


def check(table: pa.Table, col: str, fmt: str, last: str = "assistant") -> pa.Table:
    got = adapt(table, fmt, "s", "f")
    want = reference(table.column(col).to_pylist(), fmt == "sharegpt", last)
    assert got.column("messages").to_pylist() == [w[0] for w in want]
    assert got.column("prompt").to_pylist() == [w[1] for w in want]
    assert got.column("response").to_pylist() == [w[2] for w in want]
    assert got.column("_bad_reason").to_pylist() == [w[3] for w in want]
    ids = sample_ids(got).to_pylist()
    assert ids == [_id_of(w[1], w[2], w[0]) for w in want]
    assert turn_chars(got.column("messages").combine_chunks()).tolist() == \
        [sum(len(t["content"]) for t in w[0]) if w[0] else 0 for w in want]
    return got


def from_jsonl(rows: list[dict], tmp_path) -> pa.Table:
    """The table the JSON reader makes of ``rows`` (a list of structs, as a real input file gives)."""
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), "utf-8")
    return paj.read_json(path)


def test_messages_from_a_jsonl_file_read_as_the_row_reader_reads_them(tmp_path):
    table = from_jsonl([{"messages": m} for m in MESSAGES_ROWS], tmp_path)
    assert pa.types.is_list(table.column("messages").type)  # the Arrow path is the one under test
    got = check(table, "messages", "messages")
    assert got.column("_bad_reason").null_count < got.num_rows < 2 * got.column("_bad_reason").null_count
    check(table.slice(3, 20), "messages", "messages")  # a slice: offsets that do not start at zero


def test_sharegpt_roles_are_mapped_and_its_own_keys_win(tmp_path):
    rows = [[{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}],
            [{"from": "system", "value": "s"}, {"from": "human", "value": "q"}, {"from": "function", "value": "f"},
             {"from": "gpt", "value": "a"}],
            [{"from": "human", "value": "q"}, {"from": "bot", "value": "a"}],
            [{"from": "human", "value": "q"}, {"role": "assistant", "content": "a"}],  # 'from' exists: null role
            [{"from": "human", "value": 1}, {"from": "gpt", "value": 3}]]  # numbers: read row by row
    table = from_jsonl([{"conversations": r} for r in rows[:4]], tmp_path)
    got = check(table, "conversations", "sharegpt")
    assert got.column("response").to_pylist()[:2] == ["a", "a"]
    check(from_jsonl([{"conversations": r} for r in rows[-1:]], tmp_path), "conversations", "sharegpt")


def test_prompt_only_conversations(tmp_path):
    rows = [[turn(S, "s"), turn(U, "q1"), turn(A, "a"), turn(U, "q2")], [turn(U, "q")]]
    table = from_jsonl([{"messages": m} for m in rows], tmp_path)
    assert ends_with_user(table.column("messages").combine_chunks()) is True
    got = adapt(table, "auto", "s", "f")
    assert got.column("prompt").to_pylist() == ["q2", "q"] and got.column("response").null_count == 2
    check(table, "messages", "prompts", last="user")
    mixed = from_jsonl([{"messages": m} for m in [*rows, [turn(U, "q"), turn(A, "a")]]], tmp_path)
    assert ends_with_user(mixed.column("messages").combine_chunks()) is False


@pytest.mark.parametrize("column", [
    pa.array([[turn(U, "q")], None]),
    pa.array([[turn(U, "q")], []]),
    pa.array([[{"content": "q"}]]),
    pa.array([[None]], pa.list_(pa.struct([("role", pa.string())]))),
    pa.array(["[]"]),
])
def test_ends_with_user_agrees_with_the_row_check(column):
    rows = column.to_pylist()
    want = bool(rows) and all(isinstance(m, list) and m and isinstance(m[-1], dict) and m[-1].get("role") == "user"
                              for m in rows)
    assert _ends_with_user(pa.chunked_array([column])) == want


def test_conversations_stored_as_json_text_still_read_row_by_row():
    parts = [turn(U, [{"type": "text", "text": "q"}]), turn(A, "a")]  # OpenAI content parts
    text = pa.table({"messages": [json.dumps([turn(U, "q"), turn(A, "a")]), "[not json", None, json.dumps(parts)]})
    got = check(text, "messages", "messages")
    assert got.column("prompt").to_pylist()[0] == "q"
    assert got.column("messages").to_pylist()[3] == [turn(U, "q"), turn(A, "a")]  # text parts read as a string


@pytest.mark.parametrize("content, reason", [
    ([{"type": "text", "text": "Hel"}, {"type": "text", "text": "lo"}], None),
    ([], None),
    ([{"type": "text", "text": "q"}, {"type": "image_url", "image_url": {"url": "http://x/y.png"}}],
     "turn 0 has a content part of type 'image_url'"),
    ([{"type": "text"}], "turn 0 has a content part that is not"),
    (["plain string part"], "turn 0 has a content part that is not"),
])
def test_openai_text_parts_are_read_and_other_parts_quarantined(content, reason):
    rows = [[turn(U, content), turn(A, [{"type": "text", "text": "a"}])],
            [turn(U, "q"), {"role": "assistant", "content": None, "tool_calls": [{"id": "1", "type": "function"}]}]]
    got = check(pa.table({"messages": [json.dumps(r) for r in rows]}), "messages", "messages")
    reasons = got.column("_bad_reason").to_pylist()
    assert "turn 1 holds tool calls" in reasons[1]
    if reason is None:
        assert reasons[0] is None
        text = "".join(p["text"] for p in content)
        assert got.column("prompt").to_pylist()[0] == text and got.column("response").to_pylist()[0] == "a"
        assert got.column("messages").to_pylist()[0] == [turn(U, text), turn(A, "a")]
    else:
        assert reason in reasons[0]


def test_patterns_search_every_turn_of_a_conversation():
    from pathlib import Path

    from curator.stage import StageContext
    from filters.patterns import PatternsParams, PatternsStage

    convo = [{"role": "system", "content": "mail ops@example.com"}, {"role": "user", "content": "hi"},
             {"role": "assistant", "content": "see https://example.com"}]
    table = pa.table({"sample_id": ["c", "p"], "prompt": ["hi", "write to a@b.io"], "response": ["see https://x.io", "ok"],
                      "messages": pa.array([convo, None], MESSAGE_TYPE)})
    stage = PatternsStage(PatternsParams(), StageContext(Path("."), Path(".")))
    out = stage.process_batch(table.to_batches()[0]).to_pylist()
    assert [(r["pat_email"], r["pat_url"]) for r in out] == [(1, 1), (1, 0)]
    assert stage.process_batch(table.drop_columns(["messages"]).to_batches()[0]).column("pat_email").to_pylist() == [0, 1]


def test_a_chat_file_with_text_parts_reaches_the_dataset_as_strings(tmp_path):
    import datasets

    from curator.pipeline import run
    from tests.support import write_recipe

    rows = [{"messages": [turn(U, "plain question"), turn(A, "plain answer")]},
            {"messages": [turn(S, [{"type": "text", "text": "Be brief."}]),
                          turn(U, [{"type": "text", "text": "Part one. "}, {"type": "text", "text": "Part two."}]),
                          turn(A, [{"type": "text", "text": "An answer."}])]},
            {"messages": [turn(U, [{"type": "image_url", "image_url": {"url": "http://x/y.png"}}]), turn(A, "a")]}]
    path = tmp_path / "chat.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    res = run(write_recipe(tmp_path, [str(path)], [{"use": "normalize"}], shards=1), tmp_path / "run", quiet=True)
    assert res.counts["quarantined"] == 1
    got = sorted(datasets.load_from_disk(str(tmp_path / "run" / "dataset")).to_list(), key=lambda r: r["prompt"])
    assert [r["prompt"] for r in got] == ["Part one. Part two.", "plain question"]
    assert got[0]["messages"] == [turn(S, "Be brief."), turn(U, "Part one. Part two."), turn(A, "An answer.")]


def test_turns_with_tool_calls_are_quarantined_not_stripped():
    """A typed column with a ``tool_calls`` field: the canonical turns cannot hold the calls, so such rows are
    malformed (the fast reader must not drop the field silently); rows whose calls are null or empty read."""
    call = [{"id": "c1", "type": "function", "function": {"name": "w", "arguments": "{}"}}]
    rows = [[turn(U, "weather?"), turn(A, "Checking.", tool_calls=call), turn("tool", "sunny"), turn(A, "Sunny.")],
            [turn(U, "hi"), turn(A, "hello", tool_calls=[])],
            [turn(U, "hi"), turn(A, "hello", tool_calls=None)]]
    got = check(pa.table({"messages": rows}), "messages", "messages")
    reasons = got.column("_bad_reason").to_pylist()
    assert "turn 1 holds tool calls" in reasons[0]
    assert reasons[1:] == [None, None]
    assert got.column("response").to_pylist()[1:] == ["hello", "hello"]
