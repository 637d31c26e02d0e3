"""risk.sqsd throughput on the default model (SmolLM2-135M-Instruct, CPU), 256-token samples.

Prints samples/s of the stage in ``exact`` (2 forward/backward passes), ``shared_state`` (1 pass) and
exact with ``base_compute: bfloat16`` (mixed precision), and of the batch-1 dense reference written
like the authors' code (``filters.risk.dense_reference``:
``loss.backward()`` per sample, dense ``ΔW = -(gB@A + B@gA)`` per module, flattened cosine with the
dense ``B_dir@A_dir``), measured in the same run, with their ratio; and checks that exact-mode scores
equal the reference's (relative error vs Σ_m |cos| < 1e-4), and the bf16 scores' agreement with the
float32 ones (Spearman, max abs diff). Methods are interleaved over ``--rounds`` rounds (shared
machine); each reports its best round and the median per-round ratio. Uses (and builds on first use)
the default directions under $CURATOR_HOME. (benchmarks/perf/risk_forward.py covers the forward-only scorers.)

    python -m benchmarks.perf.risk            # 32 samples per mode, 8 for the reference
    python -m benchmarks.perf.risk --quick    # 8 / 4
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import torch
from scipy.stats import spearmanr

from curator.keyed_store import KeyedStore
from curator.ml.precision import native_bfloat16
from curator.stage import StageContext, build_params
from filters.risk.dense_reference import dense_directions, reference_scores
from filters.risk.sqsd import COLUMNS, SQSDStage

WORDS = ("data model safety answer question river mountain bread flour water salt yeast bake oven time "
         "because first second third explain why how what when where list steps careful simple").split()


def make_rows(n: int, seed: int = 0) -> list[dict]:
    """Prompt + a long response; with max_length=256 (left truncation) every sample is exactly 256 tokens."""
    rng = random.Random(seed)
    return [{"prompt": " ".join(rng.choices(WORDS, k=20)) + "?", "response": " ".join(rng.choices(WORDS, k=400))}
            for _ in range(n)]


def batch_of(rows: list[dict], start: int = 0) -> pa.RecordBatch:
    return pa.RecordBatch.from_pydict({"sample_id": [f"s{start + i:05d}" for i in range(len(rows))],
                                       "prompt": [r["prompt"] for r in rows],
                                       "response": [r["response"] for r in rows]})


def stage_for(mode: str, method: str, batch_size: int, tmp: Path, base_compute: str = "model",
              directions: str = "default") -> SQSDStage:
    params = build_params(SQSDStage.Params, {"mode": mode, "method": method, "batch_size": batch_size,
                                             "max_length": 256, "base_compute": base_compute,
                                             "directions": directions}, "with")
    ctx = StageContext(run_dir=tmp, cache_dir=tmp / f"cache-{mode}-{time.time_ns()}", model="default", device="cpu",
                       quiet=True)
    return SQSDStage(params, ctx)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--n", type=int, default=None)
    ap.add_argument("--ref-n", type=int, default=None)
    ap.add_argument("--rounds", type=int, default=2, help="interleaved rounds; each method reports its best")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--method", default="lora", choices=["lora", "mean_update"])
    ap.add_argument("--directions", default="default", help="a directions directory instead of the default build")
    args = ap.parse_args()
    n = args.n or (8 if args.quick else 32)
    ref_n = args.ref_n or (4 if args.quick else 8)
    rows = make_rows(n)
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; load average {os.getloadavg()[0]:.2f}; "
          f"torch {torch.__version__}, threads {torch.get_num_threads()}, n={n}, ref_n={ref_n}, "
          f"batch_size={args.batch_size}, method={args.method}, 256-token samples, {args.rounds} round(s)", flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="sqsd-bench-"))
    variants = {"exact": ("exact", "model"), "shared_state": ("shared_state", "model")}
    if native_bfloat16():  # emulated bf16 (AVX2-only CPUs) is ~100x slower than float32: skip it there
        variants["exact, bf16 base"] = ("exact", "bfloat16")
    else:
        print(f"no native bf16 on this CPU ({torch.backends.cpu.get_cpu_capability()}): bf16 base variant skipped")
    stages = {}
    for key, (mode, compute) in variants.items():
        stages[key] = stage_for(mode, args.method, args.batch_size, tmp, compute, args.directions)
        stages[key].setup()
        stages[key].process_batch(batch_of(rows[:2], 10_000))  # warm-up (not timed)
    keep = stages["exact"]
    lm, d = keep.load(), keep.directions
    t0 = time.perf_counter()
    dense = (dense_directions(d.danger), dense_directions(d.safety))
    merge_s = time.perf_counter() - t0
    reference_scores(lm.model, lm.tokenizer, rows[:1], d, 1.0, 256, dense=dense)  # warm-up

    times: dict[str, list[float]] = {k: [] for k in ("reference", *variants)}
    scores: dict[str, list[dict]] = {}
    for _ in range(args.rounds):  # interleaved, so a load swing hits every method alike
        t0 = time.perf_counter()
        ref = reference_scores(lm.model, lm.tokenizer, rows[:ref_n], d, 1.0, 256, dense=dense)
        times["reference"].append((time.perf_counter() - t0) / ref_n)
        for key, stage in stages.items():
            stage.store = KeyedStore(tmp / f"cache-{time.time_ns()}", "sample_id", stage.store.schema)  # all rows
            t0 = time.perf_counter()
            scores[key] = stage.process_batch(batch_of(rows)).to_pylist()
            times[key].append((time.perf_counter() - t0) / n)
    load = os.getloadavg()[0]

    def worst_rel(got_rows):
        worst = 0.0
        for got, want in zip(got_rows, ref):
            for part in ("danger", "safety"):
                err = abs(got[f"risk_sqsd_{part}"] - want[part]) / max(abs(want[part]), want[f"{part}_l1"])
                worst = max(worst, err)
        return worst

    worst = worst_rel(scores["exact"])
    ref_rate = 1 / min(times["reference"])
    print(f"| engine | samples/s (best of {args.rounds}) | vs reference (best) | vs reference (median of rounds) |")
    print("|---|---|---|---|")
    print(f"| batch-1 dense reference (float32, exact) | {ref_rate:.3f} | 1.00x | 1.00x |")
    for key in variants:
        per_round = statistics.median(r / t for r, t in zip(times["reference"], times[key]))
        print(f"| risk.sqsd {key} | {1 / min(times[key]):.3f} | {min(times['reference']) / min(times[key]):.2f}x | "
              f"{per_round:.2f}x |")
    print(f"load average at the end: {load:.2f}; dense direction merge (reference, one-off): {merge_s:.2f}s")
    print(f"exact vs reference: max relative error {worst:.2e} ({'OK' if worst < 1e-4 else 'MISMATCH'}) "
          f"on {ref_n} samples")
    exact, bf16 = scores["exact"], scores.get("exact, bf16 base")
    for col in COLUMNS if bf16 else ():
        a, b = [r[col] for r in exact], [r[col] for r in bf16]
        print(f"bf16 base vs reference: {worst_rel(bf16):.2e}; "
              f"bf16 base vs float32 exact, {col}: Spearman {spearmanr(a, b)[0]:.4f}, max abs diff "
              f"{max(abs(x - y) for x, y in zip(a, b)):.2e} (float32 range {min(a):.3f}..{max(a):.3f}) on {n} samples")
    rho = spearmanr([r["risk_sqsd"] for r in exact], [r["risk_sqsd"] for r in scores["shared_state"]])[0]
    print(f"Spearman(exact, shared_state) risk_sqsd on these {n} synthetic samples: {rho:.3f}")
    if worst >= 1e-4:
        sys.exit(1)


if __name__ == "__main__":
    main()
