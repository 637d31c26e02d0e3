"""Reruns into an existing run directory: a finished rerun leaves the files a fresh run of its recipe would, and a
rerun that stops part-way leaves a directory that reads as not finished (never the previous run's manifest over a
mix of old and new files). Also what `verify` checks beyond the listed files' hashes."""

import json
import os
import shutil
import subprocess
import sys

import pyarrow as pa
import pytest

from curator.manifest import Verification, verify, verify_run
from curator.pipeline import run
from curator.query import connect
from curator.registry import register
from curator.stage import Stage
from tests.support import ENGINE_STAGES, synthetic_rows, write_jsonl, write_recipe

BAD_LINES = '{"prompt": "broken\n{"prompt": 3, "response": "int prompt"}\n'
GATE = [{"name": "rows", "sql": "n_rows() > 0"}]


class ToyAugment(Stage):
    """Adds a copy of the first three rows it sees (a stand-in for rebalance, which needs a model)."""

    name = "test.toy_augment"
    kind = "augment"
    scope = "global"
    version = 1
    requires = ("sample_id", "prompt", "response")

    def process_batch(self, batch):
        rows = pa.Table.from_batches([batch]).slice(0, 3)
        n = rows.num_rows
        return pa.table({"prompt": rows.column("prompt"), "response": rows.column("response"),
                         "parent_id": rows.column("sample_id"), "generator": pa.array(["toy"] * n, pa.string()),
                         "template_id": pa.array(["copy"] * n, pa.string()), "seed": pa.array([0] * n, pa.int64())})


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("rerun")
    write_jsonl(d / "data.jsonl", synthetic_rows(200))
    with open(d / "data.jsonl", "a", encoding="utf-8") as f:
        f.write(BAD_LINES)  # quarantined rows: quarantine/ has files
    return d


def _recipe(d, name: str, stages=ENGINE_STAGES, **top):
    path = write_recipe(d, ["data.jsonl"], stages, gate=GATE, **top)
    return path.rename(d / f"{name}.yaml")


def _cli(*args, fault=None):
    env = {k: v for k, v in os.environ.items() if k != "CURATOR_FAULT"}
    if fault:
        env["CURATOR_FAULT"] = fault
    return subprocess.run([sys.executable, "-m", "curator.cli", *map(str, args)], env=env, capture_output=True,
                          text=True)


def _files(root) -> set[str]:
    """The run's files that a recipe determines (not markers, caches of stages or the lock)."""
    tops = ("input", "scores", "ledger", "added", "quarantine", "dataset", "cache/ingest-ledger")
    return {p.relative_to(root).as_posix() for top in tops for p in (root / top).rglob("*") if p.is_file()}


def _ledger_rows(root) -> int:
    return connect(root).execute("SELECT count(*) FROM ledger").fetchone()[0]


def _assert_like_fresh(out, fresh):
    """``out`` holds the files ``fresh`` does, its views count each row once, and ``verify`` is silent."""
    totals = json.loads((fresh / "manifest.json").read_text())["totals"]
    assert _files(out) == _files(fresh)
    assert _ledger_rows(out) == _ledger_rows(fresh) == totals["rows_in"] + totals["added"]
    assert verify_run(out) == verify_run(fresh) == Verification(problems=[], warnings=[])


def test_rerun_with_fewer_shards_leaves_the_files_of_a_fresh_run(data, tmp_path):
    out, fresh = tmp_path / "run", tmp_path / "fresh"
    run(_recipe(data, "four", shards=4), out, quiet=True)
    three = _recipe(data, "three", shards=3)
    run(three, out, quiet=True)
    run(three, fresh, quiet=True)
    assert not (out / "ledger" / "shard-00003.parquet").exists()
    assert not (out / "quarantine" / "shard-00003.parquet").exists()
    _assert_like_fresh(out, fresh)
    assert connect(out).execute("SELECT count(*) FROM quarantine").fetchone()[0] == 2


