"""Throughput of the forward-only risk stages on the default model, 256-token samples.

Prints samples/s of ``risk.compliance`` (early exit at its CAS layer) and ``risk.anchor_similarity``
(``rep`` and ``grad`` separately), and, measured in the same run on the same padded batches, of one
full forward pass: the causal LM with ``output_hidden_states=True`` (what DataShield's reference code
runs) and the bare decoder stack (no LM head). Reference artifacts are built (or loaded) before timing.
Timings interleave the methods over ``--rounds`` rounds and report the median, since the machine is shared.

    python -m benchmarks.perf.risk_forward              # 64 samples x 3 rounds
    python -m benchmarks.perf.risk_forward --quick      # 16 samples x 1 round
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import torch

from curator.keyed_store import KeyedStore
from curator.ml.chat import collate, encode_sample
from curator.refdata.demo_pool import load_demo_pool
from curator.stage import StageContext
from filters.risk.anchor_similarity import AnchorSimilarityParams, AnchorSimilarityStage
from filters.risk.compliance import ComplianceParams, ComplianceStage

TOKENS = 256


def make_rows(tokenizer, n: int, tokens: int = TOKENS) -> list[dict]:
    """Demo-pool prompts with responses cut so that prompt + response ≈ ``tokens`` tokens."""
    pool = load_demo_pool().to_pylist()
    filler = " ".join(r["response"] or "" for r in pool[:400])
    filler_ids = tokenizer.encode(filler, add_special_tokens=False)
    rows = []
    for i in range(n):
        prompt = pool[i % len(pool)]["prompt"] or "Tell me something."
        p_len = encode_sample(tokenizer, prompt, "").prompt_len
        start = (i * 97) % (len(filler_ids) - tokens)
        resp = tokenizer.decode(filler_ids[start : start + max(8, tokens - p_len - 1)])
        rows.append({"sample_id": f"s{i:05d}", "prompt": prompt, "response": resp})
    return rows


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--samples", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=TOKENS, help="target prompt + response length")
    ap.add_argument("--stages", default="compliance,rep,grad", help="comma list of compliance, rep, grad")
    ap.add_argument("--out", type=Path, default=None, help="append a markdown table to this file")
    args = ap.parse_args()
    if args.quick:
        args.samples, args.rounds = 16, 1
    work = Path(tempfile.mkdtemp(prefix="risk-forward-"))

    def stage(cls, params, tag):
        ctx = StageContext(run_dir=work, cache_dir=work / tag, model="default", quiet=True)
        s = cls(params, ctx)
        s.setup()
        return s

    bs = args.batch_size
    wanted = set(args.stages.split(","))
    comp = stage(ComplianceStage, ComplianceParams(batch_size=bs), "c")
    model, tok = comp.load().model, comp.load().tokenizer
    rows = make_rows(tok, args.samples, args.tokens)
    table = pa.Table.from_pylist(rows)
    samples = sorted((encode_sample(tok, r["prompt"], r["response"]) for r in rows), key=lambda s: len(s.input_ids))
    lengths = [len(s.input_ids) for s in samples]
    batches = [collate(samples[i : i + bs], tok.pad_token_id) for i in range(0, len(samples), bs)]

    def run_stage(s, tag):
        def go():
            s.store = KeyedStore(work / f"{tag}-{time.time_ns()}", "sample_id", s.store.schema)  # empty: score all rows
            s.process_batch(table.to_batches(max_chunksize=len(rows))[0])
        return go

    def full_lm():
        with torch.inference_mode():
            for b in batches:
                model(input_ids=b["input_ids"], attention_mask=b["attention_mask"], output_hidden_states=True,
                      use_cache=False)

    def full_stack():
        with torch.inference_mode():
            for b in batches:
                model.base_model(input_ids=b["input_ids"], attention_mask=b["attention_mask"], use_cache=False)

    methods = {"full forward (LM + hidden states)": full_lm, "full forward (decoder stack only)": full_stack}
    if "compliance" in wanted:
        methods[f"risk.compliance (exit after hidden_states[{comp.layer}])"] = run_stage(comp, "c")
    for m in ("rep", "grad"):
        if m in wanted:
            st = stage(AnchorSimilarityStage, AnchorSimilarityParams(methods=(m,), batch_size=bs), m)
            methods[f"risk.anchor_similarity {m}"] = run_stage(st, m)
    times: dict[str, list[float]] = {k: [] for k in methods}
    for _ in range(args.rounds):
        for name, fn in methods.items():
            times[name].append(timed(fn))
    med = {k: statistics.median(v) for k, v in times.items()}
    ref_lm, ref_stack = med["full forward (LM + hidden states)"], med["full forward (decoder stack only)"]
    n_layers = model.config.num_hidden_layers
    lines = [f"model default (SmolLM2-135M-Instruct, {n_layers} blocks), {args.samples} samples, "
             f"{min(lengths)}-{max(lengths)} tokens (mean {sum(lengths) / len(lengths):.0f}), batch {bs}, "
             f"{args.rounds} round(s), torch {torch.__version__}, {torch.get_num_threads()} threads, "
             f"load average {os.getloadavg()[0]:.1f}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
             "", "| method | samples/s | time ratio vs full LM forward | vs decoder-stack forward |", "|---|---|---|---|"]
    for name, t in med.items():
        lines.append(f"| {name} | {args.samples / t:.2f} | {ref_lm / t:.2f}x | {ref_stack / t:.2f}x |")
    text = "\n".join(lines)
    print(text)
    if args.out:
        with open(args.out, "a", encoding="utf-8") as fh:
            fh.write(text + "\n\n")


if __name__ == "__main__":
    main()
