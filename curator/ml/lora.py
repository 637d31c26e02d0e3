"""Minimal LoRA (no peft): ``y = W x + s · B (A x)`` with ``A`` (r×n), ``B`` (m×r), ``s = α/r``.

``scaling`` is a plain attribute and may be overridden (SQSD takes gradients at s = 1.0 or 0.8).
Factors are saved as safetensors (``<module>.lora_A`` / ``<module>.lora_B``) with string metadata and
``curator_sha256`` over the tensors, verified on load.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file
from torch import nn

from curator.errors import InputError

HASH_KEY = "curator_sha256"
Factors = dict[str, tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class LoRAConfig:
    """``target_modules``: Linear name suffixes (e.g. ``("q_proj", "v_proj")``) or every Linear inside the
    blocks except the LM head (``"all-linear"``); ``layers``: block indices to wrap (None = all)."""

    r: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    target_modules: tuple[str, ...] | Literal["all-linear"] = "all-linear"
    layers: tuple[int, ...] | None = None


class LoRALinear(nn.Module):
    """A frozen ``nn.Linear`` plus a low-rank update; ``tap(module, x, u, h)`` (if set) sees the LoRA
    input ``x``, ``u = x Aᵀ`` and ``h = u Bᵀ`` during forward (used by the per-sample gradient engine)."""

    def __init__(self, base: nn.Linear, r: int, alpha: float, dropout: float = 0.0):
        super().__init__()
        self.base = base
        self.base.weight.requires_grad_(False)
        if base.bias is not None:
            base.bias.requires_grad_(False)
        kw = {"dtype": base.weight.dtype, "device": base.weight.device}
        self.lora_A = nn.Parameter(torch.zeros(r, base.in_features, **kw))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, r, **kw))
        self.scaling = alpha / r
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.tap: Callable | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x_in = self.dropout(x)
        u = F.linear(x_in, self.lora_A)
        h = F.linear(u, self.lora_B)
        if self.tap is not None:
            self.tap(self, x_in, u, h)
        return self.base(x) + self.scaling * h

    def delta_weight(self) -> torch.Tensor:
        return self.scaling * self.lora_B @ self.lora_A


def lora_modules(model: nn.Module) -> dict[str, LoRALinear]:
    return {name: m for name, m in model.named_modules() if isinstance(m, LoRALinear)}


def _targets(model: nn.Module, cfg: LoRAConfig) -> list[str]:
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    names = []
    for name, module in model.named_modules():
        if not isinstance(module, nn.Linear) or module is head:
            continue
        layer = re.search(r"\.layers\.(\d+)\.", f".{name}.")
        if cfg.target_modules == "all-linear":
            if layer is None:
                continue
        elif name.rsplit(".", 1)[-1] not in cfg.target_modules:
            continue
        if cfg.layers is not None and (layer is None or int(layer.group(1)) not in cfg.layers):
            continue
        names.append(name)
    return names


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, new)


def attach_lora(
    model: nn.Module,
    cfg: LoRAConfig,
    seed: int = 0,
    init: Literal["default", "zeros_B", "random"] = "default",
) -> dict[str, LoRALinear]:
    """Freeze every model parameter and wrap the target Linears. ``default`` (alias ``zeros_B``) is the
    standard init: A ~ U(±1/√n) (Kaiming, a=√5), B = 0; ``random`` also draws B ~ U(±0.01)."""
    if lora_modules(model):
        raise InputError("attach_lora: the model already has LoRA modules; call detach_lora first.")
    names = _targets(model, cfg)
    if not names:
        raise InputError(
            f"attach_lora: no Linear layer matches target_modules={cfg.target_modules!r} "
            f"and layers={cfg.layers!r}."
        )
    model._curator_requires_grad = {n: p.requires_grad for n, p in model.named_parameters()}
    for p in model.parameters():
        p.requires_grad_(False)
    gen = torch.Generator().manual_seed(seed)
    wrapped = {}
    for name in names:
        module = LoRALinear(model.get_submodule(name), cfg.r, cfg.alpha, cfg.dropout)
        with torch.no_grad():
            bound = 1.0 / math.sqrt(module.base.in_features)
            a = (torch.rand(module.lora_A.shape, generator=gen) * 2 - 1) * bound
            module.lora_A.copy_(a)
            if init == "random":
                module.lora_B.copy_((torch.rand(module.lora_B.shape, generator=gen) * 2 - 1) * 0.01)
            elif init not in ("default", "zeros_B"):
                raise InputError(f"attach_lora: unknown init {init!r}")
        _replace(model, name, module)
        wrapped[name] = module
    return wrapped


def detach_lora(model: nn.Module) -> None:
    """Put the original Linears back (dropping the adapters) and restore ``requires_grad`` flags."""
    for name, module in lora_modules(model).items():
        _replace(model, name, module.base)
    flags = getattr(model, "_curator_requires_grad", {})
    for n, p in model.named_parameters():
        p.requires_grad_(flags.get(n, p.requires_grad))


def merge_lora(model: nn.Module) -> list[str]:
    """``W += s·B·A`` for every adapter, then detach; returns the merged module names."""
    merged = []
    with torch.no_grad():
        for name, module in lora_modules(model).items():
            module.base.weight += module.delta_weight().to(module.base.weight.dtype)
            merged.append(name)
    detach_lora(model)
    return merged


def merge_factors(model: nn.Module, cfg: LoRAConfig, factors: Factors, seed: int = 0,
                  keep_original: bool = False) -> dict[str, torch.Tensor]:
    """Attach adapters for ``cfg``, load trained ``factors`` and merge them (``W += s·B·A``). With
    ``keep_original``, returns copies of the merged Linears' previous weights (to restore them bit for bit)."""
    attach_lora(model, cfg, seed=seed)
    try:
        set_factors(model, factors)
    except BaseException:
        detach_lora(model)
        raise
    original = {n: m.base.weight.detach().clone() for n, m in lora_modules(model).items()} if keep_original else {}
    merge_lora(model)
    return original


