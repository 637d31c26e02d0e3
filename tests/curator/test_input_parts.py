"""A large input is read in parts by parallel ingest units (``readers.input_parts``: JSONL by byte ranges,
Parquet by row groups, Arrow files and ``save_to_disk`` directories by row ranges): the run must give exactly
what reading the file whole gives (rows, types, row numbers, quarantine, ledger), fall back to the whole-file
read where a JSONL range cannot be streamed alone, and resume part by part."""

from __future__ import annotations

import json
import random

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curator import ingest, readers, worker
from curator.pipeline import run
from tests.support import ENGINE_STAGES, synthetic_rows, write_jsonl, write_recipe

PART_BYTES = 4000
BLOCK_BYTES = 1500  # several blocks per range; the first block's types are not the whole file's


def _run(tmp_path, name, rows_or_bytes, part_bytes, suffix="jsonl", **input_opts):
    """Run the engine recipe on one input (JSONL from rows or raw bytes; Parquet of row groups of 25 rows; an
    Arrow file; a ``save_to_disk`` directory) with ``part_bytes``: run dir, result."""
    data = tmp_path / name
    data.mkdir()
    path = data / (f"in.{suffix}" if suffix != "hf" else "in_dataset")
    if suffix == "parquet":
        pq.write_table(pa.Table.from_pylist(rows_or_bytes), path, row_group_size=25)
    elif suffix == "arrow":
        table = pa.Table.from_pylist(rows_or_bytes)
        with pa.ipc.new_file(path, table.schema) as writer:
            writer.write_table(table, max_chunksize=30)
    elif suffix == "hf":
        datasets.Dataset.from_list(rows_or_bytes).save_to_disk(str(path))
    elif isinstance(rows_or_bytes, bytes):
        path.write_bytes(rows_or_bytes)
    else:
        write_jsonl(path, rows_or_bytes)
    recipe = write_recipe(data, [str(path)], ENGINE_STAGES, shards=3)
    if input_opts:
        doc = recipe.read_text().replace(f"- path: {path}", f"- path: {path}\n  " + "\n  ".join(
            f"{k}: {json.dumps(v)}" for k, v in input_opts.items()))
        recipe.write_text(doc)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(readers, "PART_BYTES", part_bytes)
        mp.setattr(readers, "BLOCK_BYTES", BLOCK_BYTES)
        res = run(recipe, data / "run", quiet=True)
    return data / "run", res


def _table(run_dir, sub):
    return pq.read_table(sorted((run_dir / sub).glob("*.parquet"))).sort_by([("sample_id", "ascending")])


def _same_outputs(a, b):
    for sub in ("input", "quarantine", "ledger", "cache/ingest-ledger"):
        assert _table(a, sub).equals(_table(b, sub)), sub


def _markers(run_dir):
    return sorted(p.stem for p in run_dir.glob("markers/*/input-*.done"))


def _rows(n=400, seed=1):
    rows = synthetic_rows(n, seed)
    rng = random.Random(seed)
    for i in rng.sample(range(len(rows)), 12):  # rows the adapter quarantines, spread over the ranges
        rows[i] = {**rows[i], "prompt": "", "response": None}
    return rows


@pytest.mark.parametrize("suffix", ["jsonl", "parquet", "arrow", "hf"])
def test_ranges_give_what_the_whole_file_gives(tmp_path, suffix):
    rows = _rows()
    whole, res_whole = _run(tmp_path, "whole", rows, 1 << 30, suffix)
    parts, res_parts = _run(tmp_path, "parts", rows, PART_BYTES, suffix)
    assert _markers(whole) == ["input-00000"]
    assert len(_markers(parts)) > 5 and all("-part-" in m for m in _markers(parts))
    assert res_parts.digest == res_whole.digest and res_parts.counts == res_whole.counts
    _same_outputs(whole, parts)
    quarantined = _table(parts, "quarantine").column("input_row").to_pylist()
    assert sorted(quarantined) == [i for i, r in enumerate(rows) if r["prompt"] == ""]  # file rows, not range rows
    assert [{**i, "uri": None} for i in res_parts.manifest["inputs"]] == \
        [{**i, "uri": None} for i in res_whole.manifest["inputs"]]


def test_a_bom_crlf_lines_and_trailing_blank_lines_read_alike(tmp_path):
    data = b"\xef\xbb\xbf" + b"".join(json.dumps(r).encode() + b"\r\n" for r in _rows()) + b"\n\n  \n"
    whole, res_whole = _run(tmp_path, "whole", data, 1 << 30)
    parts, res_parts = _run(tmp_path, "parts", data, PART_BYTES)
    assert len(_markers(parts)) > 5
    assert res_parts.digest == res_whole.digest and res_parts.counts == res_whole.counts
    _same_outputs(whole, parts)


@pytest.mark.parametrize("late", [
    {"prompt": "p", "response": "r", "row_no": "a string now"},  # a type change
    {"prompt": "p", "response": "r", "row_no": 1, "extra": 2},  # a new column
    b'{"prompt": "broken", "response": ',  # a line that is not JSON
    b'{"prompt": "bad utf8 \xff", "response": "x"}',  # invalid UTF-8
])
def test_a_range_that_does_not_fit_the_first_block_makes_the_file_read_whole(tmp_path, late):
    lines = [json.dumps(r).encode() for r in _rows()]
    lines.insert(len(lines) - 30, late if isinstance(late, bytes) else json.dumps(late).encode())
    data = b"\n".join(lines) + b"\n"
    whole, res_whole = _run(tmp_path, "whole", data, 1 << 30)
    parts, res_parts = _run(tmp_path, "parts", data, PART_BYTES)
    assert _markers(parts) == ["input-00000"]  # the ranges' markers are gone: the whole-file read holds the rows
    assert res_parts.digest == res_whole.digest and res_parts.counts == res_whole.counts
    _same_outputs(whole, parts)


