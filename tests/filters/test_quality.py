"""The quality stage's fast Python path equals its Arrow definition, on tricky text too."""

import hashlib
import random

import pyarrow as pa
import pyarrow.compute as pc

from filters.quality import _normalised, row_stats

PIECES = ["a", "B", "  ", "\t", "\n", "\r\n", "\x0b", "\x0c", "\x1c", "\x1f", "\u00a0", "\u2003", "\u205f", "İ", "ß",
          "é", "x1", "```", "-", "", "\x00"]  # "\x00": quality's SEP between the parts of a row's text


def _definition(text: pa.Array) -> tuple[list[str], list[int]]:
    """Each part (between SEP) split on whitespace (``str.split()``: runs, none at the ends), words joined by one
    space, parts by SEP, lower-cased as Arrow lower-cases; its sha1 and its number of words."""
    parts = [t.split("\x00") for t in text.to_pylist()]
    folded = pa.array(["\x00".join(" ".join(p.split()) for p in ps) for ps in parts], pa.string())
    norm = pc.utf8_lower(folded).to_pylist()
    return [hashlib.sha1(t.encode()).hexdigest()[:16] for t in norm], [sum(len(p.split()) for p in ps) for ps in parts]


def test_fast_norm_hash_and_word_count_equal_their_definition():
    rng = random.Random(0)
    texts = ["", " ", "   ", "\n", "a", " a", "a ", "  a  b  ", "\x1ca\x1d", "A\u00a0b", "İ x", "a\n", "a\r\n",
             "Say: hello\x00world", "Say:\x00hello world", "  p \x00 r  ", "\x00doc", "prompt\x00"]
    texts += ["".join(rng.choices(PIECES, k=rng.randint(0, 12))) for _ in range(3000)]
    arr = pa.array(texts, pa.string())
    hashes, counts = _normalised(arr)
    assert (hashes.to_pylist(), counts.to_pylist()) == _definition(arr)
    ascii_only = pa.array([t for t in texts if t.isascii() and t.strip()], pa.string())
    hashes, counts = _normalised(ascii_only)  # the all-fast path
    assert (hashes.to_pylist(), counts.to_pylist()) == _definition(ascii_only)


def test_copies_that_differ_only_in_whitespace_at_their_ends_are_duplicates_and_parts_stay_apart():
    rows = [("Write a haiku", "rain falls"), ("  Write a haiku", "rain falls\n"), ("write a HAIKU ", "rain falls\r\n"),
            ("Say: hello", "world"), ("Say:", "hello world")]
    table = pa.table({"sample_id": [str(i) for i in range(len(rows))], "prompt": [p for p, _ in rows],
                      "response": [r for _, r in rows]})
    stats = row_stats(table)
    hashes = stats.column("norm_hash").to_pylist()
    assert hashes[0] == hashes[1] == hashes[2] and hashes[3] != hashes[4]
    assert stats.column("word_count").to_pylist() == [5, 5, 5, 3, 3]


def test_line_and_word_counts_and_fences_read_as_a_person_would():
    responses = ["one two three", "one two three\n", "a\n\nb\r\nc\rd", "~~~python\nx = 1\n~~~",
                 "Markdown uses ``` to start code.", "```\ncode\n```", "She said:\n-\nnothing", "- item\n- item"]
    table = pa.table({"sample_id": [str(i) for i in range(len(responses))], "prompt": pa.nulls(len(responses), pa.string()),
                      "response": responses})
    stats = row_stats(table)
    assert stats.column("line_count").to_pylist() == [len(r.splitlines()) for r in responses]
    assert stats.column("word_count").to_pylist() == [len(r.split()) for r in responses]  # a text document: no prompt
    assert stats.column("has_code").to_pylist() == [False, False, False, True, False, True, False, False]
    assert stats.column("has_list").to_pylist() == [False] * 6 + [False, True]


