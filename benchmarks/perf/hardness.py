"""Hardness throughput: batched rollouts vs a one-row-at-a-time loop, and judge throughput.

Same run, same model (the default SmolLM2-135M-Instruct unless --model), same prompts (AdvBench):

- ``batched``: ``curator.ml.generate.BlockSampler`` with blocks of ``--block`` rollouts per prompt (shared
  prefill, KV cache) -- what the ``hardness`` stage runs;
- ``one-at-a-time``: the same sampler with block 1 (each (prompt, j) alone);
- ``hf-generate loop``: ``model.generate`` per row with a fresh ``GenerationConfig`` (do_sample, T, top_p,
  top_k=0 passed explicitly) -- the naive reference.

Generated tokens/s are reported with their ratio to the one-at-a-time loop. Judge throughput: pairs/s
of the keyword and classifier judges on the batched rollouts (model loading excluded).

    python -m benchmarks.perf.hardness --out benchmarks/results/hardness.md
"""

from __future__ import annotations

import argparse
import platform
import time

import torch
from transformers import GenerationConfig

from curator.ml.chat import end_of_turn_id, render_generation_prompt
from curator.ml.generate import BlockSampler, Sampling
from curator.ml.models import load_model
from curator.refdata.anchors import advbench
from filters.hardness.judges.classifier import ClassifierJudge
from filters.hardness.judges.keyword import KeywordRefusalJudge
from filters.hardness.rollouts import rollout_seed


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="default")
    ap.add_argument("--prompts", type=int, default=4)
    ap.add_argument("--block", type=int, default=8)
    ap.add_argument("--single-rows", type=int, default=6, help="rows for the one-at-a-time references")
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: robust when the CPU is shared)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    lm = load_model(args.model, device="cpu")
    tok = lm.tokenizer
    sampler = BlockSampler(lm.model, tok)
    prompts = advbench()["prompt"].to_pylist()[: args.prompts]
    ids = [render_generation_prompt(tok, p) for p in prompts]
    gen = Sampling(max_new_tokens=args.max_new_tokens)
    blocks = [(x, [rollout_seed(0, p, j) for j in range(args.block)]) for x, p in zip(ids, prompts)]
    sampler.sample(blocks[:1], Sampling(max_new_tokens=4))  # warm-up

    t0 = time.perf_counter()
    out = sampler.sample(blocks, gen)
    t_batched = time.perf_counter() - t0
    n_batched = sum(s.n_tokens for b in out for s in b)

    rows = [(x, seeds[j]) for x, (_, seeds) in zip(ids, blocks) for j in range(args.block)][: args.single_rows]
    t0 = time.perf_counter()
    single = sampler.sample([(x, [sd]) for x, sd in rows], gen)
    t_single = time.perf_counter() - t0
    n_single = sum(b[0].n_tokens for b in single)

    cfg = GenerationConfig(do_sample=True, temperature=1.0, top_p=1.0, top_k=0, max_new_tokens=args.max_new_tokens,
                           eos_token_id=sorted(sampler.stop_ids), pad_token_id=tok.pad_token_id)
    t0, n_hf = time.perf_counter(), 0
    with torch.inference_mode():
        for x, sd in rows:
            torch.manual_seed(sd % (2**63))
            g = lm.model.generate(torch.tensor([x]), attention_mask=torch.ones(1, len(x), dtype=torch.long),
                                  generation_config=cfg)
            new = g[0, len(x):].tolist()
            n_hf += len([t for t in new if t not in sampler.stop_ids])
    t_hf = time.perf_counter() - t0

    pairs = [(p, s.text) for p, b in zip(prompts, out) for s in b]
    kw = KeywordRefusalJudge()
    reps = max(1, 2000 // len(pairs))
    t0 = time.perf_counter()
    for _ in range(reps):
        kw.judge(pairs)
    kw_rate = reps * len(pairs) / (time.perf_counter() - t0)
    clf = ClassifierJudge.load_or_train()
    clf.judge(pairs[:2])
    t0 = time.perf_counter()
    clf.judge(pairs)
    clf_rate = len(pairs) / (time.perf_counter() - t0)

    r_b, r_s, r_h = n_batched / t_batched, n_single / t_single, n_hf / t_hf
    lines = [
        "# Hardness benchmark", "",
        f"Command: `python -m benchmarks.perf.hardness --prompts {args.prompts} --block {args.block} "
        f"--single-rows {args.single_rows} --max-new-tokens {args.max_new_tokens} --threads {args.threads}`", "",
        f"Machine: {platform.machine()}, torch threads {torch.get_num_threads()}, CPU only; model `{args.model}` "
        f"(end-of-turn id {end_of_turn_id(tok)}). Other jobs shared the CPU, so only ratios within this run mean "
        "anything.", "",
        "| rollouts | rows | generated tokens | seconds | tokens/s | vs one-at-a-time |",
        "|---|---|---|---|---|---|",
        f"| batched (block {args.block}, shared prefill) | {sum(len(b) for b in out)} | {n_batched} | {t_batched:.1f} "
        f"| {r_b:.1f} | {r_b / r_s:.2f}x |",
        f"| one-at-a-time (block 1) | {len(rows)} | {n_single} | {t_single:.1f} | {r_s:.1f} | 1.00x |",
        f"| hf generate loop (fresh GenerationConfig) | {len(rows)} | {n_hf} | {t_hf:.1f} | {r_h:.1f} "
        f"| {r_h / r_s:.2f}x |", "",
        "| judge | pairs/s |", "|---|---|",
        f"| keyword | {kw_rate:.0f} |",
        f"| classifier (MiniLM + logistic regression) | {clf_rate:.1f} |", "",
    ]
    text = "\n".join(lines)
    print(text)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as fh:
            fh.write(text)


if __name__ == "__main__":
    main()
