"""Why does ``risk.sqsd`` rank its windows backwards? Diagnosis E0-E2 of issue 18, without new fine-tunes.

The full validity run measured the Δ shift (safety erosion) of 16 fine-tunes on 32-row windows of the demo
pool, each window picked by some scorer (top / middle / bottom of four scorers, two random draws, two
length-matched windows). Their row ids are in ``results/validity*.json``. A scorer that predicts erosion
should give the more eroding windows the higher mean score. This script recomputes, on the same aligned
model, per-sample LoRA gradients of the pool rows and of the anchor sets, and scores the pool with many
variants that step from SQSD (``mean_update``) to ``risk_grad`` one factor at a time:

- anchor tokens (``encoding``): ``left192`` (SQSD today: the last 192 tokens, which drops the prompt and the
  answer's opening for most anchors), ``left256_first10`` (``risk_grad`` today: the last 256 tokens, then the
  loss on the first 10 response tokens left), ``right192`` (prompt kept, response cut at the end),
  ``resp_end192`` (encode_sample's
  default since the fix: the prompt's end and the response's opening, a long response cut at its end),
  ``full1024`` (no truncation in practice), ``first10`` / ``first32`` (prompt + the first k response tokens);
- anchor aggregation (``agg``): ``raw`` mean of anchor gradients (SQSD) or mean of unit-normalised ones;
- space: ``dW`` (the update ΔW = −∇B·A, SQSD) or ``B`` (the LoRA-B gradient itself, ``risk_grad``);
- similarity: ``module_cos`` (Σ over modules of per-module cosines, SQSD), ``global_cos`` (one cosine over
  all modules), ``unit_dot`` (⟨ĝ, D⟩ with ĝ the unit sample gradient and D the unnormalised anchor mean, so
  the danger and safety terms are weighted by the norm of their mean, ``risk_grad``).

For every variant: Spearman and Pearson over the windows of (window-mean score, measured Δ shift), for the
danger term, the safety term and their difference (E0 for the SQSD variant). E2 is the first-order
predictor of the benchmark's own outcome: one step on row i moves Δ by about
η(⟨g_i, ∇L_compliant⟩ − ⟨g_i, ∇L_refusal⟩) with the gradients averaged over the evaluation triples
(an oracle that looks at the test set: it bounds what a gradient scorer can do at this scale), plus the
Adam-like sign variant on each window's mean gradient.

``--step fixed``: the dev pool scored by ``risk.sqsd`` with its shipped defaults (window correlations as above).
E3 (``--step e3``): ``method: lora`` directions (the paper's trained task vectors: danger, safety and a
benign initial adapter) built on the aligned model with max_length 1024 (no anchor is truncated), and
the pool scored by ``risk.sqsd`` itself with them (danger projection at the initial adapter, safety
projection at the safety adapter).

    python -m benchmarks.validity.diagnose --aligned $CURATOR_HOME/models/aligned-<key> \\
        --out benchmarks/results/validity_diagnosis.json
    python -m benchmarks.validity.diagnose --step fixed --aligned $CURATOR_HOME/models/smollm2-135m-instruct-safe-<sha> \\
        --out benchmarks/results/validity_diagnosis_fixed.json
    python -m benchmarks.validity.diagnose --step e3 --aligned ... --out benchmarks/results/validity_diagnosis_e3.json
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from scipy.stats import pearsonr, spearmanr

import curator
from benchmarks.validity.replicated import pool_sample
from benchmarks.validity.risk import delta_triples
from curator.ml.chat import collate, encode_sample
from curator.ml.gradients import per_sample_lora_grads
from curator.ml.lora import LoRAConfig, attach_lora, lora_modules
from curator.ml.models import curator_home, load_model, resolve_model
from curator.ml.training import TrainConfig
from curator.query import connect
from curator.refdata.anchors import split, uncensorbench_pairs
from filters.hardness.judges.keyword import KeywordRefusalJudge
from filters.risk import directions as dirs

RESULTS = Path(__file__).parents[1] / "results"
ENCODINGS = ("left192", "resp_end192", "left256_first10", "right192", "full1024", "first10", "first32")
LORA = LoRAConfig(r=8, alpha=16.0)  # the fine-tunes', SQSD's and risk_grad's LoRA (same seed-0 A)
POOL_MAX_LENGTH = 256


def measured_windows(paths: list[Path]) -> list[dict]:
    """Every distinct measured window: {label, sample_ids, delta_shift}."""
    out, seen = [], set()
    for path in paths:
        risk = json.loads(path.read_text("utf-8"))["full"]["risk"]
        found = [(f"random{s}", w) for s, w in risk.get("random", {}).items()]
        for scorer, rec in risk["scorers"].items():
            found += [(f"{scorer}#{w['rank']}", w) for w in rec["windows"]]
        for label, w in found:
            key = tuple(sorted(w["sample_ids"]))
            if key not in seen:
                seen.add(key)
                out.append({"label": label, "sample_ids": list(key), "delta_shift": w["delta_shift_mean"]})
    return out


def encode(tok, prompt: str, response: str, encoding: str):
    if encoding == "left192":
        return encode_sample(tok, prompt, response, max_length=192, truncation_side="left")
    if encoding == "resp_end192":  # encode_sample's default now: prompt end + response opening, cut at the end
        return encode_sample(tok, prompt, response, max_length=192)
    if encoding == "right192":
        return encode_sample(tok, prompt, response, max_length=192, truncation_side="right")
    if encoding == "full1024":
        return encode_sample(tok, prompt, response, max_length=1024, truncation_side="right")
    if encoding == "left256_first10":
        s = encode_sample(tok, prompt, response, max_length=256, truncation_side="left")
        k = 10
    else:
        s = encode_sample(tok, prompt, response, max_length=4096)
        k = int(encoding.removeprefix("first"))
    return replace(s, input_ids=s.input_ids[: s.prompt_len + k], labels=s.labels[: s.prompt_len + k],
                   response_len=min(s.response_len, k))


class Grads:
    """Per-sample LoRA-B gradients at the seed-0 init (B = 0, so ∇A = 0), module by module."""

    def __init__(self, lm, batch_size: int = 8):
        self.lm, self.batch_size = lm, batch_size
        self.modules = lora_modules(lm.model)
        self.names = sorted(self.modules)
        self.gram = {n: (m.lora_A.detach().double() @ m.lora_A.detach().double().T) for n, m in self.modules.items()}
        self.rescale = {n: math.sqrt(3 * m.base.in_features / LORA.r) / m.scaling for n, m in self.modules.items()}

    def per_sample(self, samples: list, desc: str) -> dict[str, torch.Tensor]:
        """{module: [N, m, r] float32}, samples processed length-sorted, returned in input order."""
        order = sorted(range(len(samples)), key=lambda i: len(samples[i].input_ids))
        parts: dict[str, list] = {n: [] for n in self.names}
        t0 = time.time()
        for s in range(0, len(order), self.batch_size):
            chunk = [samples[i] for i in order[s:s + self.batch_size]]
            _, grads = per_sample_lora_grads(self.lm.model, collate(chunk, self.lm.tokenizer.pad_token_id),
                                             with_a=False)
            for n in self.names:
                parts[n].append(grads[n][1].float())
        inverse = torch.tensor(np.argsort(order))
        out = {n: torch.cat(parts[n])[inverse] for n in self.names}
        print(f"  {desc}: {len(samples)} samples in {time.time() - t0:.0f}s", flush=True)
        return out

    def unit_norms(self, g: dict[str, torch.Tensor]) -> torch.Tensor:
        """Global norm of each sample's rescaled B-gradient (the ``risk_grad`` feature), [N]."""
        sq = sum((g[n].double() * self.rescale[n]).pow(2).sum((1, 2)) for n in self.names)
        return sq.sqrt()

    def aggregate(self, g: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
        """Anchor means: ``raw`` (mean gradient) and ``unit`` (mean of unit-normalised rescaled gradients,
        stored unscaled so both live in the same coordinates)."""
        norms = self.unit_norms(g)
        return {"raw": {n: g[n].double().mean(0) for n in self.names},
                "unit": {n: (g[n].double() / norms[:, None, None]).mean(0) for n in self.names}}


def similarity(gr: Grads, pool: dict[str, torch.Tensor], d: dict[str, torch.Tensor], space: str, sim: str
               ) -> np.ndarray:
    """Similarity of every pool sample's gradient to direction ``d`` (see module docstring)."""
    dots, psq, dsq = [], [], []
    for n in gr.names:
        x = pool[n].double()
        if space == "dW":
            g = gr.gram[n]
            dots.append(torch.einsum("imr,rs,ms->i", x, g, d[n]))
            psq.append(torch.einsum("imr,rs,ims->i", x, g, x))
            dsq.append(torch.einsum("mr,rs,ms->", d[n], g, d[n]))
        else:
            c2 = gr.rescale[n] ** 2
            dots.append(torch.einsum("imr,mr->i", x, d[n]) * c2)
            psq.append(x.pow(2).sum((1, 2)) * c2)
            dsq.append(d[n].pow(2).sum() * c2)
    dots_t, psq_t, dsq_t = torch.stack(dots), torch.stack(psq), torch.stack(dsq)  # [M, N], [M, N], [M]
    if sim == "module_cos":
        out = (dots_t / (psq_t.sqrt() * dsq_t.sqrt()[:, None]).clamp(min=1e-30)).sum(0)
    elif sim == "global_cos":
        out = dots_t.sum(0) / (psq_t.sum(0).sqrt() * dsq_t.sum().sqrt())
    else:  # unit_dot: unit sample gradient, unnormalised direction
        out = dots_t.sum(0) / psq_t.sum(0).sqrt()
    return out.numpy()


def record_summary(diagnosis: Path, validity: Path = RESULTS / "validity.json") -> None:
    """Copy a diagnosis file's window statistics (no per-sample scores) into ``validity.json["diagnosis"]``."""
    d = json.loads(diagnosis.read_text("utf-8"))
    strip = lambda v: {k: x for k, x in v.items() if k not in ("scores", "window_means")}  # noqa: E731
    if "variants" in d:
        entry = {"e2": {k: strip(v) if isinstance(v, dict) else v for k, v in d["e2"].items()},
                 "e0_e1": {name: {t: strip(v[t]) for t in ("danger", "safety", "risk")}
                           for name, v in d["variants"].items()},
                 "anchor_tokens": d["anchor_tokens"], "key": "e0-e2"}
    else:
        entry = {"stats": {k: strip(v) for k, v in d["stats"].items()}, "key": d["command"].split("--step ")[1].split()[0]}
    entry |= {"command": d["command"], "windows": [w["label"] if isinstance(w, dict) else w for w in d["windows"]],
              "seconds": d.get("seconds")}
    record = json.loads(validity.read_text("utf-8")) if validity.is_file() else {}
    record.setdefault("diagnosis", {})[entry.pop("key")] = entry
    validity.write_text(json.dumps(record, indent=2, sort_keys=True, default=str) + "\n", "utf-8")


def window_stats(rows: list[dict], scores: np.ndarray, windows: list[dict]) -> dict:
    index = {r["sample_id"]: i for i, r in enumerate(rows)}
    means = [float(np.mean([scores[index[s]] for s in w["sample_ids"]])) for w in windows]
    shifts = [w["delta_shift"] for w in windows]
    return {"spearman": float(spearmanr(means, shifts).statistic), "pearson": float(pearsonr(means, shifts)[0]),
            "window_means": means}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--aligned", type=Path, help="the aligned model directory the windows used (every step but record)")
    ap.add_argument("--results", nargs="+", type=Path,
                    default=[RESULTS / "validity.json", RESULTS / "validity_length_control.json"])
    ap.add_argument("--out", type=Path, nargs="+", default=[RESULTS / "validity_diagnosis.json"])
    ap.add_argument("--original", default="smollm2-135m-instruct", help="the model before alignment (for the Δ triples)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--step", choices=("e0-e2", "e3", "fixed", "record"), default="e0-e2",
                    help="record: copy the window statistics of the --out files into results/validity.json")
    ap.add_argument("--encodings", nargs="+", choices=ENCODINGS, default=list(ENCODINGS),
                    help="anchor encodings to compare (each costs one pass over the anchors)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.step == "record":
        for path in args.out:
            record_summary(path)
        return None
    if args.aligned is None:
        ap.error(f"--step {args.step} needs --aligned")
    args.out = args.out[0]
    if args.step in ("e3", "fixed"):
        return e3(args) if args.step == "e3" else fixed(args)
    t_start = time.time()
    windows = measured_windows(args.results)
    rows = pool_sample(160, 0)
    ids = {r["sample_id"] for r in rows}
    missing = [w["label"] for w in windows if not set(w["sample_ids"]) <= ids]
    if missing:
        raise SystemExit(f"windows {missing} hold rows outside the reconstructed pool")
    print(f"{len(windows)} measured windows over a pool of {len(rows)} rows", flush=True)

    spec = resolve_model(str(args.aligned))
    lm = load_model(spec, device="cpu", cached=False)
    attach_lora(lm.model, LORA, seed=0)
    gr = Grads(lm)
    tok = lm.tokenizer
    pool = gr.per_sample([encode_sample(tok, r["prompt"], r["response"], max_length=POOL_MAX_LENGTH,
                                       truncation_side="left") for r in rows],
                         "pool")

    # E2: first-order predictor from the evaluation triples themselves
    mode = {"n_harmbench": 48, "n_dna": 48, "n_overrefusal": 64, "n_harmful_train": 160}
    original = resolve_model(args.original).path
    triples = delta_triples(mode, 0, Path(original), args.aligned, 64, KeywordRefusalJudge())
    tg = {}
    for side in ("compliant", "refusal"):
        samples = [encode_sample(tok, p, a, max_length=256, truncation_side="left")  # as the Δ of those runs
                   for p, a in zip(triples["prompts"], triples[side])]
        g = gr.per_sample(samples, f"Δ triples, {side}")
        tg[side] = {n: g[n].double().mean(0) for n in gr.names}
        del g
    target = {n: tg["compliant"][n] - tg["refusal"][n] for n in gr.names}  # E[∇L_c − ∇L_r]
    first_order = sum(torch.einsum("imr,mr->i", pool[n].double(), target[n]) for n in gr.names).numpy()
    index = {r["sample_id"]: i for i, r in enumerate(rows)}
    sign_adam = []
    for w in windows:
        idx = torch.tensor([index[s] for s in w["sample_ids"]])
        sign_adam.append(float(sum((pool[n][idx].double().mean(0).sign() * target[n]).sum() for n in gr.names)))
    shifts = [w["delta_shift"] for w in windows]
    e2 = {"first_order": window_stats(rows, first_order, windows) | {"scores": first_order.tolist()},
          "sign_step": {"spearman": float(spearmanr(sign_adam, shifts).statistic),
                        "pearson": float(pearsonr(sign_adam, shifts)[0]), "window_values": sign_adam},
          "triples": triples["record"] | {"n": len(triples["prompts"])}}
    print(f"E2 first-order: Spearman {e2['first_order']['spearman']:+.2f}, Pearson {e2['first_order']['pearson']:+.2f}; "
          f"sign step: Spearman {e2['sign_step']['spearman']:+.2f}", flush=True)

    record = {"command": "python -m benchmarks.validity.diagnose --aligned <aligned model dir>",
              "aligned_fingerprint": spec.fingerprint, "windows": windows,
              "pool": [{"sample_id": r["sample_id"], "source": r["source"], "response_chars": len(r["response"])}
                       for r in rows],
              "anchor_tokens": {}, "variants": {}, "e2": e2}
    plan = [(0.2, e) for e in args.encodings] + ([(0.3, "left256_first10")] if "left256_first10" in args.encodings else [])
    for split_fraction, encoding in plan:  # SQSD's directions split / risk_grad's anchor split
        train, _, _ = split(uncensorbench_pairs(), split_fraction, 0)
        key, anchor = f"{encoding}@{split_fraction}", {}
        for side, reply in (("danger", "compliant"), ("safety", "refusal")):
            samples = [encode(tok, p, a, encoding) for p, a in zip(train["prompt"].to_pylist(), train[reply].to_pylist())]
            g = gr.per_sample(samples, f"{side} anchors, {encoding}, split {split_fraction}")
            anchor[side] = gr.aggregate(g)
            record["anchor_tokens"].setdefault(key, {})[side] = float(np.mean([s.response_len for s in samples]))
            del g
        for agg in ("raw", "unit"):
            for space in ("dW", "B"):
                for sim in ("module_cos", "global_cos", "unit_dot"):
                    danger = similarity(gr, pool, anchor["danger"][agg], space, sim)
                    safety = similarity(gr, pool, anchor["safety"][agg], space, sim)
                    name = f"{key}|{agg}|{space}|{sim}"
                    v = record["variants"][name] = {
                        "danger": window_stats(rows, danger, windows), "safety": window_stats(rows, safety, windows),
                        "risk": window_stats(rows, danger - safety, windows),
                        "scores": {"danger": danger.tolist(), "safety": safety.tolist()}}
                    print(f"{name:55s} risk Spearman {v['risk']['spearman']:+.2f} Pearson {v['risk']['pearson']:+.2f} "
                          f"(danger {v['danger']['spearman']:+.2f}, safety {v['safety']['spearman']:+.2f})", flush=True)
        record["seconds"] = round(time.time() - t_start, 1)
        args.out.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n", "utf-8")  # partial results kept
    print(f"wrote {args.out} ({record['seconds']}s)", flush=True)


def stage_window_stats(model: Path, params: dict, windows: list[dict], name: str) -> tuple[dict, list[dict]]:
    """The dev pool scored by the ``risk.sqsd`` stage itself with ``params``; window stats per column."""
    recipe = {"curator": 1, "name": name, "shards": 4, "model": str(model), "seed": 0,
              "inputs": [{"path": "builtin:demo_pool", "sample": 160, "sample_seed": 0}],
              "stages": [{"use": "normalize"}, {"use": "risk.sqsd", "with": params}]}
    run_dir = curator_home() / "validity" / "diagnosis" / f"{name}-run"
    curator.run(recipe, run_dir, quiet=True)
    rows = connect(run_dir).sql("SELECT m.sample_id, s.risk_sqsd, s.risk_sqsd_danger, s.risk_sqsd_safety FROM scores s "
                                "JOIN samples m USING (sample_id) ORDER BY m.sample_id").to_arrow_table().to_pylist()
    return {col: window_stats(rows, np.array([r[col] for r in rows], dtype=float), windows)
            for col in ("risk_sqsd", "risk_sqsd_danger", "risk_sqsd_safety")}, rows


def fixed(args) -> None:
    """``risk.sqsd`` as shipped (stage defaults) on the dev pool: the configuration choice's evidence."""
    t0 = time.time()
    windows = measured_windows(args.results)
    out, rows = stage_window_stats(args.aligned, {}, windows, "fixed")
    record = {"command": "python -m benchmarks.validity.diagnose --step fixed --aligned <model dir>",
              "windows": [w["label"] for w in windows], "stats": out,
              "scores": {r["sample_id"]: [r["risk_sqsd_danger"], r["risk_sqsd_safety"]] for r in rows},
              "seconds": round(time.time() - t0, 1)}
    args.out.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n", "utf-8")
    print(f"fixed risk.sqsd on the dev pool: risk Spearman {out['risk_sqsd']['spearman']:+.2f} Pearson "
          f"{out['risk_sqsd']['pearson']:+.2f} (danger {out['risk_sqsd_danger']['spearman']:+.2f}, safety "
          f"{out['risk_sqsd_safety']['spearman']:+.2f}); wrote {args.out}", flush=True)


def e3(args) -> None:
    """``method: lora`` directions at max_length 1024 on the aligned model; the pool scored by ``risk.sqsd``."""
    t0 = time.time()
    windows = measured_windows(args.results)
    spec = resolve_model(str(args.aligned))
    train = TrainConfig(lr=1e-3, epochs=1, batch_size=8, max_length=1024)
    cfg = dirs.DirectionConfig(method="lora", danger_train=train, safety_train=train, initial_train=train,
                               mean_max_length=1024)
    root = curator_home() / "validity" / "diagnosis" / f"lora-1024-{spec.fingerprint[:12]}"
    if not (root / dirs.SUMMARY).is_file():
        lm = load_model(spec, device="cpu", cached=False)
        dirs.build_directions(lm.model, lm.tokenizer, dirs.default_anchor_data(cfg), cfg, root, spec.fingerprint)
        del lm
    built = time.time() - t0
    out, rows = stage_window_stats(args.aligned, {"directions": str(root), "method": "lora", "max_length": 1024},
                                   windows, "e3")
    logs = json.loads((root / dirs.SUMMARY).read_text())["train_logs"]
    record = {"command": "python -m benchmarks.validity.diagnose --step e3 --aligned <aligned model dir>",
              "directions": {"method": "lora", "max_length": 1024, "train_logs": logs, "build_seconds": round(built, 1)},
              "windows": [w["label"] for w in windows], "stats": out,
              "scores": {r["sample_id"]: [r["risk_sqsd_danger"], r["risk_sqsd_safety"]] for r in rows},
              "seconds": round(time.time() - t0, 1)}
    args.out.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n", "utf-8")
    print(f"E3: risk Spearman {out['risk_sqsd']['spearman']:+.2f} (danger {out['risk_sqsd_danger']['spearman']:+.2f}, "
          f"safety {out['risk_sqsd_safety']['spearman']:+.2f}); wrote {args.out}", flush=True)


if __name__ == "__main__":
    main()
