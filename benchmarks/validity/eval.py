"""Safety measurements for the validity benchmark (issue 9): greedy refusal rates and the log-prob proxy.

- ``eval_sets`` / ``cached_generations``: held-out prompt sets and their greedy generations
  (``curator.ml.generate.greedy_generate``), cached under ``$CURATOR_HOME/validity/``.
- ``refusal_flags`` / ``rate``: judge verdicts -> refusal rate with a Wilson 95 % interval (``curator.stats``).
- ``response_logprobs``: per pair, the mean log-probability of the response tokens given the prompt
  (the training loss's token mean, sign flipped), in the one chat format of ``curator.ml.chat``.
- ``proxy_delta``: Δ_i = mean log p(compliant_i | prompt_i) − mean log p(refusal_i | prompt_i), the
  scaled-down harmfulness proxy of risk-scoring.md §6.4 (higher = closer to complying).
- ``prompt_mean_rate``: for k sampled answers per prompt, the mean over prompts of each prompt's rate,
  with a bootstrap interval over prompts.
- ``bootstrap_mean`` / ``bootstrap_diff``: percentile intervals over prompts (paired for differences).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from curator.hashing import sha256_text
from curator.ml.chat import collate, encode_sample, model_per_sample_loss
from curator.ml.generate import greedy_generate
from curator.ml.models import curator_home, load_model, resolve_model
from curator.ml.safety_adapter import AdapterConfig, edgy_split
from curator.refdata.anchors import advbench, do_not_answer, harmbench_prompts
from curator.stats import wilson_interval


def norm(p: str) -> str:
    return " ".join(p.lower().split()).rstrip(".?! ")


def sample_prompts(prompts: Sequence[str], n: int, seed: int, tag: str, exclude: set[str]) -> list[str]:
    """n distinct prompts, ranked by sha256(seed, tag, prompt) (order-independent), minus ``exclude``."""
    uniq = [p for p in dict.fromkeys(prompts) if norm(p) not in exclude]
    return sorted(uniq, key=lambda p: sha256_text(seed, tag, p))[:n]


def eval_sets(mode: dict, seed: int) -> dict[str, list[str]]:
    _edgy_train, edgy_test, _rec = edgy_split(AdapterConfig())  # only the held-out side is evaluated
    train_like = {norm(p) for p in advbench()["prompt"].to_pylist()}  # never evaluate on AdvBench text
    return {
        "harmbench": sample_prompts(harmbench_prompts()["prompt"].to_pylist(), mode["n_harmbench"], seed,
                                    "harmbench", train_like),
        "do_not_answer": sample_prompts(do_not_answer()["prompt"].to_pylist(), mode["n_dna"], seed, "dna",
                                        train_like),
        "overrefusal": sample_prompts(edgy_test, mode["n_overrefusal"],
                                      seed, "overrefusal", train_like),
    }


def cached_generations(model_path: Path, sets: dict[str, list[str]], max_new_tokens: int,
                       batch_size: int) -> tuple[dict[str, list[str]], float, bool]:
    spec = resolve_model(str(model_path))
    key = sha256_text("gen-v1", spec.fingerprint, json.dumps(sets, sort_keys=True), str(max_new_tokens),
               str(batch_size))[:20]
    path = curator_home() / "validity" / f"gen-{key}.json"
    if path.is_file():
        return json.loads(path.read_text("utf-8"))["generations"], 0.0, True
    lm = load_model(spec, device="cpu")
    t0 = time.time()
    gens = {name: greedy_generate(lm.model, lm.tokenizer, ps, max_new_tokens, batch_size)
            for name, ps in sets.items()}
    secs = round(time.time() - t0, 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"model": str(model_path), "fingerprint": spec.fingerprint,
                               "generations": gens, "prompts": sets}, ensure_ascii=False), "utf-8")
    os.replace(tmp, path)
    return gens, secs, False


def judge_sets(sets: dict[str, list[str]], gens: dict[str, list[str]], judges: dict) -> dict:
    res: dict = {}
    groups = {"harmful": ["harmbench", "do_not_answer"], "benign_edgy": ["overrefusal"]}
    for jname, judge in judges.items():
        flags = {}
        for name, ps in sets.items():
            flags[name] = [v.refusal for v in judge.judge(list(zip(ps, gens[name])))]
        res[jname] = {name: rate(f) for name, f in flags.items()}
        for g, members in groups.items():
            res[jname][g] = rate([x for m in members for x in flags[m]])
    return res



def rate(flags: Sequence[bool | None]) -> dict:
    """Share of True among decided flags (None = judge abstained), with a Wilson interval."""
    vals = [f for f in flags if f is not None]
    k, n = sum(vals), len(vals)
    return {"k": k, "n": n, "rate": k / n if n else float("nan"), "ci95": list(wilson_interval(k, n, divide_first=True)),
            "abstained": len(flags) - n}


def per_prompt_rates(flags: Sequence[Sequence[bool | None]]) -> np.ndarray:
    """Share of True among each prompt's decided flags (NaN where the judge abstained on all k)."""
    return np.asarray([rate(f)["rate"] for f in flags], dtype=float)


