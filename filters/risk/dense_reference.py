"""Batch-1 dense SQSD reference, written the way the authors' code computes it (test/benchmark only).

Per sample: one forward with full logits, HF-style mean CE over response tokens, ``loss.backward()``;
then per LoRA module ``delta = -(gB @ A + B @ gA)`` (``compute_task_vector_delta_step`` with lr 1),
flattened and compared with the dense merged direction ``B_dir @ A_dir`` (``load_and_merge_lora``,
no α/r) by ``F.cosine_similarity`` / dot / projection, summed over modules
(``calculate_lora_delta_metrics``). Independent of ``curator.ml.gradients`` and ``filters.risk.lowrank``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from curator.ml.chat import IGNORE, encode_sample
from curator.ml.lora import lora_modules, set_factors


def dense_directions(factors) -> dict[str, torch.Tensor]:
    """``{module: B @ A}`` as float32 dense matrices (what the authors' merge produces)."""
    return {n: (b.float() @ a.float()) for n, (a, b) in factors.items()}


def _metric(delta: torch.Tensor, direction: torch.Tensor, metric: str) -> float:
    v1, v2 = delta.flatten(), direction.flatten()
    if metric == "cosine":
        return float(F.cosine_similarity(v1, v2, dim=0, eps=0.0))
    if metric == "dot":
        return float(v1 @ v2)
    return float(v1 @ v2 / v2.norm())


def projection(model, sample, state, scaling: float, dense: dict[str, torch.Tensor], metric: str = "cosine"):
    """(Σ_m metric(ΔW_m, D_m), Σ_m |metric|) for one encoded sample at LoRA ``state`` with ``scaling``."""
    set_factors(model, state, scaling)
    modules = lora_modules(model)
    for m in modules.values():
        m.lora_A.requires_grad_(True)
        m.lora_B.requires_grad_(True)
    model.zero_grad(set_to_none=True)
    with torch.enable_grad():
        logits = model(input_ids=torch.tensor([sample.input_ids])).logits[0, :-1]
        target = torch.tensor(sample.labels[1:])
        keep = target != IGNORE
        loss = F.cross_entropy(logits[keep].float(), target[keep])
        loss.backward()
    total = magnitude = 0.0
    with torch.no_grad():
        for name, m in modules.items():
            g_a, g_b = m.lora_A.grad.float(), m.lora_B.grad.float()
            a, b = m.lora_A.detach().float(), m.lora_B.detach().float()
            delta = -((g_b @ a) + (b @ g_a))
            value = _metric(delta, dense[name], metric)
            total, magnitude = total + value, magnitude + abs(value)
    model.zero_grad(set_to_none=True)
    return total, magnitude


def reference_scores(model, tokenizer, rows, directions, safety_scaling: float = 1.0, max_length: int = 512,
                     metric: str = "cosine", mode: str = "exact", dense=None) -> list[dict[str, float]]:
    """Per row: ``danger``, ``safety`` and ``danger_l1``, ``safety_l1`` (Σ_m |metric|, the scale against which
    a sum's rounding error is judged); ``directions`` is a loaded ``filters.risk.directions.Directions``."""
    if dense is None:
        dense = (dense_directions(directions.danger), dense_directions(directions.safety))
    out = []
    for r in rows:
        s = encode_sample(tokenizer, r.get("prompt"), r.get("response"), r.get("messages"), max_length)
        danger = projection(model, s, directions.initial, directions.initial_scaling, dense[0], metric)
        if mode == "shared_state" or directions.safety_state == "initial":
            safety = projection(model, s, directions.initial, directions.initial_scaling, dense[1], metric)
        else:
            safety = projection(model, s, directions.safety, safety_scaling, dense[1], metric)
        out.append({"danger": danger[0], "safety": safety[0], "danger_l1": danger[1], "safety_l1": safety[1]})
    return out
