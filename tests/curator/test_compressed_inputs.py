"""Compressed text inputs (``.gz``, ``.bz2``, ``.zst``): read as their decompressed content, with the same
samples, row numbers, quarantine reasons and source labels as the plain file; a damaged or unsupported
compressed file is a clear input error naming it."""

import bz2
import gzip
import json
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curator import readers
from curator.errors import InputError
from curator.pipeline import run
from tests.support import synthetic_rows, write_recipe

STAGES = [{"use": "normalize"}, {"use": "quality"}]


def _compress(data: bytes, path):
    if path.suffix == ".gz":
        path.write_bytes(gzip.compress(data))
    elif path.suffix == ".bz2":
        path.write_bytes(bz2.compress(data))
    else:
        with pa.output_stream(str(path), compression="zstd") as out:
            out.write(data)
    return path


def _samples(run_dir):
    table = pq.read_table(run_dir / "input").sort_by("sample_id")
    return table.select(["sample_id", "prompt", "response", "source"]).to_pylist()


def _jsonl_with_bad_lines() -> bytes:
    rows = [json.dumps(r) for r in synthetic_rows(40)]
    rows[5] = '{"prompt": "broken'  # invalid JSON
    rows[9] = "[1, 2]"  # not an object
    return ("\n".join(rows) + "\n\n").encode()


@pytest.mark.parametrize("suffix", [".gz", ".bz2", ".zst"])
def test_a_compressed_jsonl_gives_the_plain_files_samples_and_quarantine(tmp_path, suffix):
    data = _jsonl_with_bad_lines()
    (tmp_path / "plain").mkdir()
    (tmp_path / "packed").mkdir()
    (tmp_path / "plain" / "web.jsonl").write_bytes(data)
    _compress(data, tmp_path / "packed" / f"web.jsonl{suffix}")
    plain = run(write_recipe(tmp_path / "plain", ["web.jsonl"], STAGES, shards=2), tmp_path / "plain" / "run", quiet=True)
    packed = run(write_recipe(tmp_path / "packed", [f"web.jsonl{suffix}"], STAGES, shards=2), tmp_path / "packed" / "run",
                 quiet=True)
    assert packed.counts == plain.counts and plain.counts["quarantined"] == 2
    assert _samples(packed.run_dir) == _samples(plain.run_dir)
    assert {r["source"] for r in _samples(packed.run_dir)} == {"web"}  # the label drops both suffixes
    quarantine = [pq.read_table(r.run_dir / "quarantine").sort_by("input_row").select(["input_row", "reason"])
                  for r in (plain, packed)]
    assert quarantine[0].equals(quarantine[1]) and quarantine[0].column("input_row").to_pylist() == [5, 9]
    assert packed.manifest["inputs"][0]["sha256"] != plain.manifest["inputs"][0]["sha256"]  # the file's own bytes


def test_compressed_csv_and_json_array_are_read(tmp_path):
    rows = synthetic_rows(12)
    csv = "prompt,response\n" + "".join(f'"{r["prompt"]}","{r["response"]}"\n' for r in rows)
    _compress(csv.encode(), tmp_path / "a.csv.gz")
    _compress(json.dumps(synthetic_rows(12, seed=500)).encode(), tmp_path / "b.json.zst")
    res = run(write_recipe(tmp_path, ["a.csv.gz", "b.json.zst"], STAGES, shards=2), tmp_path / "run", quiet=True)
    assert res.counts["rows_in"] == 2 * len(rows) and res.counts["quarantined"] == 0
    assert sorted({r["source"] for r in _samples(res.run_dir)}) == ["a", "b"]


def test_compressed_chunks_are_the_plain_files_chunks(tmp_path, monkeypatch):
    monkeypatch.setattr(readers, "BLOCK_BYTES", 1000)
    data = _jsonl_with_bad_lines() + b"\n   \n" + _jsonl_with_bad_lines()
    (tmp_path / "d.jsonl").write_bytes(data)
    packed = _compress(data, tmp_path / "d.jsonl.gz")
    plain = [bytes(c) for c in readers._line_chunks(tmp_path / "d.jsonl")]
    assert [bytes(c) for c in readers._line_chunks(packed)] == plain and len(plain) > 5
    assert list(readers.input_lines(packed)) == data.splitlines(keepends=True)


def test_a_truncated_or_unsupported_compressed_file_is_an_input_error(tmp_path):
    whole = gzip.compress(_jsonl_with_bad_lines() * 50)
    (tmp_path / "cut.jsonl.gz").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(InputError, match="cut.jsonl.gz"):
        run(write_recipe(tmp_path, ["cut.jsonl.gz"], STAGES, shards=2), tmp_path / "run", quiet=True)
    pq.write_table(pa.table({"prompt": ["a"], "response": ["b"]}), tmp_path / "t.parquet")
    _compress((tmp_path / "t.parquet").read_bytes(), tmp_path / "t.parquet.gz")
    recipe = write_recipe(tmp_path, ["t.parquet.gz"], STAGES, shards=2)
    res = subprocess.run([sys.executable, "-m", "curator.cli", "run", str(recipe), "-o", str(tmp_path / "r2"), "-q"],
                         capture_output=True, text=True, cwd=tmp_path)
    assert res.returncode == 2 and "t.parquet.gz: a compressed parquet file; decompress it" in res.stderr
