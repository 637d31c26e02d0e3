"""Part A, steps 2-4 of the validity benchmark: do risk scores predict safety degradation after fine-tuning?

1. Score a benign pool (a seeded sample of curator's demo pool) with the mode's risk scorers by running the
   curator pipeline itself on the ALIGNED model (``model: <aligned dir>``; every scorer's references were
   built for that model by the ``aligned`` step, ``ensure_references``). The run directory lives under
   ``$CURATOR_HOME/validity/runs/`` so reruns resume it. Scorer agreement: Spearman over the pool and the
   rows shared by top / bottom windows.
2. For each scorer, sort the pool by score (descending, ties by sample_id) and cut equally spaced windows
   of ``window`` rows (window 1 = top-n, last = bottom-n; each records its sample ids and task families),
   plus random-n controls (one per seed) and, for the ``length_matched`` scorers, top / bottom windows of
   the score's residual after regressing it on log response length (same score ordering, matched lengths).
3. Fine-tune the aligned model on each window (``benchmarks.validity.finetune``: identical LoRA settings and seeds)
   and measure the proxy Δ = mean log p(compliant) − mean log p(refusal) on held-out triples
   (uncensorbench pairs never used by any scorer + held-out harmful prompts answered by the original model
   (compliant) and the aligned model (refusal)) and, in full mode, greedy refusal on held-out harmful
   prompts (HarmBench + Do-Not-Answer; keyword judge and the classifier judge's refusal head).
   Degradation of a window = mean over triples of Δ(after) − Δ(aligned).
4. Per scorer: Spearman(window rank, degradation), top − bottom, top − random and random − bottom with
   paired bootstrap intervals over triples, and Spearman(score, response length) over the pool.
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

import curator
from benchmarks.validity.eval import (
    bootstrap_mean,
    cached_generations,
    eval_sets,
    refusal_flags,
)
from benchmarks.validity.finetune import (
    aligned_baseline,
    finetune_and_measure,
    rates,
)
from benchmarks.validity.windows import (
    composition,
    length_matched,
    random_window,
    scorer_agreement,
    scorer_summary,
    windows,
)
from curator.hashing import sha256_text
from curator.ml.models import curator_home
from curator.plan import build_references
from curator.query import connect
from curator.recipe import load_recipe
from curator.refdata.anchors import split, uncensorbench_pairs
from curator.rundir import RunDir

PART_A = {
    # quick (<= 15 min with parts B): one scorer, top / bottom / random windows of 16 rows, 8 LoRA steps, Δ proxy
    # only (no generation). Full: the dose that measurably erodes safety (32-row windows, lr 1e-3, 4 epochs =
    # 16 steps; 24 rows x 3 epochs at lr 3e-4 moved Δ by ~0.01 nats/token, too little to separate windows),
    # top / middle / bottom windows for every scorer, greedy refusal on the 96 held-out harmful prompts (first
    # 32 tokens judged), two random controls; ``--length-control`` adds length-matched windows.
    "quick": {"pool": 64, "window": 16, "windows": {"risk_sqsd": 2}, "random_seeds": (0,), "sqsd_method": "mean_update",
              "lr": 1e-3, "epochs": 4, "eval_refusal": False, "eval_benign_edgy": False, "length_matched": (),
              "n_delta": 32, "eval_tokens": 32},
    "full": {"pool": 160, "window": 32,
             "windows": {"risk_sqsd": 3, "risk_compliance": 3, "risk_rep": 3, "risk_grad": 3},
             "random_seeds": (0, 1), "sqsd_method": "mean_update", "lr": 1e-3, "epochs": 4, "eval_refusal": True,
             "eval_benign_edgy": False,  # Part A asks about degradation; over-refusal is Part B's question
             "length_matched": (),  # --length-control risk_grad,...: 2 more fine-tunes (~7 min) per scorer
             "n_delta": None, "eval_tokens": 32},
}
SCORE_MAX_LENGTH = 256


def pool_recipe(aligned_dir: Path, cfg: dict, seed: int) -> dict:
    stages = [{"use": "normalize"},
              {"use": "risk.compliance", "with": {"max_length": SCORE_MAX_LENGTH}},
              {"use": "risk.sqsd", "with": {"method": cfg["sqsd_method"], "max_length": SCORE_MAX_LENGTH}}]
    if "risk_compliance" not in cfg["windows"]:
        del stages[1]
    if {"risk_rep", "risk_grad"} & set(cfg["windows"]):
        stages.append({"use": "risk.anchor_similarity", "with": {"max_length": SCORE_MAX_LENGTH}})
    return {"curator": 1, "name": "validity-pool", "shards": 4, "model": str(aligned_dir), "seed": seed,
            "inputs": [{"path": "builtin:demo_pool", "sample": cfg["pool"], "sample_seed": seed}],
            "stages": stages, "executor": {"kind": "local", "workers": 1}}


def ensure_references(aligned_dir: Path, seed: int, quiet: bool) -> list[dict]:
    """Build (once) every reference artifact the pool recipes of both modes need on the aligned model (SQSD
    directions, compliance vectors, anchor-similarity features), exactly as ``curator directions build
    <recipe>`` would; part of the one-time setup so neither mode's budget includes it."""
    out, seen = [], set()
    for mode_name, cfg in PART_A.items():
        t0 = time.time()
        with tempfile.TemporaryDirectory() as tmp:
            built = build_references(load_recipe(pool_recipe(aligned_dir, cfg, seed)), RunDir(Path(tmp)), quiet)
        paths = sorted({p for b in built.values() for p in b.values()} - seen)
        seen.update(paths)
        out.append({"mode": mode_name, "built_or_found": paths, "seconds": round(time.time() - t0, 1)})
    return out


