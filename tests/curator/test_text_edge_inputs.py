"""Text inputs with a byte-order mark, lone surrogate escapes, rows of the wrong width, or no good row at all:
every good row is kept, every bad row quarantined with its number and reason, never a failed file."""

import json

import pyarrow.parquet as pq
import pytest

from curator import readers
from curator.pipeline import run
from tests.support import write_recipe


def _run(tmp_path, name: str, data: bytes):
    (tmp_path / name).write_bytes(data)
    res = run(write_recipe(tmp_path, [name], [{"use": "normalize"}], shards=2), tmp_path / "run", quiet=True)
    quarantine = pq.read_table(tmp_path / "run" / "quarantine").sort_by("input_row")
    samples = (pq.read_table(tmp_path / "run" / "input").sort_by("prompt").column("prompt").to_pylist()
               if (tmp_path / "run" / "input").exists() else [])  # (no good row: no input shard)
    return res, quarantine.select(["input_row", "reason"]).to_pylist(), samples


def _line(prompt: str, response: str = "r") -> bytes:
    return (json.dumps({"prompt": prompt, "response": response}) + "\n").encode()


def test_a_bom_before_the_first_row_is_not_a_bad_row(tmp_path):
    res, bad, prompts = _run(tmp_path, "d.jsonl", readers.BOM + _line("first") + b'{"prompt": "cut\n' + _line("third"))
    assert prompts == ["first", "third"] and [b["input_row"] for b in bad] == [1]
    (tmp_path / "array").mkdir()
    res, bad, prompts = _run(tmp_path / "array", "d.json", readers.BOM + json.dumps([{"prompt": "a", "response": "r"}]).encode())
    assert prompts == ["a"] and bad == []


def test_a_lone_surrogate_escape_quarantines_its_row_only(tmp_path):
    data = b'{"prompt": "half \\ud800 pair", "response": "r"}\n' + _line("emoji \U0001F600") + \
        b'{"prompt": "pair \\ud83d\\ude00", "response": "r2"}\n'
    res, bad, prompts = _run(tmp_path, "d.jsonl", data)
    assert prompts == ["emoji \U0001F600", "pair \U0001F600"]
    assert bad == [{"input_row": 0, "reason": "invalid Unicode: a lone surrogate escape (\\ud800) is not a character; "
                                              "fix the escape or remove it"}]


def test_a_lone_surrogate_in_a_json_array_quarantines_its_element_only(tmp_path):
    data = b'[{"prompt": "half \\udc00", "response": "r"}, {"prompt": "fine", "response": "r"}, 7]'
    res, bad, prompts = _run(tmp_path, "d.json", data)
    assert prompts == ["fine"] and [(b["input_row"], b["reason"][:15]) for b in bad] == [
        (0, "invalid Unicode"), (2, "not a JSON obje")]


def test_a_file_of_bad_lines_only_is_all_quarantined(tmp_path):
    res, bad, prompts = _run(tmp_path, "d.jsonl", b'{"prompt": \nnot json\n[1]\n')
    assert res.counts == {**res.counts, "rows_in": 3, "quarantined": 3, "kept": 0} and prompts == []
    assert [b["input_row"] for b in bad] == [0, 1, 2]


def test_csv_rows_of_the_wrong_width_or_bad_utf8_are_quarantined_by_row(tmp_path):
    data = b'prompt,response\na,b\n\n"multi\nline",x\nc,d,e\nf\n"q ""quoted""",\xff\xfe\ng,h\n'
    res, bad, prompts = _run(tmp_path, "d.csv", data)
    assert prompts == ["a", "g", "multi\nline"]
    assert bad == [{"input_row": 2, "reason": "3 field(s), the header has 2"},
                   {"input_row": 3, "reason": "1 field(s), the header has 2"},
                   {"input_row": 4, "reason": "invalid UTF-8"}]


@pytest.mark.parametrize("newline", [b"\n", b"\r\n"])
def test_the_row_by_row_csv_path_reads_what_arrow_reads(tmp_path, newline):
    rows = [b"prompt,response,extra", b'plain,"with, comma",', b'"line\nbreak","say ""hi""",x', b"", b"last,,"]
    path = tmp_path / "d.csv"
    path.write_bytes(readers.BOM + newline.join(rows) + newline)
    arrow = [b for b in readers._csv_blocks(path, ",") if not isinstance(b, readers.Restart)]
    by_row, bad = readers._read_csv_rows(path, ",")
    assert bad == [] and len(arrow) == 1
    assert by_row.drop_columns(["_file_row"]).to_pylist() == arrow[0].table.to_pylist()
    assert by_row.column("_file_row").to_pylist() == arrow[0].rows.to_pylist() == [0, 1, 2]


