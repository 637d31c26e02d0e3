"""Fine-tune a model on a set of rows and measure its safety, cached (validity benchmark, issue 9).

``SafetyEval`` fixes what is measured: greedy generations on named prompt sets judged for refusal
(keyword judge + the classifier judge's refusal head) and the log-prob proxy Δ on (prompt, compliant,
refusal) triples (``benchmarks.validity.eval``). ``measure`` returns per-prompt values so windows can be
compared with paired bootstraps. ``finetune_and_measure`` trains a fresh LoRA (``curator.ml.training``,
identical settings and seeds for every call), merges it into the weights, measures, restores the weights
bit for bit (Part A's evaluation ran ~23 % faster merged than with adapters attached, Δ equal to 1e-7);
the result is cached as JSON in ``$CURATOR_HOME/validity/ft/<key>.json`` where key = sha256(model
fingerprint, training rows, training config, eval key), so an interrupted benchmark resumes where it stopped.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from benchmarks.validity.eval import proxy_delta, rate
from curator.hashing import sha256_text
from curator.ml.generate import BlockSampler, Sampling, greedy_generate
from curator.ml.lora import LoRAConfig, merge_factors
from curator.ml.models import curator_home, load_model, resolve_model
from curator.ml.precision import default_autocast
from curator.ml.training import TrainConfig, train_lora
from filters.hardness.rollouts import rollout_seed

FT_VERSION = "ft-v2"  # v2: measured with the LoRA merged into the weights


@dataclass(frozen=True)
class FinetuneConfig:
    """LoRA fine-tune applied identically to every window / variant."""

    r: int = 8
    alpha: float = 16.0
    lr: float = 3e-4
    epochs: int = 3
    batch_size: int = 8
    max_length: int = 256
    schedule: str = "cosine"
    seed: int = 0
    autocast: str = field(default_factory=default_autocast)  # bf16 only where the CPU runs it natively
    shuffle: bool = True  # False: train in the given row order (rebalance's interleaved mix order)


@dataclass(frozen=True)
class SafetyEval:
    """Prompt sets to generate on (greedy) and Δ triples; ``key`` identifies the whole evaluation."""

    gen_sets: dict[str, list[str]]
    delta_prompts: list[str] = field(default_factory=list)
    delta_compliant: list[str] = field(default_factory=list)
    delta_refusal: list[str] = field(default_factory=list)
    max_new_tokens: int = 48
    batch_size: int = 16
    autocast: str = field(default_factory=default_autocast)  # same for the base model and every fine-tune
    sampled_sets: dict[str, list[str]] = field(default_factory=dict)  # also judged on k sampled answers
    samples: int = 8  # k sampled answers per prompt of ``sampled_sets`` (temperature 1, seeded per prompt)
    sample_tokens: int = 32

    @property
    def key(self) -> str:
        return sha256_text("eval-v1", json.dumps(asdict(self), sort_keys=True))

    def measure(self, model, tok, judges: dict) -> dict:
        """{"gen": {set: {"responses", "refusal": {judge: flags}, "harmful": {judge: flags}}}, "delta": [Δ_i],
        "sampled": {set: {"responses": [[k texts]], "refusal": {judge: [[k flags]]}, "harmful": ...}}}
        (per prompt; a flag is None where the judge abstained)."""
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.autocast == "bfloat16"):
            return self._measure(model, tok, judges)

    def _measure(self, model, tok, judges: dict) -> dict:
        out: dict = {"gen": {}, "delta": []}
        for name, prompts in self.gen_sets.items():
            texts = greedy_generate(model, tok, prompts, self.max_new_tokens, self.batch_size)
            verdicts = {j: judge.judge(list(zip(prompts, texts))) for j, judge in judges.items()}
            out["gen"][name] = {"responses": texts,
                                "refusal": {j: [v.refusal for v in vs] for j, vs in verdicts.items()},
                                "harmful": {j: [v.harmful for v in vs] for j, vs in verdicts.items()}}
        if self.sampled_sets:
            out["sampled"] = {name: self._sampled(model, tok, prompts, judges)
                              for name, prompts in self.sampled_sets.items()}
        if self.delta_prompts:
            out["delta"] = proxy_delta(model, tok, self.delta_prompts, self.delta_compliant, self.delta_refusal,
                                       self.batch_size).tolist()
        return out

    def _sampled(self, model, tok, prompts: list[str], judges: dict) -> dict:
        """k answers per prompt, seeded like hardness rollouts (temperature 1, no top-p/k)."""
        seeds = [[rollout_seed(0, sha256_text(p), j) for j in range(self.samples)] for p in prompts]
        samples = BlockSampler(model, tok).sample_prompts(prompts, seeds, Sampling(max_new_tokens=self.sample_tokens))
        texts = [[s.text.strip() for s in block] for block in samples]
        out: dict = {"responses": texts, "refusal": {}, "harmful": {}}
        for j, judge in judges.items():
            verdicts = judge.judge([(p, t) for p, ts in zip(prompts, texts) for t in ts])
            per = [verdicts[i * self.samples:(i + 1) * self.samples] for i in range(len(prompts))]
            out["refusal"][j] = [[v.refusal for v in vs] for vs in per]
            out["harmful"][j] = [[v.harmful for v in vs] for vs in per]
        return out


def rates(measured: dict, label: str = "refusal") -> dict:
    """{set: {judge: rate(flags)}} for ``label`` ("refusal" or "harmful"), Wilson intervals."""
    return {name: {j: rate(f) for j, f in g[label].items()} for name, g in measured["gen"].items()}


def rows_key(rows: Sequence[dict]) -> str:
    return sha256_text(*(json.dumps({"p": r["prompt"], "r": r["response"]}, ensure_ascii=False) for r in rows))


def _cache_path(key: str) -> Path:
    return curator_home() / "validity" / "ft" / f"{key}.json"


def _write_json(path: Path, obj: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj, ensure_ascii=False), "utf-8")
    os.replace(tmp, path)


def measure_cached(lm, fingerprint: str, ev: SafetyEval, judges: dict) -> dict:
    """The model as it is (no fine-tune), cached like the fine-tunes."""
    path = _cache_path(sha256_text(FT_VERSION, "base", fingerprint, ev.key, *sorted(judges)))
    if path.is_file():
        return json.loads(path.read_text("utf-8"))
    t0 = time.time()
    rec = {"measured": ev.measure(lm.model, lm.tokenizer, judges), "eval_seconds": round(time.time() - t0, 1)}
    _write_json(path, rec)
    return rec


@contextmanager
def merged(model, lora_cfg, factors, seed: int):
    """``W += s·B·A`` for the trained factors inside the block; the original weights are copied back after."""
    saved = merge_factors(model, lora_cfg, factors, seed, keep_original=True)
    try:
        yield model
    finally:
        with torch.no_grad():
            for name, weight in saved.items():
                model.get_submodule(name).weight.copy_(weight)


def finetune_and_measure(lm, fingerprint: str, rows: Sequence[dict], cfg: FinetuneConfig, ev: SafetyEval,
                         judges: dict, progress: bool = False) -> dict:
    """Train a LoRA on ``rows`` from ``lm``'s weights, measure with it merged, restore the weights; cached."""
    key = sha256_text(FT_VERSION, fingerprint, rows_key(rows), json.dumps(asdict(cfg), sort_keys=True), ev.key,
              *sorted(judges))
    path = _cache_path(key)
    if path.is_file():
        return json.loads(path.read_text("utf-8"))
    lora_cfg = LoRAConfig(r=cfg.r, alpha=cfg.alpha)
    tcfg = TrainConfig(lr=cfg.lr, epochs=cfg.epochs, batch_size=cfg.batch_size, max_length=cfg.max_length,
                       schedule=cfg.schedule, seed=cfg.seed, shuffle=cfg.shuffle, autocast=cfg.autocast)
    t0 = time.time()
    factors, log = train_lora(lm.model, lm.tokenizer, list(rows), lora_cfg, tcfg, progress=progress)
    train_s = round(time.time() - t0, 1)
    with merged(lm.model, lora_cfg, factors, cfg.seed):
        t0 = time.time()
        measured = ev.measure(lm.model, lm.tokenizer, judges)
        eval_s = round(time.time() - t0, 1)
    rec = {"measured": measured, "train_seconds": train_s, "eval_seconds": eval_s, "train_steps": log.steps,
           "loss_first": log.losses[0], "loss_last": log.losses[-1], "n_rows": len(rows),
           "rows_sha256": rows_key(rows)}
    _write_json(path, rec)
    return rec


def aligned_baseline(aligned_dir, gen_sets: dict, triples: dict, cfg: dict, seed: int, judges: dict):
    """The evaluation, fine-tune config, loaded aligned model, its spec and its (cached) measurement that
    every window of a Part A run is compared against: ``(ev, ft, lm, spec, base)``."""
    ev = SafetyEval(gen_sets=gen_sets, max_new_tokens=cfg["eval_tokens"], delta_prompts=triples["prompts"],
                    delta_compliant=triples["compliant"], delta_refusal=triples["refusal"])
    ft = FinetuneConfig(seed=seed, lr=cfg["lr"], epochs=cfg["epochs"])
    spec = resolve_model(str(aligned_dir))
    lm = load_model(spec, device="cpu", cached=False)
    return ev, ft, lm, spec, measure_cached(lm, spec.fingerprint, ev, judges)
