"""Streaming pieces: the Parquet sink, block readers that start over, and a run whose files span many row groups."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curator import io, readers
from curator.io import ParquetSink, sha256_file, write_parquet
from curator.manifest import verify
from curator.pipeline import run
from curator.readers import Restart, read_blocks, read_table
from tests.support import ENGINE_STAGES, synthetic_rows, write_jsonl, write_recipe


def test_a_sink_that_fits_one_buffer_writes_what_write_parquet_writes(tmp_path):
    parts = [pa.table({"a": [1, 2], "b": ["x", None]}), pa.table({"a": [3], "b": pa.nulls(1, pa.string())})]
    with ParquetSink(tmp_path / "s.parquet") as sink:
        for p in parts:
            sink.write(p)
        record = sink.close()
    write_parquet(pa.concat_tables(parts, promote_options="permissive"), tmp_path / "w.parquet")
    assert record == {"size": (tmp_path / "s.parquet").stat().st_size, "sha256": sha256_file(tmp_path / "w.parquet")}
    with ParquetSink(tmp_path / "e.parquet", pa.schema([("a", pa.int64())])) as sink:
        sink.close()
    assert pq.read_table(tmp_path / "e.parquet").schema.names == ["a"]


def test_a_sink_writes_row_groups_of_bounded_size_and_widens_its_schema(tmp_path, monkeypatch):
    monkeypatch.setattr(io, "ROW_GROUP_BYTES", 64)
    parts = [pa.table({"a": list(range(i, i + 10))}) for i in range(0, 50, 10)]
    for name, tables in (("s", parts), ("w", [*parts, pa.table({"a": [99], "b": ["new column"]})])):
        with ParquetSink(tmp_path / f"{name}.parquet") as sink:
            for p in tables:
                sink.write(p)
            sink.close()
        got = pq.read_table(tmp_path / f"{name}.parquet")
        assert got.equals(pa.concat_tables(tables, promote_options="permissive").combine_chunks())
    meta = pq.ParquetFile(tmp_path / "s.parquet").metadata
    assert [meta.row_group(i).num_rows for i in range(meta.num_row_groups)] == [8] * 6 + [2]  # 64 bytes of int64s


@pytest.mark.parametrize("cuts", [[1], [7, 8, 50, 51], [3, 4, 5, 6, 90], list(range(1, 120, 9))])
def test_a_sink_writes_the_same_file_however_its_rows_come(tmp_path, monkeypatch, cuts):
    """Row groups are cut by the rows' bytes, not by the tables they arrive in: the file is the same."""
    monkeypatch.setattr(io, "ROW_GROUP_BYTES", 700)
    rows = pa.table({"text": [f"row {i} " * (i % 7) for i in range(120)], "n": list(range(120)),
                     "turns": [[{"role": "user", "content": "x" * (i % 5)}] * (i % 3) for i in range(120)]})
    files = []
    for name, bounds in (("one", [0, 120]), ("cut", [0, *cuts, 120])):
        with ParquetSink(tmp_path / f"{name}.parquet") as sink:
            for a, b in zip(bounds, bounds[1:]):
                sink.write(rows.slice(a, b - a))
            files.append(sink.close())
    assert files[0] == files[1]
    assert pq.ParquetFile(tmp_path / "one.parquet").metadata.num_row_groups > 3


def test_a_failed_sink_leaves_no_file(tmp_path):
    with pytest.raises(ValueError), ParquetSink(tmp_path / "s.parquet") as sink:
        sink.write(pa.table({"a": [1]}))
        raise ValueError("stage failed")
    assert not list(tmp_path.iterdir())


def test_a_block_that_changes_the_types_makes_the_reader_start_over(tmp_path, monkeypatch):
    monkeypatch.setattr(readers, "BLOCK_BYTES", 256)
    rows = [{"prompt": f"p{i}", "response": "r" * 20, "extra": i} for i in range(40)]
    rows += [{"prompt": "late", "response": "r", "extra": "a string now"}]
    path = tmp_path / "x.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    items = list(read_blocks(path))
    restarts = [i for i, b in enumerate(items) if isinstance(b, Restart)]
    assert len(restarts) == 1 and restarts[0] > 0  # some blocks were streamed first
    after = items[restarts[0] + 1:]
    whole, _ = read_table(path)
    assert pa.concat_tables([b.table for b in after]).equals(whole.drop_columns(["_file_row"]))
    assert sum(len(b.rows) for b in after) == len(rows)


