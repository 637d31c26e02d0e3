"""A small, deterministic LoRA SFT trainer (CPU-friendly) for direction building and validity benchmarks.

Loss per step = mean over the batch of each sample's token-mean response loss (``curator.ml.chat``: one
chat format, prompt tokens masked; text-only rows use every token). AdamW on the LoRA parameters only;
learning rate ``constant`` or ``cosine`` (to 0) after an optional linear warm-up. Rows are batched in
the given order (right padding, no length sorting); ``shuffle=True`` permutes them each epoch with a
generator seeded by ``seed``. Same inputs, seed and thread count -> bit-identical factors.
``autocast="bfloat16"`` runs the forward/backward matmuls in bfloat16 (LoRA parameters and the
optimizer stay float32): about 2-3x faster on CPUs with bf16 matmul units, at bf16 precision.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch

from curator.errors import InputError
from curator.ml.chat import collate, encode_sample, model_per_sample_loss
from curator.ml.lora import Factors, LoRAConfig, attach_lora, detach_lora, get_factors, lora_modules
from curator.ml.precision import warn_if_slow_bfloat16
from curator.progress import progress_bar


@dataclass(frozen=True)
class TrainConfig:
    lr: float = 1e-4
    epochs: int = 1
    batch_size: int = 8
    max_steps: int | None = None
    warmup_ratio: float = 0.0
    schedule: Literal["constant", "cosine"] = "constant"
    seed: int = 0
    max_length: int = 512
    weight_decay: float = 0.0
    checkpoint_steps: tuple[int, ...] = ()
    shuffle: bool = False
    autocast: Literal["none", "bfloat16"] = "none"


@dataclass
class TrainLog:
    """Per-step mean loss and learning rate; ``checkpoints[step]`` = factors after that step."""

    losses: list[float] = field(default_factory=list)
    lrs: list[float] = field(default_factory=list)
    steps: int = 0
    seconds: float = 0.0
    checkpoints: dict[int, Factors] = field(default_factory=dict)


def lr_factor(step: int, total: int, cfg: TrainConfig) -> float:
    """Multiplier of ``cfg.lr`` at 0-based ``step`` of ``total``."""
    warmup = int(math.ceil(cfg.warmup_ratio * total))
    if step < warmup:
        return (step + 1) / warmup
    if cfg.schedule == "constant":
        return 1.0
    span = max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * (step - warmup) / span))


def train_lora(model, tokenizer, rows: Sequence[dict], lora_cfg: LoRAConfig, cfg: TrainConfig,
               progress: bool = True, init_seed: int | None = None) -> tuple[Factors, TrainLog]:
    """Attach a fresh LoRA (init seed ``init_seed``, default ``cfg.seed``), train it, return (factors, log).

    The model is left as it was found (adapters detached). ``rows``: dicts with ``prompt``, ``response``
    and optionally ``messages``.
    """
    if not rows:
        raise InputError("train_lora: no training rows")
    if cfg.schedule not in ("constant", "cosine"):
        raise InputError(f"train_lora: schedule must be 'constant' or 'cosine', got {cfg.schedule!r}")
    if cfg.autocast not in ("none", "bfloat16"):
        raise InputError(f"train_lora: autocast must be 'none' or 'bfloat16', got {cfg.autocast!r}")
    if cfg.autocast == "bfloat16":
        warn_if_slow_bfloat16("train_lora(autocast='bfloat16')")
    encoded = [encode_sample(tokenizer, r.get("prompt"), r.get("response"), r.get("messages"), cfg.max_length)
               for r in rows]
    per_epoch = math.ceil(len(encoded) / cfg.batch_size)
    total = per_epoch * cfg.epochs if cfg.max_steps is None else min(cfg.max_steps, per_epoch * cfg.epochs)
    attach_lora(model, lora_cfg, seed=cfg.seed if init_seed is None else init_seed)
    params = [p for m in lora_modules(model).values() for p in (m.lora_A, m.lora_B)]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    gen = torch.Generator().manual_seed(cfg.seed)
    log, t0, step = TrainLog(), time.time(), 0
    try:
        with torch.enable_grad(), progress_bar("LoRA training", total, quiet=not progress) as advance:
            for _epoch in range(cfg.epochs):
                order = torch.randperm(len(encoded), generator=gen).tolist() if cfg.shuffle else range(len(encoded))
                order = list(order)
                for start in range(0, len(order), cfg.batch_size):
                    if step >= total:
                        break
                    for group in opt.param_groups:
                        group["lr"] = cfg.lr * lr_factor(step, total, cfg)
                    batch = collate([encoded[i] for i in order[start:start + cfg.batch_size]],
                                    tokenizer.pad_token_id)
                    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.autocast == "bfloat16"):
                        loss = model_per_sample_loss(model, batch).mean()
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    step += 1
                    log.losses.append(float(loss.detach()))
                    log.lrs.append(opt.param_groups[0]["lr"])
                    if step in cfg.checkpoint_steps:
                        log.checkpoints[step] = get_factors(model)
                    advance(1)
        factors = get_factors(model)
    finally:
        detach_lora(model)
    log.steps, log.seconds = step, round(time.time() - t0, 3)
    return factors, log
