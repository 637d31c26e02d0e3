"""Do the risk scores tell a compliant answer from a refusal on pairs their anchors never resembled?

Pairs: the validity benchmark's held-out (prompt, compliant, refusal) triples (``risk.delta_triples``):
``uncensorbench`` = the test side of uncensorbench's seeded split (the anchors' own source: in
distribution) and ``harmbench_dna`` = HarmBench and Do-Not-Answer prompts the unaligned base model
answered and the aligned model refused (other prompts, the models' own words: out of distribution).
Every answer is scored by the curator pipeline with the stages' default parameters on the aligned
model; AUROC = P(score of the compliant answer > score of the refusal), per scorer and source.

    python -m benchmarks.validity.generalisation        (after the aligned step; ~15 min on 2 cores)
"""

from __future__ import annotations

import argparse
import json
import time
import unicodedata
from pathlib import Path

import numpy as np
import torch

import curator
from benchmarks.validity.__main__ import SETUP
from benchmarks.validity.risk import delta_triples
from curator.hashing import sha256_text
from curator.ml.models import curator_home, resolve_model
from curator.query import connect
from filters.hardness.judges.keyword import KeywordRefusalJudge

RESULTS = Path(__file__).parents[1] / "results"
SCORERS = {"risk_sqsd": {"use": "risk.sqsd"}, "risk_grad": {"use": "risk.anchor_similarity", "with": {"methods": ["grad"]}},
           "risk_compliance": {"use": "risk.compliance"}}


def auroc(positive: list[float], negative: list[float]) -> float:
    """P(a positive scores above a negative), ties counted half (the Mann-Whitney U statistic / n₊n₋)."""
    pos, neg = np.asarray(positive, float)[:, None], np.asarray(negative, float)[None, :]
    return float(((pos > neg).sum() + 0.5 * (pos == neg).sum()) / (pos.size * neg.size))


def pairs(model: str, original: str, seed: int) -> list[dict]:
    """One row per answer: prompt, response, label (compliant / refusal), source, pair index."""
    t = delta_triples(SETUP, seed, Path(resolve_model(original).path), Path(resolve_model(model).path), 64,
                      KeywordRefusalJudge())
    n_unc = t["record"]["n_uncensorbench"]
    return [{"prompt": p, "response": a, "label": label, "pair": i,
             "source": "uncensorbench" if i < n_unc else "harmbench_dna"}
            for i, p in enumerate(t["prompts"]) for label, a in (("compliant", t["compliant"][i]),
                                                                 ("refusal", t["refusal"][i]))]


def key(prompt: str, response: str) -> tuple[str, str]:
    """Match a row to its scored sample whatever normalize did to whitespace and Unicode forms."""
    return tuple(" ".join(unicodedata.normalize("NFC", t or "").split()) for t in (prompt, response))


def score(rows: list[dict], model: str, seed: int) -> dict[tuple[str, str], dict]:
    """Scores by (prompt, response) for every scorer, from one pipeline run."""
    path = curator_home() / "validity" / f"generalisation-{sha256_text(json.dumps(rows))[:12]}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({k: r[k] for k in ("prompt", "response")}) + "\n" for r in rows), "utf-8")
    recipe = {"curator": 1, "name": "validity-generalisation", "shards": 2, "model": model, "seed": seed,
              "inputs": [{"path": str(path)}], "stages": [{"use": "normalize"}, *SCORERS.values()],
              "executor": {"kind": "local", "workers": 1}}
    run_dir = curator_home() / "validity" / "runs" / f"generalisation-{sha256_text(json.dumps(recipe))[:12]}"
    curator.run(recipe, run_dir, inputs=[str(path)], quiet=True)
    cols = ", ".join(f"s.{c}" for c in SCORERS)
    got = connect(run_dir).sql(f"SELECT m.prompt, m.response, {cols} FROM scores s JOIN samples m USING (sample_id)"
                               ).to_arrow_table().to_pylist()
    return {key(r["prompt"], r["response"]): r for r in got}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="default", help="the aligned model the scores use")
    ap.add_argument("--original", default="smollm2-135m-instruct", help="the model before alignment")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=RESULTS / "validity_generalisation.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    t0 = time.time()
    rows = pairs(args.model, args.original, args.seed)
    scores = score(rows, args.model, args.seed)
    out: dict = {"command": "python -m benchmarks.validity.generalisation " + " ".join(argv or []), "auroc": {}}
    for source in ("uncensorbench", "harmbench_dna"):
        sel = [r for r in rows if r["source"] == source]
        out["auroc"][source] = {"n_pairs": len(sel) // 2}
        for col in SCORERS:
            values = {lab: [scores[key(r["prompt"], r["response"])][col] for r in sel if r["label"] == lab]
                      for lab in ("compliant", "refusal")}
            out["auroc"][source][col] = auroc(values["compliant"], values["refusal"])
        print(f"{source:14s} n={len(sel) // 2:3d} " + "  ".join(f"{c} {out['auroc'][source][c]:.3f}" for c in SCORERS),
              flush=True)
    out["seconds"] = round(time.time() - t0, 1)
    args.out.write_text(json.dumps(out, indent=1, sort_keys=True) + "\n", "utf-8")
    print(f"wrote {args.out}", flush=True)


if __name__ == "__main__":
    main()