def get_factors(model: nn.Module) -> Factors:
    return {n: (m.lora_A.detach().clone(), m.lora_B.detach().clone()) for n, m in lora_modules(model).items()}


def set_factors(model: nn.Module, factors: Factors, scaling: float | None = None) -> None:
    """Copy (A, B) into the attached adapters (names and shapes must match); optionally set scaling."""
    modules = lora_modules(model)
    if set(modules) != set(factors):
        missing, extra = sorted(set(modules) - set(factors)), sorted(set(factors) - set(modules))
        raise InputError(f"set_factors: module names differ (missing {missing[:3]}, unexpected {extra[:3]}).")
    with torch.no_grad():
        for name, (a, b) in factors.items():
            m = modules[name]
            if a.shape != m.lora_A.shape or b.shape != m.lora_B.shape:
                raise InputError(
                    f"set_factors: {name} has A{tuple(a.shape)} B{tuple(b.shape)}, expected "
                    f"A{tuple(m.lora_A.shape)} B{tuple(m.lora_B.shape)}."
                )
            m.lora_A.copy_(a)
            m.lora_B.copy_(b)
            if scaling is not None:
                m.scaling = scaling


def tensors_sha256(tensors: dict[str, torch.Tensor]) -> str:
    """sha256 over (name, dtype, shape, raw bytes) of each tensor in name order."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}\0".encode())
        digest.update(t.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def save_factors(path: str | Path, factors: Factors, metadata: dict[str, str]) -> None:
    tensors = {}
    for name, (a, b) in factors.items():
        tensors[f"{name}.lora_A"] = a.detach().cpu().contiguous()
        tensors[f"{name}.lora_B"] = b.detach().cpu().contiguous()
    meta = {str(k): str(v) for k, v in metadata.items()}
    meta[HASH_KEY] = tensors_sha256(tensors)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata=meta)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)  # safetensors writes 0600; artifacts are shared like other outputs


def load_verified(path: str | Path, what: str, remedy: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors, metadata) of a safetensors file whose metadata carries the tensors' sha256; a missing,
    unreadable or tampered file is an ``InputError`` naming ``what`` and the file, ending with ``remedy``."""
    try:
        with safe_open(str(path), framework="pt") as fh:
            metadata = dict(fh.metadata() or {})
        tensors = load_file(str(path))
    except (OSError, SafetensorError) as exc:
        raise InputError(f"Cannot read {what} {path}: {exc}. {remedy}") from exc
    if metadata.get(HASH_KEY) != tensors_sha256(tensors):
        raise InputError(f"{what[:1].upper() + what[1:]} {path} fails its integrity check (sha256 of its tensors "
                         f"does not match its metadata): it was modified or truncated. {remedy}")
    return tensors, metadata


def load_factors(path: str | Path) -> tuple[Factors, dict[str, str]]:
    """Load and verify factors; a missing, unreadable or tampered file is an ``InputError``."""
    tensors, metadata = load_verified(path, "LoRA factors file", "Rebuild it.")
    names = sorted({k.rsplit(".", 1)[0] for k in tensors})
    try:
        factors = {n: (tensors[f"{n}.lora_A"], tensors[f"{n}.lora_B"]) for n in names}
    except KeyError as exc:
        raise InputError(f"LoRA factors file {path} lacks tensor {exc}.") from exc
    return factors, metadata
