"""Batched per-sample gradients from ONE forward/backward (hook-based, "Opacus-style").

For a LoRA module with input X_i (T×n), U_i = X_i Aᵀ and h = U Bᵀ (output ``W x + s·h``):

    ∇_B L_i = (∂L/∂h_i)ᵀ U_i = s · G_iᵀ U_i           (m×r)
    ∇_A L_i = (∂L/∂u_i)ᵀ X_i = s · (G_i B)ᵀ X_i        (r×n)

with G the gradient at the module output. We backpropagate ``Σ_i loss_i`` where ``loss_i`` is the
token-mean over sample i's own response tokens, so each sample's slice is exactly its batch-size-1
gradient (right padding: pad positions receive zero gradient under causal attention). No parameter
requires grad during the pass (base weights and A/B alike): the embedding output is the only leaf,
so backward computes activation gradients only and the per-sample weight gradients come from the
einsums above.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import torch
from torch import nn

from curator.chat import model_per_sample_loss
from curator.errors import InputError
from curator.lora import lora_modules

LoRAGrads = dict[str, tuple[torch.Tensor, torch.Tensor]]


@contextmanager
def activation_grad_only(model: nn.Module) -> Iterator[None]:
    """No parameter requires grad; the input embeddings' output is made a grad leaf instead."""
    flags = {p: p.requires_grad for p in model.parameters()}
    for p in flags:
        p.requires_grad_(False)
    handle = model.get_input_embeddings().register_forward_hook(lambda m, i, out: out.requires_grad_(True))
    try:
        with torch.enable_grad():
            yield
    finally:
        handle.remove()
        for p, flag in flags.items():
            p.requires_grad_(flag)


def per_sample_lora_grads(
    model: nn.Module,
    batch: dict[str, torch.Tensor],
    modules: Iterable[str] | None = None,
    response_only_logits: bool = True,
) -> tuple[torch.Tensor, LoRAGrads]:
    """Per-sample losses [b] and ``{module: (gA [b,r,n], gB [b,m,r])}`` in float32 for every LoRA module
    (or the named subset), from one forward/backward. ``batch`` comes from ``chat.collate`` (right pad)."""
    all_modules = lora_modules(model)
    if not all_modules:
        raise InputError("per_sample_lora_grads: the model has no LoRA modules (call attach_lora first).")
    names = list(all_modules) if modules is None else list(modules)
    unknown = [n for n in names if n not in all_modules]
    if unknown:
        raise InputError(f"per_sample_lora_grads: not LoRA modules: {unknown[:3]}")
    grads_a: dict[str, torch.Tensor] = {}
    grads_b: dict[str, torch.Tensor] = {}

    def tap(module, x, u, h, name):
        x, u_saved = x.detach(), u.detach()

        def on_h(g):  # g = ∂L/∂h = s·G, shape [b,T,m]
            grads_b[name] = torch.bmm(g.transpose(1, 2), u_saved).float()

        def on_u(g):  # g = ∂L/∂u = s·G·B, shape [b,T,r]
            grads_a[name] = torch.bmm(g.transpose(1, 2), x).float()

        h.register_hook(on_h)
        u.register_hook(on_u)

    for name in names:
        all_modules[name].tap = lambda mod, x, u, h, _n=name: tap(mod, x, u, h, _n)
    try:
        with activation_grad_only(model):
            losses = model_per_sample_loss(model, batch, response_only_logits)
            losses.sum().backward()
    finally:
        for name in names:
            all_modules[name].tap = None
    return losses.detach(), {n: (grads_a[n], grads_b[n]) for n in names}


def per_sample_linear_grads(
    model: nn.Module,
    batch: dict[str, torch.Tensor],
    module_names: Iterable[str],
    response_only_logits: bool = True,
) -> tuple[torch.Tensor, dict[str, tuple[torch.Tensor, torch.Tensor]]]:
    """Per-sample weight gradients of raw ``nn.Linear`` modules in factored form ``(X [b,T,n], G [b,T,m])``
    with ``∇_W L_i = G_iᵀ X_i`` (see ``densify``). The LM head is supported with full logits only."""
    names = list(module_names)
    head = model.get_output_embeddings()
    factors: dict[str, list] = {n: [None, None] for n in names}
    handles = []
    for name in names:
        module = model.get_submodule(name)
        if not isinstance(module, nn.Linear):
            raise InputError(f"per_sample_linear_grads: {name} is {type(module).__name__}, not nn.Linear")
        if module is head:
            response_only_logits = False

        def fwd(mod, inputs, out, _n=name):
            factors[_n][0] = inputs[0].detach()
            out.register_hook(lambda g: factors[_n].__setitem__(1, g.detach()))

        handles.append(module.register_forward_hook(fwd))
    try:
        with activation_grad_only(model):
            losses = model_per_sample_loss(model, batch, response_only_logits)
            losses.sum().backward()
    finally:
        for h in handles:
            h.remove()
    return losses.detach(), {n: (x, g) for n, (x, g) in factors.items()}


def densify(x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """``∇_W L_i = G_iᵀ X_i``: [b,T,n], [b,T,m] -> [b,m,n] (float32)."""
    return torch.bmm(g.transpose(1, 2).float(), x.float())