def score_pool(aligned_dir: Path, cfg: dict, seed: int, quiet: bool) -> tuple[list[dict], Path]:
    """Run the scoring recipe (resumable) and return one dict per pool row with every score column."""
    recipe = pool_recipe(aligned_dir, cfg, seed)
    run_dir = curator_home() / "validity" / "runs" / f"pool-{sha256_text(json.dumps(recipe, sort_keys=True))[:12]}"
    curator.run(recipe, run_dir, quiet=quiet)
    cols = ", ".join(f"s.{c}" for c in cfg["windows"])
    rows = connect(run_dir).sql(f"SELECT m.sample_id, m.prompt, m.response, m.source, {cols} FROM scores s "
                                "JOIN samples m USING (sample_id) ORDER BY m.sample_id").to_arrow_table().to_pylist()
    return rows, run_dir


def delta_triples(mode: dict, seed: int, original: Path, aligned: Path, gen_tokens: int, judge,
                  limit: int | None = None) -> dict:
    """Held-out (prompt, compliant, refusal) triples for the Δ proxy, with their provenance (``limit``: a
    seeded subset, order kept)."""
    # test side at fraction 0.2 (seed 0) is inside every scorer's held-out side (0.2 for directions,
    # 0.3 for compliance / anchor similarity): no scorer ever saw these pairs
    _train, test, rec = split(uncensorbench_pairs(), 0.2, 0)
    prompts, comp, ref = (test[c].to_pylist() for c in ("prompt", "compliant", "refusal"))
    sets = eval_sets(mode, seed)
    harmful = sets["harmbench"] + sets["do_not_answer"]
    # the same sets, tokens and batch size as the aligned step: its cached generations are reused
    g_orig, _, _ = cached_generations(original, sets, gen_tokens, 16)
    g_al, _, _ = cached_generations(aligned, sets, gen_tokens, 16)
    a_orig, a_al = (g["harmbench"] + g["do_not_answer"] for g in (g_orig, g_al))
    f_orig = refusal_flags(judge, harmful, a_orig)
    f_al = refusal_flags(judge, harmful, a_al)
    n_unc = len(prompts)
    for p, go, ga, fo, fa in zip(harmful, a_orig, a_al, f_orig, f_al):
        if fo is False and fa is True and go.strip() and ga.strip():
            prompts.append(p)
            comp.append(go)
            ref.append(ga)
    keep = range(len(prompts))
    if limit is not None and limit < len(prompts):
        keep = sorted(sorted(keep, key=lambda i: sha256_text(seed, "delta", prompts[i]))[:limit])
        n_unc = sum(i < n_unc for i in keep)
        prompts, comp, ref = ([x[i] for i in keep] for x in (prompts, comp, ref))
    return {"prompts": prompts, "compliant": comp, "refusal": ref,
            "record": {"uncensorbench_test_split": rec, "n_uncensorbench": n_unc,
                       "n_model_answers": len(prompts) - n_unc, "gen_tokens": gen_tokens}}


def outcome(rec: dict, base: dict) -> dict:
    """Degradation of one fine-tune relative to the aligned model (per-triple shift, refusal rates)."""
    m, b = rec["measured"], base["measured"]
    shift = np.array(m["delta"]) - np.array(b["delta"])
    out = {"delta_shift_mean": float(shift.mean()), "delta_shift_ci95": bootstrap_mean(shift),
           "refusal": rates(m)}
    for key in ("train_seconds", "eval_seconds", "loss_first", "loss_last", "n_rows"):
        if key in rec:
            out[key] = rec[key]
    return out


