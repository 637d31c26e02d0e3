"""A tiny model-free run pays no fixed cost it does not need: no model, plotting or `datasets` libraries are imported,
and no worker processes are started for inputs that one process handles faster."""

import json
import subprocess
import sys

from curator.executors import local
from curator.pipeline import run
from tests.support import ENGINE_STAGES, synthetic_rows, write_jsonl, write_recipe

HEAVY = ("torch", "transformers", "sklearn", "matplotlib", "datasets", "pyarrow.dataset")


def test_the_model_free_path_imports_no_model_or_plotting_library(tmp_path):
    write_jsonl(tmp_path / "d.jsonl", synthetic_rows(6))
    recipe = write_recipe(tmp_path, ["d.jsonl"], ENGINE_STAGES, shards=4)
    code = (f"import sys, json; from curator.pipeline import run; run({str(recipe)!r}, {str(tmp_path / 'run')!r}, "
            f"quiet=True, workers=2); print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout) == []


def test_small_inputs_run_without_a_worker_pool(tmp_path, monkeypatch):
    def no_pool(self):
        raise AssertionError("a worker pool was started for a tiny input")

    monkeypatch.setattr(local.LocalExecutor, "_get_pool", no_pool)
    write_jsonl(tmp_path / "d.jsonl", synthetic_rows(6))
    res = run(write_recipe(tmp_path, ["d.jsonl"], ENGINE_STAGES, shards=4), tmp_path / "run", quiet=True, workers=2)
    assert res.counts["rows_in"] == 8 and res.manifest["executor"] == {"kind": "local", "workers": 2}


def test_workers_start_early_only_for_inputs_worth_a_pool(tmp_path, monkeypatch):
    exe = local.LocalExecutor(2, quiet=True)
    exe.warm_up(local.POOL_MIN_BYTES - 1)
    assert exe._pool is None
    exe.warm_up(local.POOL_MIN_BYTES)
    assert exe._pool is not None
    exe.close()
    monkeypatch.setattr(local, "POOL_MIN_BYTES", 0)  # every input is worth a pool now
    write_jsonl(tmp_path / "d.jsonl", synthetic_rows(6))
    recipe = write_recipe(tmp_path, ["d.jsonl"], ENGINE_STAGES, shards=4)
    first = run(recipe, tmp_path / "run", quiet=True, workers=2)

    def no_pool(self):
        raise AssertionError("a worker pool was started to rerun a finished run")

    monkeypatch.setattr(local.LocalExecutor, "_get_pool", no_pool)
    again = run(recipe, tmp_path / "run", quiet=True, workers=2)
    assert again.digest == first.digest
