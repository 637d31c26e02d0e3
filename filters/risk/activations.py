"""Hidden states and token positions for the forward-only risk stages.

Layer convention (as ``output_hidden_states``): ``hidden_states[0]`` is the embedding output,
``hidden_states[ℓ]`` for ``1 ≤ ℓ < L`` the output of block ``ℓ-1`` (residual stream, pre-norm) and
``hidden_states[L]`` the final-norm output (HF ties the last entry to ``last_hidden_state``).
``layer_hidden`` returns exactly that tensor and stops the forward right after it (early exit: a
forward hook on the producing module raises), so blocks after ``ℓ`` and the LM head never run.

Positions per row (right padding, from ``curator.ml.chat.encode_sample``): ``ref`` = the last prompt
token (``prompt_len - 1``); for text-only rows (no prompt) ``ref`` = the first token (BOS when the
tokenizer has one). ``response`` = labelled tokens (response + end-of-turn) other than ``ref``;
``last`` = the last non-pad token.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from curator.errors import InputError
from curator.ml.chat import IGNORE, EncodedSample


class _EarlyExit(Exception):
    pass


def num_layers(model: nn.Module) -> int:
    return int(model.config.num_hidden_layers)


def _producer(model: nn.Module, layer: int) -> nn.Module:
    """The module whose forward output is ``hidden_states[layer]``."""
    n = num_layers(model)
    if not 0 <= layer <= n:
        raise InputError(f"layer {layer} is out of range: the model has hidden states 0..{n}")
    base = model.base_model
    if layer == 0:
        return model.get_input_embeddings()
    return base.norm if layer == n else base.layers[layer - 1]


def layer_hidden(model: nn.Module, batch: dict[str, torch.Tensor], layer: int) -> torch.Tensor:
    """``hidden_states[layer]`` [b,T,d] (float32) from a forward that stops right after it."""
    captured: list[torch.Tensor] = []

    def hook(module, inputs, output):
        captured.append(output[0] if isinstance(output, tuple) else output)
        raise _EarlyExit

    handle = _producer(model, layer).register_forward_hook(hook)
    try:
        model.base_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False)
    except _EarlyExit:
        pass
    finally:
        handle.remove()
    return captured[0].float()


def all_hidden(model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
    """Every ``hidden_states[ℓ]``, ℓ = 0..L, from one full forward (used to build references)."""
    out = model.base_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                           use_cache=False, output_hidden_states=True)
    return tuple(h.float() for h in out.hidden_states)


@dataclass(frozen=True)
class Positions:
    ref: torch.Tensor  # [b] last prompt token (first token for text-only rows)
    last: torch.Tensor  # [b] last non-pad token
    response: torch.Tensor  # [b,T] bool, response tokens other than ``ref``


def positions(samples: Sequence[EncodedSample], batch: dict[str, torch.Tensor]) -> Positions:
    device = batch["attention_mask"].device
    ref = torch.tensor([max(s.prompt_len - 1, 0) for s in samples], device=device)
    last = batch["attention_mask"].sum(1) - 1
    response = batch["labels"] != IGNORE
    response[torch.arange(len(samples), device=device), ref] = False
    return Positions(ref, last, response)


def masked_mean(h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``h[i, t]`` over ``mask[i, t]``; NaN for rows with an empty mask."""
    m = mask.to(h.dtype).unsqueeze(-1)
    return (h * m).sum(1) / m.sum(1)  # 0/0 -> NaN on purpose: flagged downstream


def at(h: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    return h[torch.arange(h.shape[0], device=h.device), index.to(h.device)]
