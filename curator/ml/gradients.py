"""Batched per-sample LoRA gradients from ONE forward/backward.

For a LoRA module with input X_i (T×n), U_i = X_i Aᵀ and output ``Y = X Wᵀ + s·U Bᵀ``, with
G_i = ∂L/∂Y_i the gradient at the module output:

    ∇_B L_i = s · G_iᵀ U_i            (m×r)
    ∇_A L_i = s · (G_i B)ᵀ X_i        (r×n)
    ∂L/∂X   = G W + s · (G B) A       (passed on down the network)

We backpropagate ``Σ_i loss_i`` where ``loss_i`` is the token-mean over sample i's own response tokens,
so each sample's slice is exactly its batch-size-1 gradient (right padding: pad positions receive zero
gradient under causal attention). Each LoRA layer runs as ONE fused autograd node (``_FusedLoRA``): the
LoRA term is added in place to the base output, the backward computes ``∂L/∂X`` and both per-sample
gradients from the same G, and no parameter requires grad (no base-weight or summed LoRA gradients).
Autograd starts at the lowest LoRA layer (a grad-requiring dummy is an input of every fused node), so
no input gradient is computed below it.

``compute_dtype=torch.bfloat16`` on a float32 model is mixed precision: the frozen base matmuls, the LM
head and attention run in bf16 (autocast; base weights cast once and cached), while U, G B, the LoRA
term and the per-sample gradients are computed and accumulated in the factors' dtype (float32).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from curator.errors import InputError
from curator.ml.chat import model_per_sample_loss
from curator.ml.lora import LoRALinear, lora_modules

LoRAGrads = dict[str, tuple[torch.Tensor | None, torch.Tensor]]


@contextmanager
def activation_grad_only(model: nn.Module) -> Iterator[None]:
    """No parameter requires grad; the input embeddings' output is made a grad leaf instead."""
    with frozen_parameters(model):
        handle = model.get_input_embeddings().register_forward_hook(lambda m, i, out: out.requires_grad_(True))
        try:
            yield
        finally:
            handle.remove()


@contextmanager
def frozen_parameters(model: nn.Module) -> Iterator[None]:
    """Grad mode on, every parameter's ``requires_grad`` off for the block (flags restored after)."""
    flags = {p: p.requires_grad for p in model.parameters()}
    for p in flags:
        p.requires_grad_(False)
    try:
        with torch.enable_grad():
            yield
    finally:
        for p, flag in flags.items():
            p.requires_grad_(flag)


@dataclass
class _Sink:
    """One LoRA layer's fused-node settings and (after backward) its per-sample gradients."""

    weight: torch.Tensor  # base weight in the compute dtype
    bias: torch.Tensor | None
    A: torch.Tensor
    B: torch.Tensor
    scaling: float
    record: bool  # store per-sample gradients for this module
    with_a: bool
    grad_a: torch.Tensor | None = None
    grad_b: torch.Tensor | None = None


class _FusedLoRA(torch.autograd.Function):
    """``Y = X Wᵀ (+ bias) + s·(X Aᵀ) Bᵀ`` whose backward also records the per-sample ∇A, ∇B (module doc)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, anchor: torch.Tensor, sink: _Sink) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False):
            lora_dtype = sink.A.dtype
            xl = x.to(lora_dtype)
            u = F.linear(xl, sink.A)
            out = F.linear(x.to(sink.weight.dtype), sink.weight, sink.bias).to(torch.promote_types(x.dtype, lora_dtype))
            out.view(-1, out.shape[-1]).addmm_(u.view(-1, u.shape[-1]).to(out.dtype), sink.B.t().to(out.dtype),
                                               alpha=sink.scaling)
        ctx.sink = sink
        ctx.save_for_backward(x, u)
        return out

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        sink: _Sink = ctx.sink
        x, u = ctx.saved_tensors
        with torch.autocast(g.device.type, enabled=False):
            gl = g.to(sink.A.dtype)
            gu = torch.matmul(gl, sink.B).mul_(sink.scaling)  # ∂L/∂U = s·G B
            if sink.record:
                sink.grad_b = torch.bmm(gl.transpose(1, 2), u).mul_(sink.scaling).float()
                if sink.with_a:
                    sink.grad_a = torch.bmm(gu.transpose(1, 2), x.to(sink.A.dtype)).float()
            grad_x = None
            if ctx.needs_input_grad[0]:
                grad_x = torch.matmul(g.to(sink.weight.dtype), sink.weight).to(gu.dtype)
                grad_x.view(-1, grad_x.shape[-1]).addmm_(gu.reshape(-1, gu.shape[-1]), sink.A)
                grad_x = grad_x.to(x.dtype)
        return grad_x, None, None


def _compute_weight(module: LoRALinear, dtype: torch.dtype) -> torch.Tensor:
    """The frozen base weight in ``dtype``, cast once and cached on the module (recast if it changes)."""
    w = module.base.weight
    if w.dtype == dtype:
        return w.detach()
    key = (dtype, w.data_ptr(), w._version)
    cached = getattr(module, "_curator_cast_weight", None)
    if cached is None or cached[0] != key:
        cached = (key, w.detach().to(dtype))
        module._curator_cast_weight = cached
    return cached[1]


def per_sample_lora_grads(
    model: nn.Module,
    batch: dict[str, torch.Tensor],
    modules: Iterable[str] | None = None,
    response_only_logits: bool = True,
    compute_dtype: torch.dtype | None = None,
    with_a: bool = True,
) -> tuple[torch.Tensor, LoRAGrads]:
    """Per-sample losses [b] and ``{module: (gA [b,r,n], gB [b,m,r])}`` in float32 for every LoRA module
    (or the named subset), from one forward/backward. ``batch`` comes from ``chat.collate`` (right pad).
    ``compute_dtype``: dtype of the frozen base computation (None = the model's; see module doc);
    ``with_a=False`` skips ∇A (returned as None)."""
    all_modules = lora_modules(model)
    if not all_modules:
        raise InputError("per_sample_lora_grads: the model has no LoRA modules (call attach_lora first).")
    names = list(all_modules) if modules is None else list(modules)
    unknown = [n for n in names if n not in all_modules]
    if unknown:
        raise InputError(f"per_sample_lora_grads: not LoRA modules: {unknown[:3]}")
    model_dtype = next(iter(all_modules.values())).base.weight.dtype
    dtype = compute_dtype or model_dtype
    device = batch["input_ids"].device
    anchor = torch.zeros((), device=device, requires_grad=True)
    sinks = {}
    for name, m in all_modules.items():
        if m.training and not isinstance(m.dropout, nn.Identity):
            raise InputError("per_sample_lora_grads: LoRA dropout is active; call model.eval() first.")
        sink = sinks[name] = _Sink(_compute_weight(m, dtype), None if m.base.bias is None else m.base.bias.detach().to(dtype),
                                   m.lora_A.detach(), m.lora_B.detach(), m.scaling, name in names, with_a)
        m.forward = lambda x, _s=sink: _FusedLoRA.apply(x, anchor, _s)
    autocast = torch.autocast(device.type, dtype=dtype) if dtype != model_dtype else nullcontext()
    try:
        with frozen_parameters(model):
            with autocast:
                losses = model_per_sample_loss(model, batch, response_only_logits)
            losses.float().sum().backward()
    finally:
        for m in all_modules.values():
            del m.forward
    return losses.detach().float(), {n: (sinks[n].grad_a, sinks[n].grad_b) for n in names}


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
