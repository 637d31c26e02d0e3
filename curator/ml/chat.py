"""The one chat-formatting function used everywhere (scoring, rollouts, training, evaluation).

``encode_sample`` renders the prompt with the model's chat template and ``add_generation_prompt=True``,
then appends the response tokens and the model's own end-of-turn token (derived from the template:
the special token that follows an assistant message, e.g. ``<|im_end|>`` for ChatML, falling back to
``eos_token``). Prompt tokens get label -100. A text-only sample (``prompt=None``, ``response=`` a
document) is ``[bos] + tokens`` (bos only if the tokenizer has one) with loss on every token.

No chat template: prompt-bearing samples raise ``InputError`` (we do not guess a format, since a
guessed format would silently change scores); text-only samples still work.

Loss: ``per_sample_loss`` is the token-mean cross entropy over each sample's own response tokens
(never HF's batch mean), so the gradient of ``losses.sum()`` is the sum of per-sample gradients.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from curator.errors import InputError

IGNORE = -100
_SENTINEL = "CuratorSentinel42"
_EOT_CACHE: dict[tuple, int] = {}


@dataclass(frozen=True)
class EncodedSample:
    """Token ids and labels (-100 on prompt tokens) for one sample."""

    input_ids: list[int]
    labels: list[int]
    prompt_len: int
    response_len: int
    truncated: bool


def _require_template(tokenizer) -> None:
    if not getattr(tokenizer, "chat_template", None):
        raise InputError(
            f"Tokenizer {getattr(tokenizer, 'name_or_path', '') or type(tokenizer).__name__} has no chat "
            "template, so prompt/response samples cannot be formatted. Use a chat (instruct) model, or give "
            "text-only samples (prompt empty, response = document)."
        )


def end_of_turn_id(tokenizer) -> int:
    """The token the template puts after an assistant message (longest special token match), else eos."""
    _require_template(tokenizer)
    key = (id(tokenizer), tokenizer.chat_template, len(tokenizer))
    if key not in _EOT_CACHE:
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": "hi"}, {"role": "assistant", "content": _SENTINEL}], tokenize=False
        )
        suffix = text[text.rindex(_SENTINEL) + len(_SENTINEL) :].lstrip(" ")
        specials = set(tokenizer.all_special_tokens) | {
            t.content for t in tokenizer.added_tokens_decoder.values() if t.special
        }
        matches = sorted((s for s in specials if s and suffix.startswith(s)), key=len, reverse=True)
        if matches:
            _EOT_CACHE[key] = tokenizer.convert_tokens_to_ids(matches[0])
        elif tokenizer.eos_token_id is not None:
            _EOT_CACHE[key] = tokenizer.eos_token_id
        else:
            raise InputError(
                "Cannot derive the end-of-turn token: the chat template ends assistant turns "
                f"with {suffix[:20]!r} and the tokenizer has no eos_token."
            )
    return _EOT_CACHE[key]


def _split_messages(messages: Sequence[dict]) -> tuple[list[dict], str | None]:
    msgs = [{"role": str(m["role"]), "content": str(m["content"])} for m in messages]
    if not msgs:
        raise ValueError("messages is empty")
    if msgs[-1]["role"] == "assistant":
        return msgs[:-1], msgs[-1]["content"]
    return msgs, None


def render_generation_prompt(tokenizer, prompt: str | Sequence[dict]) -> list[int]:
    """Template text (user turn(s) + generation prompt) encoded with ``add_special_tokens=False``."""
    _require_template(tokenizer)
    msgs = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
    text = tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    return tokenizer.encode(text, add_special_tokens=False)


def encode_sample(
    tokenizer,
    prompt: str | None,
    response: str | None,
    messages: Sequence[dict] | None = None,
    max_length: int = 1024,
    truncation_side: Literal["response_end", "left", "right"] = "response_end",
) -> EncodedSample:
    """Chat-format one sample; ``messages`` (if given) wins: its final assistant turn is the response.

    Longer than ``max_length``, ``response_end`` (the default) never drops the start of a response: the
    response keeps its first ``max(max_length − prompt tokens, min(response tokens, max_length // 2))``
    tokens (its end, end-of-turn token included, is cut) and the prompt its last tokens (the chat header
    that precedes the answer); a text-only sample keeps its start, a prompt-only one its end.
    ``left`` drops the earliest tokens (prompt first), ``right`` the last. ``response_len`` is the number
    of response tokens that carry loss.
    """
    if messages is not None:
        prompt_msgs, response = _split_messages(messages)
    elif prompt is not None:
        prompt_msgs = [{"role": "user", "content": prompt}]
    else:
        prompt_msgs = None
    if prompt_msgs is None:
        if response is None:
            raise ValueError("sample has neither prompt, response nor messages")
        bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
        ids = bos + tokenizer.encode(response, add_special_tokens=False)
        prompt_ids, resp_ids = [], ids
    else:
        prompt_ids = render_generation_prompt(tokenizer, prompt_msgs)
        resp_ids = []
        if response is not None:
            resp_ids = tokenizer.encode(response, add_special_tokens=False) + [end_of_turn_id(tokenizer)]
    ids = prompt_ids + resp_ids
    labels = [IGNORE] * len(prompt_ids) + resp_ids
    truncated = len(ids) > max_length
    if truncated and truncation_side == "response_end" and prompt_ids and resp_ids:
        keep_resp = max(max_length - len(prompt_ids), min(len(resp_ids), max_length // 2))
        keep_prompt = max_length - keep_resp
        ids = prompt_ids[len(prompt_ids) - keep_prompt:] + resp_ids[:keep_resp]
        labels = [IGNORE] * keep_prompt + resp_ids[:keep_resp]
    elif truncated:
        keep_start = truncation_side == "right" or (truncation_side == "response_end" and not prompt_ids)
        cut = slice(0, max_length) if keep_start else slice(len(ids) - max_length, None)
        ids, labels = ids[cut], labels[cut]
    response_len = sum(1 for x in labels if x != IGNORE)
    return EncodedSample(ids, labels, len(ids) - response_len, response_len, truncated)


def collate(
    samples: Sequence[EncodedSample], pad_id: int, padding_side: Literal["right", "left"] = "right"
) -> dict[str, torch.Tensor]:
    """Pad to the longest sample: ``input_ids`` (pad_id), ``attention_mask`` (0), ``labels`` (-100)."""
    width = max(len(s.input_ids) for s in samples)
    ids = torch.full((len(samples), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(samples), width), dtype=torch.long)
    labels = torch.full((len(samples), width), IGNORE, dtype=torch.long)
    for i, s in enumerate(samples):
        n = len(s.input_ids)
        span = slice(0, n) if padding_side == "right" else slice(width - n, width)
        ids[i, span] = torch.tensor(s.input_ids)
        mask[i, span] = 1
        labels[i, span] = torch.tensor(s.labels)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def per_sample_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``loss_i = mean_{t: labels[i,t+1] != -100} CE(logits[i,t], labels[i,t+1])`` (0 if no target).

    Computed in at least float32 over a [b·T, V] view: CPU ``cross_entropy`` over a strided class dim
    (the usual ``[b, V, T]`` transpose) loses ~1e-4 relative accuracy in float32 at V ≈ 50k.
    """
    targets = torch.cat([labels[:, 1:], torch.full_like(labels[:, :1], IGNORE)], dim=1)
    flat = logits.reshape(-1, logits.shape[-1])
    if flat.dtype in (torch.float16, torch.bfloat16):
        flat = flat.float()
    ce = F.cross_entropy(flat, targets.reshape(-1), ignore_index=IGNORE, reduction="none")
    count = (targets != IGNORE).sum(1)
    return ce.view(labels.shape).sum(1) / count.clamp(min=1)


def model_per_sample_loss(model, batch: dict[str, torch.Tensor], response_only_logits: bool = True):
    """Forward a causal LM and return ``per_sample_loss`` per row, shape [b].

    ``response_only_logits`` runs the LM head only on positions that predict a labelled token (skips
    the vocabulary projection for prompt and pad tokens); same values as the full-logits path.
    """
    labels = batch["labels"]
    if not response_only_logits or getattr(model.config, "final_logit_softcapping", None):
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False)
        return per_sample_loss(out.logits, labels)
    hidden = model.base_model(
        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False
    ).last_hidden_state
    targets = labels[:, 1:]
    keep = targets != IGNORE
    rows = keep.nonzero(as_tuple=True)[0]
    logits = model.get_output_embeddings()(hidden[:, :-1][keep])
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()
    ce = F.cross_entropy(logits, targets[keep], reduction="none")
    sums = torch.zeros(labels.shape[0], dtype=ce.dtype, device=ce.device).index_add(0, rows, ce)
    return sums / keep.sum(1).clamp(min=1)
