"""Safety measurements for the validity benchmark (issue 9): greedy refusal rates and the log-prob proxy.

- ``greedy_generate``: batched greedy decoding (left padding, prompts sorted by length).
- ``refusal_flags`` / ``rate``: judge verdicts -> refusal rate with a Wilson 95 % interval.
- ``response_logprobs``: per pair, the mean log-probability of the response tokens given the prompt
  (the training loss's token mean, sign flipped), in the one chat format of ``curator.ml.chat``.
- ``proxy_delta``: Δ_i = mean log p(compliant_i | prompt_i) − mean log p(refusal_i | prompt_i), the
  scaled-down harmfulness proxy of risk-scoring.md §6.4 (higher = closer to complying).
- ``prompt_mean_rate``: for k sampled answers per prompt, the mean over prompts of each prompt's rate,
  with a bootstrap interval over prompts.
- ``bootstrap_mean`` / ``bootstrap_diff``: percentile intervals over prompts (paired for differences).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

Z95 = 1.959964


def sha(*parts: str) -> str:
    return hashlib.sha256("\x00".join(parts).encode("utf-8")).hexdigest()


def norm(p: str) -> str:
    return " ".join(p.lower().split()).rstrip(".?! ")


def sample_prompts(prompts: Sequence[str], n: int, seed: int, tag: str, exclude: set[str]) -> list[str]:
    """n distinct prompts, ranked by sha256(seed, tag, prompt) (order-independent), minus ``exclude``."""
    uniq = [p for p in dict.fromkeys(prompts) if norm(p) not in exclude]
    return sorted(uniq, key=lambda p: sha(str(seed), tag, p))[:n]


def eval_sets(mode: dict, seed: int) -> dict[str, list[str]]:
    from benchmarks.validity.aligned import AlignedConfig, edgy_split
    from curator.refdata.anchors import advbench, do_not_answer, harmbench_prompts

    _edgy_train, edgy_test, _rec = edgy_split(AlignedConfig())  # only the held-out side is evaluated
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
    from curator.ml.models import curator_home, load_model, resolve_model

    spec = resolve_model(str(model_path))
    key = sha("gen-v1", spec.fingerprint, json.dumps(sets, sort_keys=True), str(max_new_tokens),
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




def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    if n == 0:
        return (float("nan"), float("nan"))
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return (max(0.0, c - h), min(1.0, c + h))


def rate(flags: Sequence[bool | None]) -> dict:
    """Share of True among decided flags (None = judge abstained), with a Wilson interval."""
    vals = [f for f in flags if f is not None]
    k, n = sum(vals), len(vals)
    return {"k": k, "n": n, "rate": k / n if n else float("nan"), "ci95": list(wilson(k, n)),
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


def greedy_generate(model, tok, prompts: Sequence[str], max_new_tokens: int, batch_size: int) -> list[str]:
    """Batched greedy decoding; returns the decoded continuation of each prompt (special tokens dropped)."""
    from transformers import GenerationConfig

    from curator.ml.chat import end_of_turn_id, render_generation_prompt

    ids = [render_generation_prompt(tok, p) for p in prompts]
    order = sorted(range(len(ids)), key=lambda i: (len(ids[i]), i))
    stop = [end_of_turn_id(tok)] + ([tok.eos_token_id] if tok.eos_token_id is not None else [])
    gcfg = GenerationConfig(do_sample=False, max_new_tokens=max_new_tokens, pad_token_id=tok.pad_token_id,
                            eos_token_id=stop, temperature=None, top_p=None, top_k=None)
    out: list[str] = [""] * len(ids)
    with torch.inference_mode():
        for s in range(0, len(order), batch_size):
            chunk = order[s:s + batch_size]
            width = max(len(ids[i]) for i in chunk)
            x = torch.full((len(chunk), width), tok.pad_token_id, dtype=torch.long)
            m = torch.zeros((len(chunk), width), dtype=torch.long)
            for r, i in enumerate(chunk):
                x[r, width - len(ids[i]):] = torch.tensor(ids[i])
                m[r, width - len(ids[i]):] = 1
            g = model.generate(input_ids=x, attention_mask=m, generation_config=gcfg)
            for r, i in enumerate(chunk):
                out[i] = tok.decode(g[r, width:], skip_special_tokens=True).strip()
    return out


def refusal_flags(judge, prompts: Sequence[str], responses: Sequence[str]) -> list[bool | None]:
    return [v.refusal for v in judge.judge(list(zip(prompts, responses)))]


def response_logprobs(model, tok, prompts: Sequence[str], responses: Sequence[str], batch_size: int = 16,
                      max_length: int = 256) -> np.ndarray:
    """Mean log p(response tokens | prompt) per pair (= −per-sample loss), batched, no gradients."""
    from curator.ml.chat import collate, encode_sample, model_per_sample_loss

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
