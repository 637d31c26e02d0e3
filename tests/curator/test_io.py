"""Every reader gives the same canonical samples for the same data."""

import json

import datasets
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.ipc as ipc
import pyarrow.parquet as pq
import pytest

from curator.errors import RunError
from curator.pipeline import run
from tests.support import write_recipe

ROWS = [{"prompt": f"q{i}", "response": f"answer number {i}", "extra": i} for i in range(20)]


def _write(kind, d):
    table = pa.Table.from_pylist(ROWS)
    if kind == "jsonl":
        (d / "x.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS))
        return "x.jsonl"
    if kind == "json":
        (d / "x.json").write_text(json.dumps(ROWS))
        return "x.json"
    if kind == "csv":
        pacsv.write_csv(table, d / "x.csv")
        return "x.csv"
    if kind == "parquet":
        pq.write_table(table, d / "x.parquet")
        return "x.parquet"
    if kind == "arrow-file":
        with ipc.new_file(d / "x.arrow", table.schema) as w:
            w.write_table(table)
        return "x.arrow"
    if kind == "arrow-stream":
        with ipc.new_stream(d / "x.arrow", table.schema) as w:
            w.write_table(table)
        return "x.arrow"
    datasets.Dataset.from_list(ROWS).save_to_disk(str(d / "hfdir"))
    return "hfdir"


@pytest.mark.parametrize("kind", ["jsonl", "json", "csv", "parquet", "arrow-file", "arrow-stream", "hf"])
def test_every_reader_gives_the_same_samples(tmp_path, kind):
    name = _write(kind, tmp_path)
    res = run(write_recipe(tmp_path, [name], [{"use": "normalize"}], shards=2), tmp_path / "run", quiet=True)
    samples = pq.read_table(str(tmp_path / "run" / "input")).sort_by("sample_id")
    ref = tmp_path / "ref"
    ref.mkdir()
    (ref / "x.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    run(write_recipe(ref, ["x.jsonl"], [{"use": "normalize"}], shards=2), ref / "run", quiet=True)
    expected = pq.read_table(str(ref / "run" / "input")).sort_by("sample_id")
    assert res.counts["kept"] == 20
    assert samples.column("sample_id").equals(expected.column("sample_id"))


def test_a_failing_stage_leaves_a_failed_marker_with_traceback(tmp_path):
    from dataclasses import dataclass

    from curator.registry import register
    from curator.stage import Stage

    @dataclass(frozen=True)
    class P:
        pass

    @register
    class Broken(Stage):
        name = "test.broken"
        Params = P

        def process_batch(self, batch):
            raise ZeroDivisionError("stage bug")

    _write("jsonl", tmp_path)
    recipe = write_recipe(tmp_path, ["x.jsonl"], [{"use": "normalize"}, {"use": "test.broken"}], shards=1)
    with pytest.raises(RunError, match="stage 'test.broken' failed on shard-00000: ZeroDivisionError: stage bug"):
        run(recipe, tmp_path / "run", quiet=True)
    (failed,) = (tmp_path / "run" / "markers").rglob("*.failed")
    info = json.loads(failed.read_text())
    assert "ZeroDivisionError" in info["traceback"] and info["stage"] == "test.broken"
    assert not (tmp_path / "run" / "manifest.json").exists()


def test_published_dataset_digest_equals_a_fresh_directory_hash(tmp_path):
    """publish_dataset hashes each file once and derives the digest; `verify` re-hashes the directory."""
    import pyarrow as pa

    from curator.finalize import publish_dataset
    from curator.io import sha256_file, sha256_path

    table = pa.table({"sample_id": ["a", "b"], "prompt": ["p", "q"], "response": ["r", "s"]})
    digest, files = publish_dataset(table, tmp_path / "dataset", "fp")
    assert digest == sha256_path(tmp_path / "dataset")
    assert files == {p.name: sha256_file(p) for p in (tmp_path / "dataset").iterdir()}
    assert "state.json" in files and any(n.endswith(".arrow") for n in files)