def test_many_row_groups_and_small_batches_give_the_same_rows(tmp_path, monkeypatch):
    import datasets

    from curator import views, worker

    write_jsonl(tmp_path / "data.jsonl", synthetic_rows(500))
    recipe = write_recipe(tmp_path, ["data.jsonl"], ENGINE_STAGES, shards=3)
    ref = run(recipe, tmp_path / "ref", quiet=True)
    monkeypatch.setattr(io, "ROW_GROUP_BYTES", 2048)
    monkeypatch.setattr(views, "VIEW_BYTES", 3000)
    monkeypatch.setattr(worker, "_STREAM_ROWS", 11)
    res = run(recipe, tmp_path / "small", quiet=True)
    assert res.counts == ref.counts and verify(tmp_path / "small") == []
    for rel in ("input", "scores/patterns", "scores/quality", "scores/decide", "ledger"):
        for f in sorted((tmp_path / "ref" / rel).glob("*.parquet")):
            small = tmp_path / "small" / rel / f.name
            assert pq.read_table(small).equals(pq.read_table(f)), small
    got, want = (datasets.load_from_disk(str(tmp_path / d / "dataset")).data.table for d in ("small", "ref"))
    assert got.equals(want)  # the same rows (the dataset's record batches follow the input's row groups)
    assert max(pq.ParquetFile(f).metadata.num_row_groups for f in (tmp_path / "small" / "scores" / "patterns").glob("*")) > 1


def test_with_many_row_groups_the_files_do_not_depend_on_how_the_input_was_cut(tmp_path, monkeypatch):
    """Row groups of a few kB (as a large run's are of 32 MB): reading the input in blocks of 700 bytes, or in
    parts of 3 kB, gives the same files and digest as reading it whole."""
    write_jsonl(tmp_path / "data.jsonl", synthetic_rows(500))
    recipe = write_recipe(tmp_path, ["data.jsonl"], ENGINE_STAGES, shards=3)
    monkeypatch.setattr(io, "ROW_GROUP_BYTES", 4096)
    ref = run(recipe, tmp_path / "ref", quiet=True)
    assert max(pq.ParquetFile(f).metadata.num_row_groups for f in (tmp_path / "ref" / "input").glob("*")) > 3
    for name, attr, value in (("blocks", "BLOCK_BYTES", 700), ("parts", "PART_BYTES", 3000)):
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(readers, attr, value)
            res = run(recipe, tmp_path / name, quiet=True)
        assert res.digest == ref.digest, name
        assert [s["files"] for s in res.manifest["shards"]] == [s["files"] for s in ref.manifest["shards"]], name


def _whole_table_batches(self, schema):
    """The dataset as finalize wrote it before it streamed: every kept shard read whole, filtered, concatenated."""
    parts = [pq.read_table(self.rundir.input_shard(shard)).filter(pa.array(mask)) for shard, mask in self.kept]
    if self.extra is not None:
        parts.append(self.extra)
    table = pa.concat_tables(parts, promote_options="permissive")
    table = table.drop_columns([c for c in table.column_names if c.startswith("_")])
    return table.cast(schema).to_batches(max_chunksize=1000)


@pytest.mark.parametrize("rows, shards, blocks", [(2, 8, None), (0, 3, None), (700, 3, 20_000), (3, 5, 200)])
def test_the_streamed_dataset_file_is_the_whole_table_one(tmp_path, monkeypatch, rows, shards, blocks):
    """Empty shards (a zero-row batch each, but none after the last row), row groups and batches of any size."""
    from curator import finalize

    data = synthetic_rows(max(rows, 6))[:rows] + [{"prompt": "odd", "response": "x", "extra": 1}] * (rows > 100)
    write_jsonl(tmp_path / "data.jsonl", data)
    recipe = write_recipe(tmp_path, ["data.jsonl"], ENGINE_STAGES, shards=shards)
    if blocks:
        monkeypatch.setattr(io, "ROW_GROUP_BYTES", blocks)
        monkeypatch.setattr(readers, "BLOCK_BYTES", blocks)
    streamed = run(recipe, tmp_path / "streamed", quiet=True)
    monkeypatch.setattr(finalize.DatasetParts, "batches", _whole_table_batches)
    whole = run(recipe, tmp_path / "whole", quiet=True)
    assert streamed.digest == whole.digest and streamed.counts == whole.counts
    if blocks and rows > 100:
        assert max(pq.ParquetFile(f).metadata.num_row_groups for f in (tmp_path / "whole" / "input").glob("*")) > 1


@pytest.mark.parametrize("block", [1, 5, 8, 64])
def test_jsonl_chunks_end_at_line_ends_keep_long_lines_whole_and_skip_blank_ones(tmp_path, monkeypatch, block):
    long_line = b'{"prompt": "' + b"x" * 40 + b'"}\n'
    data = b'{"a": 1}\n\n   \n' + long_line + b'\r\n{"b": 2}\n \t\n{"c": 3}'  # no newline at the end
    (tmp_path / "d.jsonl").write_bytes(data)
    monkeypatch.setattr(readers, "BLOCK_BYTES", block)
    chunks = [bytes(c) for c in readers._line_chunks(tmp_path / "d.jsonl")]
    assert all(c.endswith(b"\n") for c in chunks[:-1]) and chunks[-1].endswith(b'{"c": 3}')
    assert all(c.strip() for c in chunks)  # whitespace-only chunks are skipped ...
    assert b"".join(chunks).split() == data.split()  # ... and nothing else is lost
    assert any(long_line in c for c in chunks)