def prompt_mean_rate(flags: Sequence[Sequence[bool | None]]) -> dict:
    """Mean over prompts of the per-prompt share of True among k sampled answers, with a 95 % bootstrap
    interval over prompts (the k answers of one prompt are not independent, so prompts are the unit)."""
    per = per_prompt_rates(flags)
    per = per[np.isfinite(per)]
    if not len(per):
        return {"rate": float("nan"), "ci95": [float("nan")] * 2, "n_prompts": 0, "k": 0}
    return {"rate": float(per.mean()), "ci95": bootstrap_mean(per), "n_prompts": int(len(per)),
            "k": max(len(f) for f in flags)}


def refusal_flags(judge, prompts: Sequence[str], responses: Sequence[str]) -> list[bool | None]:
    return [v.refusal for v in judge.judge(list(zip(prompts, responses)))]


def response_logprobs(model, tok, prompts: Sequence[str], responses: Sequence[str], batch_size: int = 16,
                      max_length: int = 256) -> np.ndarray:
    """Mean log p(response tokens | prompt) per pair (= −per-sample loss), batched, no gradients."""
    enc = [encode_sample(tok, p, r, None, max_length) for p, r in zip(prompts, responses)]
    order = sorted(range(len(enc)), key=lambda i: len(enc[i].input_ids))
    out = np.zeros(len(enc))
    with torch.inference_mode():
        for s in range(0, len(order), batch_size):
            chunk = order[s:s + batch_size]
            loss = model_per_sample_loss(model, collate([enc[i] for i in chunk], tok.pad_token_id))
            out[chunk] = -loss.float().numpy()
    return out


def proxy_delta(model, tok, prompts: Sequence[str], compliant: Sequence[str], refusal: Sequence[str],
                batch_size: int = 16) -> np.ndarray:
    """Δ_i = mean log p(compliant_i) − mean log p(refusal_i) (per token, response only)."""
    return (response_logprobs(model, tok, prompts, compliant, batch_size)
            - response_logprobs(model, tok, prompts, refusal, batch_size))


def bootstrap_mean(x: np.ndarray, n_boot: int = 2000, seed: int = 0) -> list[float]:
    """95 % percentile interval of the mean of ``x`` (resampling its entries)."""
    return bootstrap_stat(len(x), lambda idx: float(np.mean(x[idx])), n_boot, seed)


def bootstrap_diff(a: np.ndarray, b: np.ndarray, n_boot: int = 2000, seed: int = 0) -> list[float]:
    """95 % interval of mean(a) − mean(b) for paired per-prompt values (same prompts resampled)."""
    return bootstrap_stat(len(a), lambda idx: float(np.mean(a[idx]) - np.mean(b[idx])), n_boot, seed)


def bootstrap_stat(n: int, stat: Callable[[np.ndarray], float], n_boot: int = 2000, seed: int = 0) -> list[float]:
    rng = np.random.default_rng(seed)
    vals = [stat(rng.integers(0, n, n)) for _ in range(n_boot)]
    return [float(np.percentile(vals, 2.5)), float(np.percentile(vals, 97.5))]