def test_a_pass_through_column_of_mixed_json_types_reaches_the_dataset_as_text(tmp_path):
    import datasets

    data = b"".join(json.dumps({"prompt": p, "response": "r", "meta": m}, ensure_ascii=False).encode() + b"\n"
                    for p, m in [("a", {"k": "\u00e9"}), ("b", "plain"), ("c", [1, 2]), ("d", None), ("e", 3)])
    _run(tmp_path, "d.jsonl", data)
    rows = sorted(datasets.load_from_disk(str(tmp_path / "run" / "dataset")).to_list(), key=lambda r: r["prompt"])
    assert [r["meta"] for r in rows] == ['{"k": "\\u00e9"}', "plain", "[1, 2]", None, "3"]


def test_conversations_stored_as_json_text_are_read_as_turns(tmp_path):
    import pyarrow as pa

    turns = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    pq.write_table(pa.table({"messages": [json.dumps(turns), '[{"role": "user"', "plain text"]}), tmp_path / "c.parquet")
    run(write_recipe(tmp_path, ["c.parquet"], [{"use": "normalize"}], shards=1), tmp_path / "run", quiet=True)
    sample = pq.read_table(tmp_path / "run" / "input").to_pylist()
    assert [(s["prompt"], s["response"], s["messages"]) for s in sample] == [("hi", "hello", turns)]
    reasons = pq.read_table(tmp_path / "run" / "quarantine").sort_by("input_row").column("reason").to_pylist()
    assert reasons == ["malformed messages: a string that is not a JSON list of turns (Expecting ',' delimiter)",
                       "malformed messages: expected a non-empty list of turns"]


def test_a_quarantined_value_of_another_json_type_is_shown_as_the_file_held_it(tmp_path):
    data = _line("fine") + b'{"prompt": "p", "response": 5}\n' + b'{"prompt": ["a", "list"], "response": "r"}\n'
    res, bad, prompts = _run(tmp_path, "d.jsonl", data)
    raw = pq.read_table(tmp_path / "run" / "quarantine").sort_by("input_row").column("raw").to_pylist()
    assert prompts == ["fine"] and [b["input_row"] for b in bad] == [1, 2]
    assert [json.loads(r) for r in raw] == [{"prompt": "p", "response": 5}, {"prompt": ["a", "list"], "response": "r"}]


@pytest.mark.parametrize("name, data", [
    ("lines.json", _line("a") + b"\n" + _line("b")),  # JSON Lines named .json (as many hub files are)
    ("lines.json.gz", None),
    ("pretty.jsonl", json.dumps([{"prompt": "a", "response": "r"}, {"prompt": "b", "response": "r"}], indent=2).encode()),
    ("one_line_array.jsonl", json.dumps([{"prompt": "a", "response": "r"}, {"prompt": "b", "response": "r"}]).encode()),
    ("jq.jsonl", "\n".join(json.dumps({"prompt": p, "response": "r"}, indent=2) for p in "ab").encode()),  # jq's output
    ("jq.json", "".join(json.dumps({"prompt": p, "response": "r"}, indent=4) + "\n\n" for p in "ab").encode()),
])
def test_the_content_not_the_name_says_json_lines_or_a_json_array(tmp_path, name, data):
    if data is None:
        import gzip
        data = gzip.compress(_line("a") + _line("b"))
    res, bad, prompts = _run(tmp_path, name, data)
    assert prompts == ["a", "b"] and bad == []


def test_a_jsonl_file_whose_first_line_is_broken_is_still_read_line_by_line(tmp_path):
    res, bad, prompts = _run(tmp_path, "d.jsonl", b'{"prompt": "cut\n' + _line("b"))
    assert prompts == ["b"] and [b["input_row"] for b in bad] == [0]


def test_a_json_file_holding_one_object_is_a_clear_error(tmp_path):
    from curator.errors import InputError
    with pytest.raises(InputError, match=r"obj.json: expected a JSON array of objects"):
        _run(tmp_path, "obj.json", json.dumps({"data": [{"prompt": "a"}]}, indent=2).encode())


def test_pretty_printed_objects_with_a_broken_one_are_an_error_naming_its_line(tmp_path):
    from curator.errors import InputError
    data = (json.dumps({"prompt": "a", "response": "r"}, indent=2) + '\n{\n  "prompt": "b",\n}\n').encode()
    with pytest.raises(InputError, match=r"jq.jsonl: not valid UTF-8 JSON \(.*line 7 column 1"):
        _run(tmp_path, "jq.jsonl", data)