def test_a_chat_file_is_read_in_the_layout_its_first_block_shows_in_every_part(tmp_path):
    """Prompt-only conversations, then complete ones: ``auto`` resolves once per file (prompts, from the first
    block), so the later parts' complete conversations are quarantined as they are in a whole read, not read
    as another layout."""
    asks = [{"messages": [{"role": "user", "content": f"question {i} " * 5}]} for i in range(150)]
    chats = [{"messages": [{"role": "user", "content": f"q {i} " * 5}, {"role": "assistant", "content": "a " * 9}]}
             for i in range(150)]
    whole, res_whole = _run(tmp_path, "whole", asks + chats, 1 << 30)
    parts, res_parts = _run(tmp_path, "parts", asks + chats, PART_BYTES)
    assert len(_markers(parts)) > 5
    assert res_whole.counts["quarantined"] == 150 and res_parts.counts == res_whole.counts
    reasons = set(_table(parts, "quarantine").column("reason").to_pylist())
    assert reasons == {"malformed messages: the last turn must be the user's"}
    assert res_parts.digest == res_whole.digest
    _same_outputs(whole, parts)


@pytest.mark.parametrize("opts", [{"limit": 150}, {"sample": 100}])
def test_inputs_selected_by_row_number_are_read_whole(tmp_path, opts):
    parts, _ = _run(tmp_path, "parts", _rows(), PART_BYTES, **opts)
    assert _markers(parts) == ["input-00000"]


def test_a_resume_that_splits_the_file_otherwise_reads_it_again(tmp_path, monkeypatch):
    """Parts read under another split (another version's part size) are not taken for this split's."""
    rows = _rows()
    whole, res_whole = _run(tmp_path, "whole", rows, 1 << 30)

    def stop(plan, unit):
        raise RuntimeError("stopped after the parts were read")

    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(worker._RUNNERS, "ingest", stop)
        with pytest.raises(Exception, match="stopped after"):
            _run(tmp_path, "parts", rows, PART_BYTES)
    parts = tmp_path / "parts" / "run"
    assert len(list(parts.glob("cache/*/ingest/input-00000-part-*.good.arrow"))) > 5
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(readers, "PART_BYTES", PART_BYTES * 2)
        mp.setattr(readers, "BLOCK_BYTES", BLOCK_BYTES)
        res = run(parts.parent / "recipe.yaml", parts, quiet=True)
    assert res.digest == res_whole.digest
    _same_outputs(whole, parts)


def test_every_line_belongs_to_exactly_one_range(tmp_path):
    rng = random.Random(0)
    for trial in range(30):
        lines = [b"x" * rng.choice([0, 1, 5, 50, 400]) for _ in range(rng.randint(1, 60))]
        data = b"\n".join(lines) + (b"\n" if rng.random() < 0.5 else b"")
        path = tmp_path / f"f{trial}.jsonl"
        path.write_bytes(data)
        n = rng.randint(1, 12)
        ranges = [readers.part_range(path, k, n) for k in range(n)]
        assert ranges[0][0] == 0 and ranges[-1][1] == len(data)
        assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))  # contiguous, no overlap
        assert all(s in (0, len(data)) or data[s - 1:s] == b"\n" for s, _ in ranges)  # each starts a line (or is empty)


def test_an_interrupted_ingest_resumes_range_by_range(tmp_path, monkeypatch):
    rows = _rows()
    whole, res_whole = _run(tmp_path, "whole", rows, 1 << 30)
    real, calls, failed = ingest.input_unit, [], []

    def failing(plan, unit, normalizer):
        calls.append(unit.name)
        if len(calls) == 4 and not failed:
            failed.append(unit.name)
            raise RuntimeError("killed")
        return real(plan, unit, normalizer)

    monkeypatch.setattr("curator.worker.input_unit", failing)
    with pytest.raises(Exception, match="killed"):
        _run(tmp_path, "parts", rows, PART_BYTES)
    done_before = set(calls[:3])
    calls.clear()
    data = tmp_path / "parts"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(readers, "PART_BYTES", PART_BYTES)
        mp.setattr(readers, "BLOCK_BYTES", BLOCK_BYTES)
        res = run(data / "recipe.yaml", data / "run", quiet=True)
    assert calls and not done_before & set(calls)  # finished ranges are not read again
    assert res.digest == res_whole.digest
    _same_outputs(whole, data / "run")


def test_a_damaged_large_parquet_file_is_an_input_error_naming_it(tmp_path, monkeypatch):
    from curator.errors import InputError

    path = tmp_path / "broken.parquet"
    path.write_bytes(b"PAR1" + b"\0" * 5000)
    monkeypatch.setattr(readers, "PART_BYTES", 1000)
    assert readers.input_parts(path) == 1
    recipe = write_recipe(tmp_path, [str(path)], ENGINE_STAGES)
    with pytest.raises(InputError, match="broken.parquet"):
        run(recipe, tmp_path / "run", quiet=True)
