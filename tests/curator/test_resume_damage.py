"""Resume verifies before it trusts: a finished run whose files were truncated, deleted or bit-flipped
afterwards is repaired by a rerun (the unit that wrote the file is redone, with a log line naming it) and
ends byte-identical to an undamaged run; damage that cannot be redone (the input is gone) is a usage error
(rc 2) naming the damaged file and the fix."""

import logging
import os
import shutil
import subprocess
import sys

import pytest

from curator.manifest import verify
from curator.pipeline import run
from tests.support import ENGINE_STAGES, synthetic_rows, write_jsonl, write_recipe

FILES = ["input/shard-00001.parquet", "scores/patterns/shard-00002.parquet", "scores/quality/shard-00000.parquet",
         "scores/decide/shard-00003.parquet", "quarantine/shard-00001.parquet", "cache/ingest-ledger/shard-00002.parquet",
         "ledger/shard-00001.parquet"]


def truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def delete(path):
    path.unlink()


def flip(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    d = tmp_path_factory.mktemp("damage")
    rows = synthetic_rows(300) + [{"prompt": "p", "response": ""}, {"prompt": 5, "response": "x"}]  # quarantined
    write_jsonl(d / "data.jsonl", rows)
    recipe = write_recipe(d, ["data.jsonl"], ENGINE_STAGES, shards=4)
    ref = run(recipe, d / "reference", quiet=True)
    return d, recipe, ref


@pytest.mark.parametrize("damage", [truncate, delete, flip])
@pytest.mark.parametrize("rel", FILES)
def test_a_damaged_file_is_redone_and_the_run_ends_as_before(finished, rel, damage, tmp_path, caplog):
    d, recipe, ref = finished
    out = tmp_path / "run"
    shutil.copytree(ref.run_dir, out)
    damage(out / rel)
    with caplog.at_level(logging.WARNING, logger="curator"):
        res = run(recipe, out, quiet=True)
    assert res.digest == ref.digest and res.counts == ref.counts
    assert (out / rel).read_bytes() == (ref.run_dir / rel).read_bytes()
    assert verify(out) == []
    if not rel.startswith("ledger/"):  # finalize rewrites ledger/ on every run; the others belong to a unit
        assert any(str(out / rel) in r.getMessage() and "redoing" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("name", ["shard-00002", "ingest", "global"])  # a unit's, the whole ingest's, a global stage's
@pytest.mark.parametrize("text", ["{not json", "", "[1, 2]"])
def test_an_unreadable_done_marker_is_redone(finished, name, text, tmp_path, caplog):
    d, recipe, ref = finished
    out = tmp_path / "run"
    shutil.copytree(ref.run_dir, out)
    markers = sorted((out / "markers").glob(f"*/{name}.done"))
    # a shard's: ingest's unit (a map-reduce stage's map markers are not read once its reduce is done)
    marker = next(m for m in markers if name != "shard-00002" or '"counts"' in m.read_text())
    marker.write_text(text)
    with caplog.at_level(logging.WARNING, logger="curator"):
        res = run(recipe, out, quiet=True)
    assert res.digest == ref.digest and verify(out) == []
    assert any("unreadable done marker" in r.getMessage() for r in caplog.records)


def test_only_the_damaged_unit_is_redone(finished, tmp_path):
    d, recipe, ref = finished
    out = tmp_path / "run"
    shutil.copytree(ref.run_dir, out)
    before = {p: p.stat().st_mtime_ns for p in (out / "scores" / "patterns").glob("*.parquet")}
    truncate(out / "scores" / "patterns" / "shard-00002.parquet")
    run(recipe, out, quiet=True)
    changed = sorted(p.name for p, t in before.items() if p.stat().st_mtime_ns != t)
    assert changed == ["shard-00002.parquet"]


def test_damage_that_cannot_be_redone_is_a_usage_error_naming_the_file(finished, tmp_path):
    d, recipe, ref = finished
    work = tmp_path / "w"
    work.mkdir()
    shutil.copy(d / "data.jsonl", work / "data.jsonl")
    shutil.copy(recipe, work / "recipe.yaml")
    out = work / "run"
    shutil.copytree(ref.run_dir, out)
    truncate(out / "input" / "shard-00001.parquet")
    os.remove(work / "data.jsonl")
    res = subprocess.run([sys.executable, "-m", "curator.cli", "run", str(work / "recipe.yaml"), "-o", str(out), "-q"],
                         capture_output=True, text=True, cwd=work)
    assert res.returncode == 2, res.stderr
    assert "input/shard-00001.parquet is damaged" in res.stderr and "restore the input" in res.stderr
    assert "Traceback" not in res.stderr


@pytest.mark.parametrize("rel", ["dataset", "scores/quality/shard-00000.parquet", "ledger/shard-00001.parquet",
                                 "manifest.json"])
def test_reading_a_damaged_run_is_a_usage_error_naming_it_and_the_fix(finished, rel, tmp_path):
    """report, query, status and gate on a finished run with a damaged file: exit 2 and what to do, no traceback."""
    d, recipe, ref = finished
    out = tmp_path / "run"
    shutil.copytree(ref.run_dir, out)
    (out / "rules.yaml").write_text('gate:\n  - {name: some rows, sql: "SELECT count(*) > 0 FROM ledger"}\n')
    truncate(next((out / "dataset").glob("*.arrow")) if rel == "dataset" else out / rel)
    for args in (["report", str(out)], ["query", str(out), "SELECT count(*) FROM scores"], ["status", str(out)],
                 ["gate", str(out), "--rules", str(out / "rules.yaml")]):
        res = subprocess.run([sys.executable, "-m", "curator.cli", *args], capture_output=True, text=True)
        assert "Traceback" not in res.stderr, (args, res.stderr)
        if args[0] == "status" and rel != "manifest.json":
            continue  # status reads the manifest and the markers (and warns from the views it can read)
        assert res.returncode == 2, (args, res.stdout, res.stderr)
        if args[0] != "gate" or rel == "manifest.json":  # gate: the rule that could not be read names the file
            assert "cannot be read" in res.stderr and "running the recipe again" in res.stderr, (args, res.stderr)
            assert (f"curator verify {out}" in res.stderr) == (rel != "manifest.json")  # verify needs the manifest
