"""Coherence of a response: its mean token log-probability given the prompt under the model.

``mean_logprobs`` renders each (prompt, response) with the model's chat template
(``curator.ml.chat.encode_sample``) and returns mean_t log p(response token t | prompt, earlier tokens),
in nats, over the response's own tokens (the end-of-turn token excluded: a complete answer and one cut at
the token budget are scored on their words alone). One forward pass per batch, prompts sorted by length.

``DEFAULT_MIN_MEAN_LOGPROB`` (-3.0) is the threshold ``rebalance`` applies to candidate targets. Measured on the
default model (SmolLM2-135M-Instruct + curator's safety adapter) over 300 reference answers of the bundled
demo pool (human-written, helpful, complete; seeded sample): 1st / 5th / 10th / 50th / 95th percentile
-3.28 / -2.94 / -2.79 / -0.84 / -0.24 nats per token. Self-rollouts sampled at temperature 1 that read as
noise (mid-answer drift into other languages, code fragments, token soup) score -4.7 to -2.9; refusals
-3.2 to -0.5. -3.0 keeps about 95% of real answers and removes most noise. A different model gives
different values: measure its reference answers the same way and set ``min_mean_logprob``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch

from curator.ml.chat import IGNORE, collate, encode_sample, model_per_sample_loss

DEFAULT_MIN_MEAN_LOGPROB = -3.0


def _without_end_of_turn(sample):
    """``sample`` with its last labelled token (the end-of-turn token ``encode_sample`` appends) unlabelled."""
    if not sample.response_len:
        return sample
    labels = list(sample.labels)
    labels[max(i for i, x in enumerate(labels) if x != IGNORE)] = IGNORE
    return dataclasses.replace(sample, labels=labels, response_len=sample.response_len - 1)


def mean_logprobs(model, tokenizer, pairs: Sequence[tuple[str, str]], batch_size: int = 8,
                  max_length: int = 1024) -> list[float]:
    """Mean log-probability (nats per token) of each response given its prompt; ``-inf`` for an empty one."""
    samples = [_without_end_of_turn(encode_sample(tokenizer, p, r, max_length=max_length)) for p, r in pairs]
    order = sorted(range(len(samples)), key=lambda i: len(samples[i].input_ids))
    out = [float("-inf")] * len(samples)
    device = next(model.parameters()).device
    with torch.inference_mode():
        for s in range(0, len(order), batch_size):
            idx = [i for i in order[s:s + batch_size] if samples[i].response_len]
            if not idx:
                continue
            batch = {k: v.to(device) for k, v in collate([samples[i] for i in idx], tokenizer.pad_token_id).items()}
            for i, loss in zip(idx, model_per_sample_loss(model, batch).tolist()):
                out[i] = -loss
    return out
