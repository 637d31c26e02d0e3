"""Exactness of the batched engines against an independent batch-size-1 ``loss.backward()`` loop."""

import pytest
import torch
import torch.nn.functional as F

from curator.errors import InputError
from curator.ml.chat import IGNORE, collate
from curator.ml.gradients import densify, per_sample_linear_grads, per_sample_lora_grads
from curator.ml.lora import LoRAConfig, attach_lora, lora_modules
from tests.support import uneven_samples

MAX_REL = 1e-4


def _reference_loss(model, s):
    logits = model(input_ids=torch.tensor([s.input_ids])).logits[0, :-1]
    target = torch.tensor(s.labels[1:])
    keep = target != IGNORE
    return F.cross_entropy(logits[keep], target[keep])


def _rel(ref, got):
    return float((ref - got).norm() / ref.norm().clamp(min=1e-30))


@pytest.mark.parametrize("response_only_logits", [True, False])
def test_lora_grads_match_batch1_loop(tiny, response_only_logits):
    model, tok = tiny
    attach_lora(model, LoRAConfig(r=4, alpha=8), seed=3, init="random")
    for m in list(lora_modules(model).values())[::3]:
        m.scaling = 0.8  # SQSD-style scaling override on some modules
    samples = uneven_samples(tok)
    batch = collate(samples, tok.pad_token_id)
    assert (batch["attention_mask"] == 0).any()  # uneven lengths -> right padding in the batch
    losses, grads = per_sample_lora_grads(model, batch, response_only_logits=response_only_logits)
    assert all(p.grad is None for p in model.parameters())  # nothing accumulated
    assert [n for n, p in model.named_parameters() if p.requires_grad] == [
        f"{n}.lora_{x}" for n in lora_modules(model) for x in "AB"
    ]  # flags restored
    mods = lora_modules(model)
    assert grads.keys() == mods.keys()
    for i, s in enumerate(samples):
        model.zero_grad(set_to_none=True)
        loss = _reference_loss(model, s)
        loss.backward()
        assert losses[i].item() == pytest.approx(loss.item(), rel=1e-5)
        for name, m in mods.items():
            g_a, g_b = grads[name]
            assert g_a.shape == (4, 4, m.base.in_features) and g_b.shape == (4, m.base.out_features, 4)
            assert _rel(m.lora_A.grad, g_a[i]) < MAX_REL, name
            assert _rel(m.lora_B.grad, g_b[i]) < MAX_REL, name
            assert m.lora_A.grad.norm() > 0


def test_lora_grads_subset_and_errors(tiny):
    model, tok = tiny
    batch = collate(uneven_samples(tok)[:2], tok.pad_token_id)
    with pytest.raises(InputError, match="attach_lora"):
        per_sample_lora_grads(model, batch)
    attach_lora(model, LoRAConfig(), init="random")
    _, full = per_sample_lora_grads(model, batch)
    name = "model.layers.1.mlp.up_proj"
    _, sub = per_sample_lora_grads(model, batch, modules=[name])
    assert list(sub) == [name]
    torch.testing.assert_close(sub[name][0], full[name][0])
    with pytest.raises(InputError, match="not LoRA"):
        per_sample_lora_grads(model, batch, modules=["lm_head"])
    with torch.no_grad():  # the engine works even when called from a no-grad context
        losses, _ = per_sample_lora_grads(model, batch)
    assert losses.shape == (2,)


def test_linear_grads_match_batch1_loop(tiny):
    model, tok = tiny
    names = ["model.layers.0.self_attn.k_proj", "model.layers.1.mlp.down_proj", "lm_head"]
    samples = uneven_samples(tok)
    batch = collate(samples, tok.pad_token_id)
    losses, factors = per_sample_linear_grads(model, batch, names)
    assert all(p.grad is None for p in model.parameters())
    for i, s in enumerate(samples):
        model.zero_grad(set_to_none=True)
        _reference_loss(model, s).backward()
        for name in names:
            x, g = factors[name]
            dense = densify(x, g)[i]
            assert _rel(model.get_submodule(name).weight.grad, dense) < MAX_REL, name
    with pytest.raises(InputError, match="not nn.Linear"):
        per_sample_linear_grads(model, batch, ["model.layers.0.mlp"])


def test_lora_grads_b_only_and_mixed_precision(tiny):
    """``with_a=False`` gives the same ∇B and no ∇A; bf16 base compute stays close to float32 (cosine)."""
    model, tok = tiny
    attach_lora(model, LoRAConfig(r=4, alpha=8), seed=1, init="random")
    batch = collate(uneven_samples(tok), tok.pad_token_id)
    _, full = per_sample_lora_grads(model, batch)
    _, b_only = per_sample_lora_grads(model, batch, with_a=False)
    losses, mixed = per_sample_lora_grads(model, batch, compute_dtype=torch.bfloat16)
    assert losses.dtype == torch.float32
    for name, (g_a, g_b) in full.items():
        assert b_only[name][0] is None
        torch.testing.assert_close(b_only[name][1], g_b)
        for ref, got in zip((g_a, g_b), mixed[name]):
            assert got.dtype == torch.float32
            assert F.cosine_similarity(ref.flatten(1), got.flatten(1), dim=1).min() > 0.95, name
    assert next(iter(lora_modules(model).values())).base.weight.dtype == torch.float32  # model untouched
