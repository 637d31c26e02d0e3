"""Row numbers a user joins back to the source file: a JSONL row's ``input_row`` (ledger, quarantine) is its
0-based line, blank lines counted, whichever reader path the file takes (streamed, whole-file after a broken
or type-mixed line, in byte-range parts); ``limit`` and ``sample`` count rows, not lines; a CSV/TSV quoted field
that never closes quarantines its own row only, named as such; a ``DatasetDict`` directory names its splits."""

from __future__ import annotations

import json

import datasets
import fsspec
import pyarrow.parquet as pq
import pytest

from curator import readers
from curator.errors import InputError
from curator.pipeline import run
from tests.support import write_recipe


def _row(i: int, x: object = None) -> str:
    return json.dumps({"prompt": f"question {i}: " + "how " * (i % 7), "response": f"answer {i} " + "ok " * (i % 5),
                       "x": i if x is None else x})


def _lines(n: int = 60) -> list[str]:
    """Rows with blank, whitespace-only and CRLF-blank lines between them."""
    lines = []
    for i in range(n):
        lines.append(_row(i))
        lines += [""] * (i % 4 == 1) + ["   "] * (i % 9 == 3) + ["\r"] * (i % 13 == 5)
    return lines


def _run(tmp_path, name: str, data: bytes, **opts):
    folder = tmp_path / name
    folder.mkdir()
    path = folder / name
    path.write_bytes(data)
    recipe = write_recipe(folder, [name], [{"use": "normalize"}], shards=2)
    if opts:
        recipe.write_text(recipe.read_text().replace(f"- path: {name}", f"- path: {name}\n  " + "\n  ".join(
            f"{k}: {v}" for k, v in opts.items())))
    return folder / "run", run(recipe, folder / "run", quiet=True)


def _input_rows(run_dir) -> dict[str, int]:
    """prompt -> input_row in the ledger, for the rows that reached the samples."""
    ledger = {r["sample_id"]: r["input_row"] for r in pq.read_table(run_dir / "ledger").to_pylist()}
    return {r["prompt"]: ledger[r["sample_id"]] for r in pq.read_table(run_dir / "input").to_pylist()}


def _quarantine(run_dir) -> list[tuple[int, str]]:
    return [(q["input_row"], q["reason"]) for q in pq.read_table(run_dir / "quarantine").sort_by("input_row").to_pylist()]


def _markers(run_dir) -> list[str]:
    return sorted(p.stem for p in run_dir.glob("markers/*/input-*.done"))


def _expected(lines: list[str]) -> dict[str, int]:
    return {json.loads(line)["prompt"]: i for i, line in enumerate(lines) if line.startswith('{"prompt": "q')}


@pytest.mark.parametrize("variant", ["clean", "broken_line", "mixed_types", "parts"])
def test_input_row_is_the_line_whichever_reader_path_the_file_takes(tmp_path, monkeypatch, variant):
    lines = _lines()
    if variant == "broken_line":  # a blank line becomes a line that is not JSON: the whole-file path
        lines[lines.index("", 20)] = '{"prompt": "broken'
    if variant == "mixed_types":  # another JSON type in a pass-through column: the whole-file path
        lines[lines.index(_row(30))] = _row(30, "thirty")
    if variant == "parts":
        monkeypatch.setattr(readers, "PART_BYTES", 1500)
        monkeypatch.setattr(readers, "BLOCK_BYTES", 700)
    run_dir, res = _run(tmp_path, "d.jsonl", "\n".join(lines).encode() + b"\n")
    good = _expected(lines)
    assert _input_rows(run_dir) == good  # every good row at its line, as `sed -n "$((input_row + 1))p"` shows it
    if variant == "broken_line":
        assert [row for row, _ in _quarantine(run_dir)] == [lines.index('{"prompt": "broken')]
    assert res.counts["rows_in"] == len(good) + (variant == "broken_line")


def test_a_url_input_numbers_its_rows_as_the_local_file_does(tmp_path, monkeypatch):
    monkeypatch.setenv("CURATOR_HOME", str(tmp_path / "home"))
    lines = _lines(12)
    fsspec.filesystem("memory").pipe("/rows/d.jsonl", "\n".join(lines).encode())
    recipe = write_recipe(tmp_path, ["memory://rows/d.jsonl"], [{"use": "normalize"}], shards=2)
    run(recipe, tmp_path / "run", quiet=True)
    assert _input_rows(tmp_path / "run") == _expected(lines)


def test_parts_number_rows_by_line_and_a_blank_line_before_the_last_part_reads_the_file_whole(tmp_path, monkeypatch):
    monkeypatch.setattr(readers, "PART_BYTES", 1500)
    monkeypatch.setattr(readers, "BLOCK_BYTES", 700)
    tail_blanks = [_row(i) for i in range(60)]
    tail_blanks[-2:-2] = ["", " \t "]  # blank lines in the last part only: the parts are kept
    run_dir, _ = _run(tmp_path, "tail.jsonl", "\r\n".join(tail_blanks).encode() + b"\r\n\r\n")
    assert len(_markers(run_dir)) > 3 and all("-part-" in m for m in _markers(run_dir))
    assert _input_rows(run_dir) == _expected(tail_blanks)
    early_blank = [_row(i) for i in range(60)]
    early_blank[3:3] = [""]  # shifts the lines of every later part: the file is read whole
    run_dir, _ = _run(tmp_path, "early.jsonl", "\n".join(early_blank).encode() + b"\n")
    assert _markers(run_dir) == ["input-00000"]
    assert _input_rows(run_dir) == _expected(early_blank)


