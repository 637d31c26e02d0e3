"""Byte identity of the model-free engine: the corpus of ``engine_corpus`` run through fixed recipes must
give exactly the files recorded in ``tests/data/engine_golden.json`` (the sha256 of every file under
``input/``, ``scores/``, ``ledger/``, ``quarantine/`` and ``cache/ingest-ledger/``, the dataset digest and
the manifest's per-shard entries), whatever the number of workers and however the engine cuts its batches.

The record was written by the engine before streaming (commit 821e110); a deliberate output change
regenerates it and shows what changed in the diff:

    python -m tests.curator.test_engine_golden --update
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml

from curator.io import sha256_file
from curator.pipeline import run
from tests.curator.engine_corpus import RECIPES, recipe_dict, write_corpus

RECORD = Path(__file__).parents[1] / "data" / "engine_golden.json"
OUTPUT_DIRS = ("input", "scores", "ledger", "quarantine", "cache/ingest-ledger")


def outputs(run_dir: Path, result) -> dict:
    """What the record holds for one finished run."""
    files = {p.relative_to(run_dir).as_posix(): sha256_file(p)
             for sub in OUTPUT_DIRS for p in sorted((run_dir / sub).rglob("*.parquet"))}
    shards = [{k: v for k, v in s.items()} for s in result.manifest["shards"]]
    return {"digest": result.digest, "counts": result.counts, "files": files, "shards": shards}


def run_recipe(name: str, root: Path, workers: int = 1) -> dict:
    data = root / "data"
    inputs = write_corpus(data)
    recipe = data / f"{name}.yaml"
    recipe.write_text(yaml.safe_dump(recipe_dict(name, inputs), sort_keys=False))
    res = run(recipe, root / f"run-{workers}", quiet=True, workers=workers)
    return outputs(root / f"run-{workers}", res)


def _check(got: dict, want: dict) -> None:
    assert got["counts"] == want["counts"]
    assert sorted(got["files"]) == sorted(want["files"]), "the run wrote a different set of files"
    changed = sorted(f for f, h in want["files"].items() if got["files"][f] != h)
    assert not changed, f"outputs changed: {changed}"
    assert got["shards"] == want["shards"]
    assert got["digest"] == want["digest"]


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_engine_outputs_are_byte_identical_to_the_record(name, tmp_path):
    _check(run_recipe(name, tmp_path), json.loads(RECORD.read_text("utf-8"))[name])


def test_two_workers_give_the_recorded_bytes(tmp_path, monkeypatch):
    from curator.executors import local

    monkeypatch.setattr(local, "POOL_MIN_BYTES", 0)  # a worker pool even for this small corpus
    _check(run_recipe("engine", tmp_path, workers=2), json.loads(RECORD.read_text("utf-8"))["engine"])


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_tiny_batches_give_the_recorded_bytes(name, tmp_path, monkeypatch):
    """Inputs read a few hundred bytes at a time, views a few rows at a time: the same files."""
    from curator import readers, views, worker

    monkeypatch.setattr(readers, "BLOCK_BYTES", 700)
    monkeypatch.setattr(views, "VIEW_BYTES", 900)
    monkeypatch.setattr(worker, "_STREAM_ROWS", 7)
    _check(run_recipe(name, tmp_path), json.loads(RECORD.read_text("utf-8"))[name])


@pytest.mark.parametrize("name", sorted(RECIPES))
@pytest.mark.parametrize("block_bytes", [700, 1 << 24])
def test_inputs_read_in_byte_ranges_give_the_recorded_bytes(name, block_bytes, tmp_path, monkeypatch):
    """JSONL inputs read in ranges of a few kB by separate units (each file whose first block parses; a file
    with a range that does not fit that block's types is read whole): the same files."""
    from curator import readers

    monkeypatch.setattr(readers, "PART_BYTES", 3000)
    monkeypatch.setattr(readers, "BLOCK_BYTES", block_bytes)
    _check(run_recipe(name, tmp_path), json.loads(RECORD.read_text("utf-8"))[name])


def update(names: list[str]) -> None:
    import tempfile

    record = json.loads(RECORD.read_text("utf-8")) if RECORD.exists() else {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in names or sorted(RECIPES):
            record[name] = run_recipe(name, Path(tmp) / name)
            print(f"{name}: digest {record[name]['digest'][:16]}, {len(record[name]['files'])} files, "
                  f"{record[name]['counts']}")
    RECORD.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n", "utf-8")


if __name__ == "__main__":
    if "--update" not in sys.argv:
        sys.exit("usage: python -m tests.curator.test_engine_golden --update [recipe names]")
    update([a for a in sys.argv[1:] if a != "--update"])
