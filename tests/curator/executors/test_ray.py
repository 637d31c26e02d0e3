"""Ray executor: digest parity with the local executor (engine stages + a tiny-model stage),
retries and resume after killed worker processes, and the missing-extra error.

The test stages are registered in-process only; the plan the Ray executor sends its workers
carries the stage classes, so no entry point is needed.
"""

from __future__ import annotations

import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pytest

from curator.errors import RecipeError, RunError
from curator.manifest import verify
from curator.pipeline import run
from curator.registry import register
from curator.stage import Stage
from tests.support import ENGINE_STAGES, synthetic_rows, write_jsonl, write_recipe


@dataclass(frozen=True)
class LossParams:
    batch_size: int = 16


@register
class MeanLossStage(Stage):
    """Mean response-token loss of the recipe's model; logs each ``setup`` to its cache dir."""

    name = "test.mean_loss"
    kind = "score"
    uses_model = True
    Params = LossParams
    requires = ("sample_id", "prompt", "response", "messages")
    provides = ("mean_loss",)

    def fingerprint_inputs(self) -> dict:
        from curator.ml.models import resolve_model

        return {"model": resolve_model(self.context.model).fingerprint}

    def setup(self) -> None:
        from curator.ml.models import load_model

        self.lm = load_model(self.context.model, device="cpu", cached=False)
        self.context.cache_dir.mkdir(parents=True, exist_ok=True)
        (self.context.cache_dir / f"setup-{os.getpid()}-{id(self)}").touch()

    def process_batch(self, batch: pa.RecordBatch) -> pa.Table:
        import torch

        from curator.ml.chat import collate, encode_sample, model_per_sample_loss

        tok = self.lm.tokenizer
        enc = [encode_sample(tok, p, r, m, max_length=128) for p, r, m in
               zip(*(batch.column(c).to_pylist() for c in ("prompt", "response", "messages")))]
        with torch.no_grad():
            loss = model_per_sample_loss(self.lm.model, collate(enc, tok.pad_token_id)) if enc else torch.zeros(0)
        return pa.table({"sample_id": batch.column("sample_id"), "mean_loss": pa.array(loss.tolist(), pa.float64())})


@dataclass(frozen=True)
class KillParams:
    tokens: str  # directory of kill tokens


@register
class KillTaskStage(Stage):
    """Scores ``response_len``; first claims a kill token if one is left and SIGKILLs its own process."""

    name = "test.kill_task"
    kind = "score"
    Params = KillParams
    requires = ("sample_id", "response")
    provides = ("response_len",)

    def process_batch(self, batch: pa.RecordBatch) -> pa.Table:
        for token in sorted(Path(self.params.tokens).glob("kill-*")):
            try:
                token.unlink()  # atomic claim: exactly one process gets each token
            except FileNotFoundError:
                continue
            os.kill(os.getpid(), signal.SIGKILL)
        lens = [len(r or "") for r in batch.column("response").to_pylist()]
        return pa.table({"sample_id": batch.column("sample_id"), "response_len": pa.array(lens, pa.int64())})


@register
class KillActorStage(KillTaskStage):
    """``KillTaskStage`` as a model stage: runs on the actor pool."""

    name = "test.kill_actor"
    uses_model = True


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray")
    yield ray
    if ray.is_initialized():
        ray.shutdown()


@pytest.fixture()
def data(tmp_path):
    write_jsonl(tmp_path / "data.jsonl", synthetic_rows(160))
    return tmp_path


def _tokens(dir_: Path, n: int) -> Path:
    dir_.mkdir(exist_ok=True)
    for i in range(n):
        (dir_ / f"kill-{i}").touch()
    return dir_


def _kill_recipe(data: Path, stage: str, retries: int, workers: int) -> Path:
    stages = [*ENGINE_STAGES, {"use": stage, "with": {"tokens": str(data / "tokens")}}]
    return write_recipe(data, ["data.jsonl"], stages, shards=3,
                        executor={"kind": "ray", "address": "local", "workers": workers, "retries": retries})


