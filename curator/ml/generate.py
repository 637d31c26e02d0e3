"""Generation with the one chat format: batched greedy decoding and seeded, batch-invariant sampling.

Prompts go through ``curator.ml.chat.render_generation_prompt``; generation stops at the model's
end-of-turn token or ``eos``.

- ``greedy_generate``: greedy continuations, prompts sorted by length and left-padded in batches
  (``transformers`` ``generate`` with an explicit config: the model's ``generation_config`` is ignored).
- ``BlockSampler``: our own decode loop with a KV cache for rows that each carry a seed. A block is
  the rows of ONE prompt (shared prefill, cache expanded to the block, finished rows pruned): a block never
  shares a forward pass with another prompt, so its output is bit-identical however blocks are grouped
  (batching prompts together with left padding moves float32 logits by ~3e-5 on SmolLM2, enough to flip
  a sampled token now and then). Row r draws its uniforms from ``numpy.random.default_rng(seed_r)`` and
  picks each token by ``choose_tokens``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from curator.ml.chat import end_of_turn_id, render_generation_prompt
from curator.ml.sampling import Sampling


@dataclass(frozen=True)
class Sample:
    text: str
    finish_reason: str  # "stop" (end-of-turn / eos emitted) or "length"
    n_tokens: int  # generated tokens, the stop token excluded


def stop_token_ids(tok) -> set[int]:
    """The end-of-turn token and ``eos`` (when the tokenizer has one)."""
    return {end_of_turn_id(tok)} | ({tok.eos_token_id} - {None})


def choose_tokens(logits: torch.Tensor, u: np.ndarray, sampling: Sampling) -> torch.Tensor:
    """Next token per row: temperature, top-k, top-p (smallest set with mass >= top_p), then inverse CDF
    at ``u`` (one uniform per row) over token-id order; temperature 0 is greedy."""
    if sampling.temperature == 0:
        return logits.argmax(-1)
    x = logits.double() / sampling.temperature
    if sampling.top_k:
        kth = torch.topk(x, min(sampling.top_k, x.shape[-1]), dim=-1).values[:, -1:]
        x = x.masked_fill(x < kth, float("-inf"))
    p = torch.softmax(x, dim=-1)
    if sampling.top_p < 1.0:
        ps, idx = torch.sort(p, dim=-1, descending=True, stable=True)
        drop = (ps.cumsum(-1) - ps) >= sampling.top_p
        p = p.scatter(-1, idx, ps.masked_fill(drop, 0.0))
    c = p.cumsum(-1)
    v = torch.as_tensor(u, dtype=c.dtype, device=c.device).unsqueeze(-1) * c[:, -1:]
    return torch.searchsorted(c, v, right=True).squeeze(-1).clamp(max=c.shape[-1] - 1)


class BlockSampler:
    """Seeded sampling over a loaded causal LM, one block (= rows of one prompt) at a time."""

    def __init__(self, model, tokenizer, device: str = "cpu"):
        self.model, self.tokenizer, self.device = model, tokenizer, device
        self.stop_ids = stop_token_ids(tokenizer)
        self.n_rows = 0  # rows generated so far (tests count generation through this)

    def sample(self, blocks: Sequence[tuple[list[int], list[int]]], sampling: Sampling) -> list[list[Sample]]:
        """``blocks`` = (prompt token ids, one seed per row); returns the samples per block."""
        out = [self._block(ids, seeds, sampling) for ids, seeds in blocks]
        self.n_rows += sum(len(s) for _, s in blocks)
        return out

    def sample_prompts(self, prompts: Sequence[str], seeds: Sequence[Sequence[int]],
                       sampling: Sampling) -> list[list[Sample]]:
        """One block per prompt (rendered with the chat template), one row per seed."""
        return self.sample([(render_generation_prompt(self.tokenizer, p), list(s)) for p, s in zip(prompts, seeds)],
                           sampling)

    def _block(self, prompt: list[int], seeds: list[int], sampling: Sampling) -> list[Sample]:
        from transformers import DynamicCache  # start-up time: transformers

        b, steps, n = len(seeds), sampling.max_new_tokens, len(prompt)
        uniforms = np.stack([np.random.default_rng(seed).random(steps) for seed in seeds])
        cache, alive = DynamicCache(), list(range(b))
        tokens: list[list[int]] = [[] for _ in range(b)]
        finish = ["length"] * b
        with torch.inference_mode():
            ids = torch.tensor([prompt], device=self.device)
            logits = self.model(input_ids=ids, past_key_values=cache, use_cache=True, logits_to_keep=1).logits[:, -1, :]
            logits = logits.expand(b, -1)
            cache.batch_repeat_interleave(b)
            for t in range(steps):
                tok = choose_tokens(logits.float(), uniforms[alive, t], sampling).tolist()
                keep = []
                for r, (row, tk) in enumerate(zip(alive, tok)):
                    if tk in self.stop_ids:
                        finish[row] = "stop"
                    else:
                        tokens[row].append(tk)
                        keep.append(r)
                if not keep or t == steps - 1:
                    break
                if len(keep) < len(alive):
                    cache.batch_select_indices(torch.tensor(keep, device=self.device))
                    alive, tok = [alive[r] for r in keep], [tok[r] for r in keep]
                step = torch.tensor(tok, device=self.device).unsqueeze(-1)
                pos = torch.full((len(alive), 1), n + t, device=self.device)
                logits = self.model(input_ids=step, position_ids=pos, past_key_values=cache,
                                    use_cache=True).logits[:, -1, :]
        return [Sample(self.tokenizer.decode(tk, skip_special_tokens=True), f, len(tk)) for tk, f in zip(tokens, finish)]


def greedy_generate(model, tok, prompts: Sequence[str], max_new_tokens: int, batch_size: int) -> list[str]:
    """Batched greedy decoding; returns the decoded continuation of each prompt (special tokens dropped)."""
    from transformers import GenerationConfig  # start-up time: transformers

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