def test_duplicates_follow_the_input_position_whatever_the_row_order():
    """``reduce`` marks every row but the first (by input position) of each ``norm_hash``."""
    from pathlib import Path

    from curator.stage import StageContext
    from filters.quality import QualityParams, QualityStage

    rng = random.Random(1)
    n = 5000
    keys = [rng.choice([rng.getrandbits(64), 7, 2**63 + 5]) for _ in range(n)]
    positions = rng.sample(range(10 * n), n)
    parts = pa.table({"_norm_key": pa.array(keys, pa.uint64()), "_position": pa.array(positions, pa.int64())})
    got = QualityStage(QualityParams(), StageContext(Path("."), Path("."))).reduce(parts).column("is_duplicate")
    first = {}
    for k, p in zip(keys, positions):
        first[k] = min(first.get(k, p), p)
    assert got.to_pylist() == [p != first[k] for k, p in zip(keys, positions)]


def test_conversations_that_only_end_alike_are_not_duplicates():
    from pathlib import Path

    from curator.samples import MESSAGE_TYPE
    from curator.stage import StageContext
    from filters.quality import QualityParams, QualityStage

    def convo(*texts):
        roles = ["system", "user", "assistant"][-len(texts):] if len(texts) < 4 else ["user", "assistant"] * 2
        return [{"role": r, "content": t} for r, t in zip(roles, texts)]

    rows = [convo("Be a pirate.", "Thanks!", "You're welcome."), convo("Be formal.", "Thanks!", "You're welcome."),
            convo("BE  A PIRATE.", "thanks!", "You're   welcome."),  # the first one, case and spaces aside
            convo("Thanks!", "You're welcome."), None]
    table = pa.table({"sample_id": list("abcde"), "prompt": ["Thanks!"] * 4 + ["Thanks!"],
                      "response": ["You're welcome."] * 5, "messages": pa.array(rows, MESSAGE_TYPE),
                      "_input_idx": [0] * 5, "_input_row": list(range(5))})
    out = QualityStage(QualityParams(), StageContext(Path("."), Path("."))).process_batch(table)
    assert out.column("is_duplicate").to_pylist() == [False, False, True, False, True]  # the last: same as the 4th
    assert out.column("char_len").to_pylist() == [22] * 5  # still prompt + response
    assert out.column("total_chars").to_pylist() == [34, 32, 37, 22, 22]  # every turn: what a context must hold


def test_total_chars_counts_every_turn_of_a_long_conversation():
    from curator.samples import MESSAGE_TYPE

    long = [{"role": "user", "content": "x" * 5000}, {"role": "assistant", "content": "y" * 5000},
            {"role": "user", "content": "Thanks!"}, {"role": "assistant", "content": "Bye."}]
    table = pa.table({"sample_id": ["a", "b", "c"], "prompt": ["Thanks!", "p", "Hi"], "response": ["Bye.", "r", None],
                      "messages": pa.array([long, None, [{"role": "user", "content": "Hi"}]], MESSAGE_TYPE)})
    out = row_stats(table)
    assert out.column("char_len").to_pylist() == [11, 2, 2]  # the final exchange: a length rule would keep row a
    assert out.column("total_chars").to_pylist() == [10011, 2, 2]


def test_a_one_turn_prompt_hashes_like_the_same_prompt_in_a_prompt_column():
    from pathlib import Path

    from curator.samples import MESSAGE_TYPE
    from curator.stage import StageContext
    from filters.quality import QualityParams, QualityStage

    ask = [{"role": "user", "content": "Say hi"}]
    table = pa.table({"sample_id": ["a", "b", "c"], "prompt": ["Say hi"] * 3, "response": pa.nulls(3, pa.string()),
                      "messages": pa.array([None, ask, [{"role": "system", "content": "x"}, *ask]], MESSAGE_TYPE)})
    out = QualityStage(QualityParams(), StageContext(Path("."), Path("."))).process_batch(table)
    hashes = out.column("norm_hash").to_pylist()
    assert hashes[0] == hashes[1] != hashes[2] and out.column("is_duplicate").to_pylist() == [False, True, False]
