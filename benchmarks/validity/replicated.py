"""Part A, replicated (issue 18): does a risk scorer order its windows when every rank band is measured
several times, on data no configuration choice has seen?

- Pool: the confirmation set, ``pool`` rows of the demo pool disjoint from the full mode's 160-row pool
  (the rows the diagnosis and every configuration choice looked at): the demo pool's seeded sample of
  ``pool + 160`` rows minus that sample's first 160 (the ingest sampler ranks rows by a seeded hash, so a
  larger sample contains the smaller one). Scored on the aligned model by the curator pipeline with the
  stages' DEFAULT parameters (``risk.sqsd``; ``risk.anchor_similarity`` with ``methods: [grad]``).
- Windows: per scorer, the top band (the ``replicates × window`` highest-scoring rows) is dealt round-robin
  by rank into ``replicates`` windows, so each is a draw from the same band; the bottom band likewise; the
  random band is ``replicates`` disjoint seeded random windows of the pool, shared by every scorer.
- Each window: the full mode's fine-tune (LoRA r=8, lr 1e-3, 4 epochs of 32 rows) and measurement (Δ shift
  on the held-out triples, greedy harmful refusal).
- Interval: a hierarchical bootstrap that covers both sources of variance: each draw resamples the
  evaluation triples (paired across windows) and, within every band, the band's windows, then takes the
  mean over the drawn windows of their mean shift over the drawn triples. A scorer *orders its windows* iff
  the 95 % intervals of top − bottom and top − random both lie above 0.

    python -m benchmarks.validity --steps replicated      (after the one-time ``--steps aligned``)
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import asdict
from pathlib import Path

import numpy as np

import curator
from benchmarks.validity.eval import eval_sets
from benchmarks.validity.finetune import (
    aligned_baseline,
    finetune_and_measure,
    rates,
)
from benchmarks.validity.risk import delta_triples, outcome
from benchmarks.validity.windows import composition
from curator.hashing import sha256_text
from curator.ml.models import curator_home
from curator.query import connect

REPLICATED = {"pool": 480, "dev_pool": 160, "window": 32, "replicates": 3, "lr": 1e-3, "epochs": 4,
              "eval_tokens": 32, "n_boot": 2000,
              "scorers": {"risk_sqsd": {"use": "risk.sqsd"},
                          "risk_grad": {"use": "risk.anchor_similarity", "with": {"methods": ["grad"]}}}}


def pool_sample(n: int, seed: int) -> list[dict]:
    """The demo pool's seeded ``n``-row sample as the validity recipes ingest it (same sample ids), by id."""
    with tempfile.TemporaryDirectory() as tmp:
        recipe = {"curator": 1, "name": "pool", "shards": 1, "stages": [{"use": "normalize"}],
                  "inputs": [{"path": "builtin:demo_pool", "sample": n, "sample_seed": seed}]}
        curator.run(recipe, Path(tmp) / "run", quiet=True)
        return connect(Path(tmp) / "run").sql("SELECT sample_id, prompt, response, source FROM samples "
                                              "ORDER BY sample_id").to_arrow_table().to_pylist()


def confirmation_pool(cfg: dict, seed: int) -> Path:
    """JSONL of the pool rows disjoint from the full mode's pool (written once under $CURATOR_HOME)."""
    path = curator_home() / "validity" / f"confirm-pool-{cfg['pool']}-{cfg['dev_pool']}-{seed}.jsonl"
    if not path.is_file():
        dev = {(r["prompt"], r["response"]) for r in pool_sample(cfg["dev_pool"], seed)}
        rows = [{k: r[k] for k in ("prompt", "response", "source")}
                for r in pool_sample(cfg["pool"] + cfg["dev_pool"], seed) if (r["prompt"], r["response"]) not in dev]
        if len(rows) != cfg["pool"]:
            raise SystemExit(f"confirmation pool has {len(rows)} rows, expected {cfg['pool']}")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
    return path


def score_pool(aligned_dir: Path, cfg: dict, seed: int, quiet: bool) -> list[dict]:
    pool = confirmation_pool(cfg, seed)
    stages = [{"use": "normalize"}, *({k: v for k, v in s.items()} for s in cfg["scorers"].values())]
    recipe = {"curator": 1, "name": "validity-replicated", "shards": 4, "model": str(aligned_dir), "seed": seed,
              "inputs": [{"path": str(pool)}], "stages": stages, "executor": {"kind": "local", "workers": 1}}
    run_dir = curator_home() / "validity" / "runs" / f"replicated-{sha256_text(json.dumps(recipe, sort_keys=True))[:12]}"
    curator.run(recipe, run_dir, inputs=[str(pool)], quiet=quiet)  # as --input: the pool lives under $CURATOR_HOME
    cols = ", ".join(f"s.{c}" for c in cfg["scorers"])
    return connect(run_dir).sql(f"SELECT m.sample_id, m.prompt, m.response, m.source, {cols} FROM scores s "
                                "JOIN samples m USING (sample_id) ORDER BY m.sample_id").to_arrow_table().to_pylist()