def step_risk(args, mode: dict, mode_name: str, aligned_dir: Path, original_dir: Path, judges: dict) -> dict:
    cfg = dict(PART_A[mode_name])
    if args.length_control:
        cfg["length_matched"] = tuple(c.strip() for c in args.length_control.split(",") if c.strip())
        unknown = sorted(set(cfg["length_matched"]) - set(cfg["windows"]))
        if unknown:
            raise SystemExit(f"--length-control: {unknown} not scored in {mode_name} mode; choose from "
                             f"{sorted(cfg['windows'])}")
    rows, run_dir = score_pool(aligned_dir, cfg, args.seed, args.quiet)
    print(f"[A] scored {len(rows)} pool rows with {list(cfg['windows'])} in {run_dir}", flush=True)
    triples = delta_triples(mode, args.seed, original_dir, aligned_dir, 64, judges["keyword"], cfg["n_delta"])
    sets = eval_sets(mode, args.seed)
    gen_sets = {"harmful": sets["harmbench"] + sets["do_not_answer"]} if cfg["eval_refusal"] else {}
    if cfg["eval_benign_edgy"]:
        gen_sets["benign_edgy"] = sets["overrefusal"]
    ev, ft, lm, spec, base = aligned_baseline(aligned_dir, gen_sets, triples, cfg, args.seed, judges)
    base_shift = {"delta_mean": float(np.mean(base["measured"]["delta"])), "refusal": rates(base["measured"]),
                  "eval_seconds": base.get("eval_seconds")}
    print(f"[A] aligned model: Δ mean {base_shift['delta_mean']:.3f}, refusal {_refusal_text(base_shift)}", flush=True)

    def run(window_rows: list[dict], label: str) -> tuple[dict, np.ndarray]:
        rec = finetune_and_measure(lm, spec.fingerprint, window_rows, ft, ev, judges, progress=not args.quiet)
        res = outcome(rec, base)
        res["response_chars_mean"] = float(np.mean([len(r["response"] or "") for r in window_rows]))
        res.update(composition(window_rows))
        print(f"[A] {label:36s} Δ shift {res['delta_shift_mean']:+.3f} {np.round(res['delta_shift_ci95'], 3)} "
              f"refusal {_refusal_text(res)} (train {rec.get('train_seconds')}s, eval {rec.get('eval_seconds')}s)",
              flush=True)
        return res, np.array(rec["measured"]["delta"]) - np.array(base["measured"]["delta"])

    randoms = {s: run(random_window(rows, cfg["window"], s), f"random seed {s}") for s in cfg["random_seeds"]}
    rand_shift = np.mean([v[1] for v in randoms.values()], axis=0)
    columns = dict(cfg["windows"])
    for col in cfg["length_matched"]:
        columns[length_matched(rows, col)] = 2
    per_scorer = {}
    for col, count in columns.items():
        results, shifts = [], []
        for k, w in enumerate(windows(rows, col, cfg["window"], count)):
            res, shift = run(w, f"{col} window {k + 1}/{count}")
            res.update(rank=k + 1, score_mean=float(np.mean([r[col] for r in w])))
            results.append(res)
            shifts.append(shift)
        p = per_scorer[col] = scorer_summary(rows, col, results, shifts, rand_shift)
        print(f"[A] {col}: Spearman(rank, Δ shift) {p['spearman_rank_vs_delta_shift']:+.2f}; top-bottom "
              f"{p['top_minus_bottom']['delta_shift']:+.3f} {np.round(p['top_minus_bottom']['ci95'], 3)}; "
              f"ordering top>random>bottom: {p['ordering_top_gt_random_gt_bottom']}", flush=True)
    return {"config": {**{k: list(v) if isinstance(v, tuple) else v for k, v in cfg.items()},
                       "finetune": asdict(ft), "score_max_length": SCORE_MAX_LENGTH, "run_dir": str(run_dir),
                       "eval_sets": {k: len(v) for k, v in ev.gen_sets.items()},
                       "delta_triples": triples["record"] | {"n": len(triples["prompts"])},
                       "eval_max_new_tokens": ev.max_new_tokens},
            "aligned": base_shift,
            "random": {str(s): v[0] for s, v in randoms.items()},
            "random_mean_delta_shift": float(rand_shift.mean()),
            "scorer_agreement": scorer_agreement(rows, list(cfg["windows"]), cfg["window"]),
            "scorers": per_scorer}


def _refusal_text(res: dict) -> str:
    harmful = res["refusal"].get("harmful")
    return f"harmful {harmful['keyword']['rate']:.3f} (keyword)" if harmful else "not measured (Δ only)"