@pytest.mark.ray
def test_ray_digest_equals_local_with_a_model_stage(ray_cluster, data):
    from curator.ml.testing import save_tiny_model

    model = save_tiny_model(data / "tiny-model")
    recipe = write_recipe(data, ["data.jsonl"], [*ENGINE_STAGES, {"use": "test.mean_loss"}], shards=4,
                          model=str(model), executor={"kind": "ray", "address": "local", "workers": 2})
    local = run(recipe, data / "local", executor="local", workers=1, quiet=True)
    on_ray = run(recipe, data / "ray", quiet=True)
    assert on_ray.manifest["executor"]["kind"] == "ray" and local.manifest["executor"]["kind"] == "local"
    assert on_ray.digest == local.digest
    for a, b in zip(local.manifest["shards"], on_ray.manifest["shards"]):
        assert a["files"] == b["files"]  # every ledger, score and input shard is byte-identical
    assert verify(data / "ray") == []
    setups = list((data / "ray" / "cache").glob("*/setup-*"))
    pids = {p.name.split("-")[1] for p in setups}
    assert pids and os.getpid() not in {int(p) for p in pids}  # ran in Ray workers, not the driver
    assert len(setups) == len(pids) <= 2  # the model loaded once per actor, not once per shard


@pytest.mark.ray
def test_an_input_read_in_parts_on_ray_gives_the_local_whole_file_digest(ray_cluster, data, monkeypatch):
    from curator import readers

    recipe = write_recipe(data, ["data.jsonl"], ENGINE_STAGES, shards=3,
                          executor={"kind": "ray", "address": "local", "workers": 2})
    whole = run(recipe, data / "local", executor="local", workers=1, quiet=True)
    monkeypatch.setattr(readers, "PART_BYTES", 5000)  # the driver plans the parts; Ray workers read them
    parts = run(recipe, data / "ray", quiet=True)
    assert len(list((data / "ray" / "markers").glob("*/input-00000-part-*.done"))) > 3
    assert parts.digest == whole.digest and parts.counts == whole.counts
    assert verify(data / "ray") == []


@pytest.mark.ray
def test_killed_actor_is_replaced_and_the_unit_retried(ray_cluster, data):
    recipe = _kill_recipe(data, "test.kill_actor", retries=2, workers=2)
    _tokens(data / "tokens", 0)
    ref = run(recipe, data / "ref", quiet=True)
    _tokens(data / "tokens", 2)  # two kills: at most one unit dies twice, within 2 retries
    res = run(recipe, data / "run", quiet=True)
    assert not list((data / "tokens").glob("kill-*"))
    assert res.digest == ref.digest
    assert not list((data / "run" / "markers").rglob("*.failed"))
    assert verify(data / "run") == []


@pytest.mark.ray
def test_killed_task_without_retries_leaves_a_failed_marker_and_rerun_resumes(ray_cluster, data):
    recipe = _kill_recipe(data, "test.kill_task", retries=0, workers=1)
    _tokens(data / "tokens", 0)
    ref = run(recipe, data / "ref", quiet=True)
    _tokens(data / "tokens", 1)
    with pytest.raises(RunError, match="worker process died 1 time"):
        run(recipe, data / "run", quiet=True)
    failed = list((data / "run" / "markers").rglob("*.failed"))
    assert len(failed) == 1 and "worker process died" in failed[0].read_text()
    done = {p: p.stat().st_mtime_ns for p in (data / "run" / "markers").rglob("*.done")}
    assert not (data / "run" / "manifest.json").exists()
    res = run(recipe, data / "run", quiet=True)
    assert res.digest == ref.digest
    assert not failed[0].exists()
    assert all(p.stat().st_mtime_ns == t for p, t in done.items())  # finished units were not redone
    assert verify(data / "run") == []


def test_missing_ray_extra_is_a_recipe_error_with_the_install_command(data, monkeypatch):
    """Runs in the default suite: this is the path every install without the extra takes."""
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    recipe = write_recipe(data, ["data.jsonl"], ENGINE_STAGES, executor={"kind": "ray"})
    with pytest.raises(RecipeError, match=r"pip install 'safety-curator\[ray\]'"):
        run(recipe, data / "run", quiet=True)
