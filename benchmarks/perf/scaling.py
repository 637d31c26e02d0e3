"""Executor scaling: one recipe run with the local executor (1 and 2 processes) and on a local
Ray instance (1 and 2 workers); prints wall time, rows/s and the ratio to local ``workers: 1``.

The recipe is normalize -> quality -> decide -> ``bench.mean_loss`` (a model stage computing each
sample's mean response-token loss with a small random Llama built in code, so nothing is
downloaded). The model stage is registered in this script only: the plan carries its stage
classes to the workers of both executors. Ray start-up is timed once and excluded from the runs.

    python -m benchmarks.perf.scaling --rows 800 --repeats 2     # ~5 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import yaml

from curator.executors import local
from curator.executors.ray import RayExecutor
from curator.pipeline import run
from curator.registry import register
from curator.stage import Stage


@dataclass(frozen=True)
class LossParams:
    batch_size: int = 32


@register
class BenchLossStage(Stage):
    """Mean response-token loss of the recipe's model (forward only, CPU)."""

    name = "bench.mean_loss"
    kind = "score"
    uses_model = True
    Params = LossParams
    requires = ("sample_id", "prompt", "response", "messages")
    provides = ("mean_loss",)

    def setup(self) -> None:
        from curator.ml.models import load_model  # start-up time: torch, only where this runs

        self.lm = load_model(self.context.model, device="cpu")

    def process_batch(self, batch: pa.RecordBatch) -> pa.Table:
        import torch  # start-up time: torch, only where this runs

        from curator.ml.chat import collate, encode_sample, model_per_sample_loss  # start-up time, as above

        tok = self.lm.tokenizer
        cols = (batch.column(c).to_pylist() for c in ("prompt", "response", "messages"))
        enc = [encode_sample(tok, p, r, m, max_length=256) for p, r, m in zip(*cols)]
        with torch.no_grad():
            loss = model_per_sample_loss(self.lm.model, collate(enc, tok.pad_token_id)) if enc else torch.zeros(0)
        return pa.table({"sample_id": batch.column("sample_id"), "mean_loss": pa.array(loss.tolist(), pa.float64())})


def make_inputs(work: Path, rows: int) -> Path:
    path = work / "data.jsonl"
    with open(path, "w") as fh:
        for i in range(rows):
            k = (i * 7919) % 100_003
            fh.write(json.dumps({"prompt": f"Question {k}: how do I do task {k % 37}?",
                                 "response": f"Step {k}. " + "Do the thing carefully. " * (1 + k % 12)}) + "\n")
    return path


def write_recipe(work: Path, data: Path, model: Path, shards: int) -> Path:
    recipe = {"curator": 1, "name": "scaling", "inputs": [{"path": str(data)}], "shards": shards,
              "model": str(model), "executor": {"kind": "ray", "address": "local"},
              "stages": [{"use": "normalize"}, {"use": "quality"},
                         {"use": "decide", "with": {"drop_if": ["is_duplicate"]}}, {"use": "bench.mean_loss"}]}
    path = work / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=800)
    ap.add_argument("--shards", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=2, help="best of N runs per configuration (interleaved)")
    ap.add_argument("--hidden", type=int, default=128, help="width of the 4-layer random Llama")
    args = ap.parse_args()
    from curator.ml.testing import save_tiny_model  # start-up time: torch, not needed for --help

    local.POOL_MIN_BYTES = 0  # the inputs are small; measure the pool anyway
    work = Path(tempfile.mkdtemp(prefix="curator-scaling-"))
    try:
        model = save_tiny_model(work / "model", n_layers=4, hidden=args.hidden)
        recipe = write_recipe(work, make_inputs(work, args.rows), model, args.shards)
        t0 = time.perf_counter()
        ray_exe = RayExecutor(address="local", workers=2, quiet=True)
        startup = time.perf_counter() - t0
        configs = [("local", 1), ("local", 2), ("ray", 1), ("ray", 2)]
        best: dict[tuple[str, int], float] = {}
        digests = set()
        for rep in range(args.repeats):
            for kind, workers in configs:
                out = work / f"run-{kind}-{workers}-{rep}"
                t = time.perf_counter()
                res = run(recipe, out, executor=kind, workers=workers, quiet=True)
                best[(kind, workers)] = min(best.get((kind, workers), float("inf")), time.perf_counter() - t)
                digests.add(res.digest)
                shutil.rmtree(out)
        ray_exe.close()
        base = best[("local", 1)]
        print(f"# {args.rows} rows, {args.shards} shards, {os.cpu_count()} CPU cores, {platform.processor() or platform.machine()}; "
              f"best of {args.repeats}; load average {os.getloadavg()[0]:.1f}; Ray start-up {startup:.1f} s (not included)")
        print("| executor | workers | seconds | rows/s | speed-up vs local workers=1 |")
        print("|---|---:|---:|---:|---:|")
        for kind, workers in configs:
            s = best[(kind, workers)]
            print(f"| {kind} | {workers} | {s:.1f} | {args.rows / s:.0f} | {base / s:.2f}x |")
        print(f"digests identical across all runs: {len(digests) == 1}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