def band_windows(rows: list[dict], column: str, window: int, replicates: int) -> dict[str, list[list[dict]]]:
    """Top and bottom bands of ``replicates × window`` rows, dealt round-robin by rank into windows."""
    ranked = sorted((r for r in rows if r[column] is not None and np.isfinite(r[column])),
                    key=lambda r: (-r[column], r["sample_id"]))
    n = replicates * window
    deal = lambda band: [band[j::replicates] for j in range(replicates)]  # noqa: E731
    return {"top": deal(ranked[:n]), "bottom": deal(ranked[::-1][:n])}


def random_windows(rows: list[dict], window: int, replicates: int, seed: int) -> list[list[dict]]:
    """``replicates`` disjoint seeded random windows."""
    order = sorted(rows, key=lambda r: sha256_text(seed, "replicated-random", r["sample_id"]))
    return [order[j * window:(j + 1) * window] for j in range(replicates)]


def hierarchical_bootstrap(bands: dict[str, list[np.ndarray]], contrasts: list[tuple[str, str]], n_boot: int,
                           seed: int = 0) -> dict[str, dict]:
    """Point estimate and 95 % interval of mean(band a) − mean(band b), resampling triples (paired) and
    each band's windows; a band's value is the mean over its windows of the mean shift over triples."""
    rng = np.random.default_rng(seed)
    n = len(next(iter(bands.values()))[0])
    per = {k: np.stack(v) for k, v in bands.items()}  # [windows, triples]
    draws = {c: [] for c in contrasts}
    for _ in range(n_boot):
        idx = rng.integers(0, n, n)
        means = {k: float(w[rng.integers(0, len(w), len(w))][:, idx].mean()) for k, w in per.items()}
        for a, b in contrasts:
            draws[(a, b)].append(means[a] - means[b])
    out = {}
    for a, b in contrasts:
        lo, hi = np.percentile(draws[(a, b)], [2.5, 97.5])
        out[f"{a}_minus_{b}"] = {"delta_shift": float(per[a].mean() - per[b].mean()), "ci95": [float(lo), float(hi)],
                                 "excludes_0_above": bool(lo > 0)}
    return out


def step_replicated(args, mode: dict, aligned_dir: Path, original_dir: Path, judges: dict) -> dict:
    cfg = REPLICATED
    rows = score_pool(aligned_dir, cfg, args.seed, args.quiet)
    print(f"[R] scored {len(rows)} confirmation rows with {list(cfg['scorers'])}", flush=True)
    triples = delta_triples(mode, args.seed, original_dir, aligned_dir, 64, judges["keyword"])
    sets = eval_sets(mode, args.seed)
    ev, ft, lm, spec, base = aligned_baseline(aligned_dir, {"harmful": sets["harmbench"] + sets["do_not_answer"]},
                                              triples, cfg, args.seed, judges)

    def measure(window_rows: list[dict], label: str) -> tuple[dict, np.ndarray]:
        rec = finetune_and_measure(lm, spec.fingerprint, window_rows, ft, ev, judges, progress=not args.quiet)
        res = {"label": label, **outcome(rec, base), **composition(window_rows),
               "response_chars_mean": float(np.mean([len(r["response"] or "") for r in window_rows]))}
        print(f"[R] {label:28s} Δ shift {res['delta_shift_mean']:+.3f} harmful refusal "
              f"{res['refusal']['harmful']['keyword']['rate']:.3f}", flush=True)
        return res, np.array(rec["measured"]["delta"]) - np.array(base["measured"]["delta"])

    randoms = [measure(w, f"random #{j + 1}") for j, w in enumerate(random_windows(rows, cfg["window"],
                                                                                     cfg["replicates"], args.seed))]
    out = {"config": {**{k: v for k, v in cfg.items() if k != "scorers"}, "scorers": cfg["scorers"],
                      "finetune": asdict(ft), "delta_triples": triples["record"] | {"n": len(triples["prompts"])}},
           "aligned": {"delta_mean": float(np.mean(base["measured"]["delta"])), "refusal": rates(base["measured"])},
           "random": [r for r, _ in randoms], "scorers": {}}
    for col in cfg["scorers"]:
        bands = band_windows(rows, col, cfg["window"], cfg["replicates"])
        measured = {b: [measure(w, f"{col} {b} #{j + 1}") for j, w in enumerate(ws)] for b, ws in bands.items()}
        shifts = {"random": [s for _, s in randoms], **{b: [s for _, s in m] for b, m in measured.items()}}
        contrasts = hierarchical_bootstrap(shifts, [("top", "bottom"), ("top", "random"), ("random", "bottom")],
                                           cfg["n_boot"], args.seed)
        ordered = contrasts["top_minus_bottom"]["excludes_0_above"] and contrasts["top_minus_random"]["excludes_0_above"]
        out["scorers"][col] = {"windows": {b: [r | {"score_mean": float(np.mean([x[col] for x in w]))}
                                               for (r, _), w in zip(m, bands[b])] for b, m in measured.items()},
                               **contrasts, "orders_its_windows": ordered}
        print(f"[R] {col}: top-bottom {contrasts['top_minus_bottom']['delta_shift']:+.3f} "
              f"{np.round(contrasts['top_minus_bottom']['ci95'], 3)}, top-random "
              f"{contrasts['top_minus_random']['delta_shift']:+.3f} {np.round(contrasts['top_minus_random']['ci95'], 3)}"
              f"; orders its windows: {ordered}", flush=True)
    return out