def test_a_lone_cr_ends_a_line_on_both_jsonl_paths(tmp_path):
    rows = [_row(0), _row(1), "", _row(2)]
    run_dir, _ = _run(tmp_path, "ok.jsonl", "\r".join(rows).encode())
    assert _input_rows(run_dir) == {json.loads(r)["prompt"]: i for i, r in enumerate(rows) if r}
    run_dir, _ = _run(tmp_path, "bad.jsonl", "\r".join([*rows, "{broken"]).encode())
    assert _input_rows(run_dir) == {json.loads(r)["prompt"]: i for i, r in enumerate(rows) if r}
    assert [row for row, _ in _quarantine(run_dir)] == [4]


BLANKS_AND_A_BROKEN_LINE = (b'{"prompt": "a", "response": "b"}\n\n\n{"prompt": "c", "response": "d"}\n\n{bad json}\n'
                            b'{"prompt": "e", "response": "f"}\n')


@pytest.mark.parametrize("broken", [True, False])
@pytest.mark.parametrize(("opts", "rows_in"), [({"limit": 3}, 3), ({"limit": 4}, 4), ({"sample": 2}, 2),
                                               ({"sample": 4}, 4), ({"limit": 3, "sample": 2}, 2)])
def test_limit_and_sample_count_rows_not_blank_lines(tmp_path, broken, opts, rows_in):
    data = BLANKS_AND_A_BROKEN_LINE if broken else BLANKS_AND_A_BROKEN_LINE.replace(b"{bad json}\n", b"")
    run_dir, res = _run(tmp_path, "bb.jsonl", data, **opts)
    assert res.counts["rows_in"] == min(rows_in, 4 if broken else 3)
    if opts == {"limit": 3}:
        assert sorted(_input_rows(run_dir)) == (["a", "c"] if broken else ["a", "c", "e"])
        assert [row for row, _ in _quarantine(run_dir)] == ([5] if broken else [])


@pytest.mark.parametrize(("name", "data", "kept", "bad_row", "line"), [
    ("quote_in.tsv", 'prompt\tresponse\nHe said "hi" there\tok\n"quoted start\tresp2\nplain\tr3\n',
     ["He said \"hi\" there", "plain"], 1, 3),
    ("unterminated.csv", 'prompt,response\np1,r1\n\n"unterminated,r2\np3,r3\np4,r4\n', ["p1", "p3", "p4"], 1, 4),
    ("last_column.csv", 'prompt,response\np1,r1\np2,"unterminated\np3,r3\np4,r4\n', ["p1", "p3", "p4"], 1, 3),
    ("long_tail.csv", 'prompt,response\n"unterminated,r0\n' + "".join(f"p{i},r{i}\n" for i in range(1, 9000)),
     [f"p{i}" for i in range(1, 9000)], 0, 2),
])
def test_an_unterminated_quoted_field_quarantines_its_own_row_and_the_rows_after_it_are_read(
        tmp_path, name, data, kept, bad_row, line):
    run_dir, res = _run(tmp_path, name, data.encode())
    assert sorted(_input_rows(run_dir)) == sorted(kept)
    assert res.counts["rows_in"] == len(kept) + 1
    [(row, reason)] = _quarantine(run_dir)
    assert row == bad_row
    assert reason.startswith(f"unterminated quoted field starting at row {bad_row} (line {line} of the file")


def test_a_multi_line_quoted_field_that_closes_is_one_row(tmp_path):
    run_dir, res = _run(tmp_path, "ok.csv", b'prompt,response\np1,r1\np2,"multi\nline"\n')
    assert res.counts["rows_in"] == 2 and _quarantine(run_dir) == []


def test_a_dataset_dict_directory_names_its_splits_directories(tmp_path):
    split = datasets.Dataset.from_list([{"prompt": "p", "response": "r"}])
    datasets.DatasetDict({"train": split, "test": split}).save_to_disk(str(tmp_path / "dsd"))
    recipe = write_recipe(tmp_path, ["dsd"], [{"use": "normalize"}], shards=1)
    with pytest.raises(InputError) as err:
        run(recipe, tmp_path / "run", quiet=True)
    assert "DatasetDict" in str(err.value) and "splits: test, train" in str(err.value)
    assert str(tmp_path / "dsd" / "train") in str(err.value)
    recipe.write_text(recipe.read_text().replace("path: dsd", "path: dsd/train"))
    assert run(recipe, tmp_path / "run2", quiet=True).counts["rows_in"] == 1