def test_rerun_without_a_stage_leaves_no_files_of_it(data, tmp_path):
    register(ToyAugment)
    out, fresh = tmp_path / "run", tmp_path / "fresh"
    run(_recipe(data, "with", [*ENGINE_STAGES, {"use": "test.toy_augment"}], shards=2), out, quiet=True)
    assert list((out / "added").glob("*.parquet")) and (out / "scores" / "test.toy_augment").is_dir()
    without = _recipe(data, "without", [s for s in ENGINE_STAGES if s["use"] != "patterns"], shards=2)
    run(without, out, quiet=True)
    run(without, fresh, quiet=True)
    assert not (out / "added").exists() and not (out / "scores" / "patterns").exists()
    _assert_like_fresh(out, fresh)


@pytest.mark.parametrize(("fault", "shards"), [("before_publish:1", 2), ("write:dataset-swap:1", 4)])
def test_a_rerun_killed_part_way_reads_as_not_finished(data, tmp_path, fault, shards):
    """A rerun with another recipe killed before it publishes, or with the same recipe killed in the dataset swap
    (dataset/ gone): the old manifest must not make the directory look finished."""
    out = tmp_path / "run"
    run(_recipe(data, "first", shards=4), out, quiet=True)
    assert _cli("gate", out).returncode == 0
    verdict = json.loads((out / "manifest.json").read_text())["gate"]
    rerun = _recipe(data, "rerun", shards=shards)
    assert _cli("run", rerun, "-o", out, "-q", fault=fault).returncode == -9
    status = _cli("status", out)
    assert status.returncode == 0 and json.loads(status.stdout)["finished"] is False
    for command in ("gate", "verify", "report"):
        result = _cli(command, out)
        assert result.returncode == 2 and "not finished" in result.stderr, (command, result.stderr)
    assert _cli("run", rerun, "-o", out, "-q").returncode == 0
    assert verify(out) == []
    same = shards == 4  # the same dataset: the gate verdict recorded before is still this run's
    assert json.loads((out / "manifest.json").read_text())["gate"] == (verdict if same else None)


@pytest.fixture(scope="module")
def finished(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("verify") / "run"
    run(_recipe(data, "verified", shards=3), out, quiet=True)
    return out


@pytest.fixture()
def copy(finished, tmp_path):
    return shutil.copytree(finished, tmp_path / "run")


def _edit_manifest(run_dir, change):
    manifest = json.loads((run_dir / "manifest.json").read_text())
    change(manifest)
    (run_dir / "manifest.json").write_text(json.dumps(manifest, indent=2))


def test_verify_fails_on_a_replaced_recipe_yaml(copy):
    (copy / "recipe.yaml").write_text((copy / "recipe.yaml").read_text().replace("char_len > 900", "char_len > 700"))
    result = _cli("verify", copy)
    assert result.returncode == 1 and "recipe.yaml" in result.stdout + result.stderr


@pytest.mark.parametrize("edit", ["totals.kept", "totals.rows_in", "dataset.rows", "inputs.0.rows"])
def test_verify_fails_on_edited_manifest_totals(copy, edit):
    def add(manifest):
        *path, last = [int(k) if k.isdigit() else k for k in edit.split(".")]
        target = manifest
        for k in path:
            target = target[k]
        target[last] += 100

    _edit_manifest(copy, add)
    problems = verify(copy)
    assert problems and all("manifest" in p for p in problems), problems


def test_verify_blames_a_changed_manifest_record_not_the_file(copy):
    rel = "input/shard-00001.parquet"
    _edit_manifest(copy, lambda m: m["shards"][1]["files"].update({rel: "0" * 64}))
    assert verify(copy) == [f"manifest.json: its record of {rel} differs from the run's done marker, which the file "
                            "matches (the manifest changed?)"]


def test_verify_still_blames_a_changed_file(copy):
    rel = "input/shard-00001.parquet"
    (copy / rel).write_bytes((copy / "input" / "shard-00002.parquet").read_bytes())
    assert verify(copy) == [f"{rel}: sha256 differs from the manifest (the file changed after the run)"]
