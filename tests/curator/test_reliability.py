"""Faults: SIGKILL at randomised points, write failures, concurrent runs. Each time a rerun must
finish, `verify` must pass and the dataset digest must equal an uninterrupted run's."""

import errno
import json
import os
import random
import subprocess
import sys

import pytest

from curator.errors import RecipeError, RunError
from curator.manifest import verify
from curator.pipeline import run
from curator.rundir import RunLock
from tests.support import ENGINE_STAGES, synthetic_rows, write_jsonl, write_recipe

# Fault point -> how many times one run of the test recipe reaches it (4 shards, 2 global stages).
POINTS = {"unit_done": 3, "write:input": 4, "write:quarantine": 4, "write:cache": 4, "write:scores": 8,
          "write:markers": 3, "write:ledger": 4, "write:dataset": 1, "write:dataset-swap": 1, "write:stats": 1,
          "write:manifest": 1, "before_publish": 1, "before_manifest": 1}
FAST = ["write:scores", "write:markers", "write:ledger", "write:dataset-swap", "write:manifest"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("rel")
    write_jsonl(d / "data.jsonl", synthetic_rows(300))
    recipe = write_recipe(d, ["data.jsonl"], ENGINE_STAGES, shards=4)
    ref = run(recipe, d / "reference", quiet=True)
    return d, recipe, ref.digest


def _cli(recipe, out, fault=None):
    env = {k: v for k, v in os.environ.items() if k != "CURATOR_FAULT"}
    if fault:
        env["CURATOR_FAULT"] = fault
    return subprocess.run([sys.executable, "-m", "curator.cli", "run", str(recipe), "-o", str(out), "-q"],
                          env=env, capture_output=True, text=True, cwd=recipe.parent)


def kill_trials(setup, points, seed):
    d, recipe, digest = setup
    rng = random.Random(seed)
    killed = 0
    for t, point in enumerate(points):
        fault = f"{point}:{rng.randint(1, POINTS[point])}"
        out = d / f"trial-{seed}-{t}"
        first = _cli(recipe, out, fault)
        killed += first.returncode == -9
        assert first.returncode in (0, -9), (fault, first.stderr)
        second = _cli(recipe, out)
        assert second.returncode == 0, (fault, second.stderr)
        assert json.loads(second.stdout)["digest"] == digest, fault
        assert verify(out) == [], fault
        assert not list(out.rglob(".*.tmp")) and not list(out.glob(".dataset.*")), fault
    return killed


def test_kill_while_writing_scores_markers_ledger_dataset_manifest(setup):
    assert kill_trials(setup, FAST, seed=1) == len(FAST)


@pytest.mark.slow
def test_kill_matrix_many_randomised_trials(setup):
    rng = random.Random(7)
    points = [rng.choice(sorted(POINTS)) for _ in range(60)]
    killed = kill_trials(setup, points, seed=7)
    print(f"kill matrix: {len(points)} trials, {killed} killed mid-run, all resumed to the reference digest")
    assert killed == len(points)


def test_disk_full_leaves_no_half_written_file(setup, tmp_path, monkeypatch):
    d, recipe, _ = setup
    import pyarrow.parquet as pq

    real = pq.write_table

    def full(table, where, **kw):
        real(table.slice(0, 1), where, **kw)  # part of the file reaches the disk
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pq, "write_table", full)
    with pytest.raises(RunError, match="No space left on device.*check free space"):
        run(recipe, tmp_path / "full", quiet=True)
    assert not list((tmp_path / "full").rglob("*.parquet")) and not list((tmp_path / "full").rglob(".*.tmp"))


def test_permission_denied_on_publish_is_a_clear_error(setup, tmp_path, monkeypatch):
    d, recipe, _ = setup
    real = os.replace

    def deny(src, dst):
        if str(dst).endswith("manifest.json"):
            raise PermissionError(errno.EACCES, "Permission denied")
        return real(src, dst)

    monkeypatch.setattr(os, "replace", deny)
    with pytest.raises(RunError, match="could not write .*manifest.json: Permission denied"):
        run(recipe, tmp_path / "perm", quiet=True)
    assert not (tmp_path / "perm" / "manifest.json").exists()


def test_second_run_on_the_same_directory_is_refused(setup, tmp_path):
    d, recipe, _ = setup
    out = tmp_path / "locked"
    with RunLock(out):
        res = _cli(recipe, out)
    assert res.returncode == 2 and "in use by pid" in res.stderr  # a usage conflict, not a failed run
    with RunLock(out):
        with pytest.raises(RecipeError, match="--wait"):
            run(recipe, out, quiet=True, wait=0.3)
