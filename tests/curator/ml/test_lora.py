import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from curator.errors import InputError
from curator.ml.lora import (
    LoRAConfig,
    LoRALinear,
    attach_lora,
    detach_lora,
    get_factors,
    load_factors,
    lora_modules,
    merge_factors,
    merge_lora,
    save_factors,
    set_factors,
)
from curator.ml.testing import tiny_model


def _logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits


IDS = torch.tensor([[5, 17, 42, 99, 3, 250, 7]])


def test_attach_targets_and_zero_b_is_identity(tiny):
    model, _ = tiny
    before = _logits(model, IDS)
    wrapped = attach_lora(model, LoRAConfig(r=4), seed=0)
    assert len(wrapped) == 2 * 7  # q k v o gate up down in 2 blocks; lm_head excluded
    assert all(isinstance(m, LoRALinear) for m in lora_modules(model).values())
    m = wrapped["model.layers.0.self_attn.q_proj"]
    assert m.lora_A.shape == (4, 32) and m.lora_B.shape == (32, 4) and m.scaling == 16 / 4
    assert not m.lora_B.any() and m.lora_A.abs().max() <= 1 / 32**0.5
    torch.testing.assert_close(_logits(model, IDS), before)
    assert [n for n, p in model.named_parameters() if p.requires_grad] == [
        n for n in (f"{k}.lora_{x}" for k in wrapped for x in "AB")
    ]


def test_target_filters_and_seed():
    model, _ = tiny_model(n_layers=3)
    names = attach_lora(model, LoRAConfig(target_modules=("q_proj", "v_proj"), layers=(0, 2)), seed=1)
    assert sorted(names) == sorted(f"model.layers.{i}.self_attn.{p}_proj" for i in (0, 2) for p in "qv")
    other, _ = tiny_model(n_layers=3)
    attach_lora(other, LoRAConfig(target_modules=("q_proj", "v_proj"), layers=(0, 2)), seed=1)
    for n, (a, _b) in get_factors(model).items():
        torch.testing.assert_close(a, get_factors(other)[n][0])
    with pytest.raises(InputError):
        attach_lora(model, LoRAConfig())
    detach_lora(model)
    with pytest.raises(InputError, match="no Linear"):
        attach_lora(model, LoRAConfig(target_modules=("nope",)))


def test_forward_formula_scaling_merge_and_detach(tiny):
    model, _ = tiny
    base = _logits(model, IDS)
    attach_lora(model, LoRAConfig(r=2, alpha=4), seed=0, init="random")
    mod = lora_modules(model)["model.layers.1.mlp.down_proj"]
    x = torch.randn(3, mod.base.in_features)
    torch.testing.assert_close(mod(x), mod.base(x) + 2.0 * x @ (mod.lora_B @ mod.lora_A).T)
    with_lora = _logits(model, IDS)
    assert not torch.allclose(with_lora, base)
    set_factors(model, get_factors(model), scaling=0.8)
    assert all(m.scaling == 0.8 for m in lora_modules(model).values())
    scaled = _logits(model, IDS)
    merged = merge_lora(model)
    assert len(merged) == 14 and not lora_modules(model)
    torch.testing.assert_close(_logits(model, IDS), scaled, rtol=1e-4, atol=1e-5)
    model2, _ = tiny_model()
    attach_lora(model2, LoRAConfig(), init="random")
    detach_lora(model2)
    assert isinstance(model2.model.layers[1].mlp.down_proj, nn.Linear)
    assert all(p.requires_grad for p in model2.parameters())
    torch.testing.assert_close(_logits(model2, IDS), base)


def test_training_grads_reach_only_lora(tiny):
    model, _ = tiny
    attach_lora(model, LoRAConfig(), init="random")
    model(input_ids=IDS, labels=IDS).loss.backward()
    for n, p in model.named_parameters():
        assert (p.grad is not None) == ("lora_" in n), n


def test_set_factors_validates(tiny):
    model, _ = tiny
    attach_lora(model, LoRAConfig(r=4))
    factors = get_factors(model)
    bad = dict(factors)
    bad.pop(next(iter(bad)))
    with pytest.raises(InputError, match="missing"):
        set_factors(model, bad)
    name = next(iter(factors))
    with pytest.raises(InputError, match=name):
        set_factors(model, {**factors, name: (torch.zeros(3, 32), factors[name][1])})


def test_save_load_roundtrip_and_tamper_detection(tiny, tmp_path):
    model, _ = tiny
    attach_lora(model, LoRAConfig(r=4), init="random")
    factors = get_factors(model)
    path = tmp_path / "dir" / "danger.safetensors"
    save_factors(path, factors, {"kind": "danger", "steps": 7})
    loaded, meta = load_factors(path)
    assert meta["kind"] == "danger" and meta["steps"] == "7" and len(meta["curator_sha256"]) == 64
    assert loaded.keys() == factors.keys()
    for n, (a, b) in factors.items():
        assert torch.equal(loaded[n][0], a) and torch.equal(loaded[n][1], b)
    tensors = load_file(str(path))
    tensors["model.layers.0.self_attn.q_proj.lora_B"][0, 0] += 1e-3
    save_file(tensors, str(path), metadata=meta)
    with pytest.raises(InputError, match="danger.safetensors"):
        load_factors(path)
    with pytest.raises(InputError, match="missing.safetensors"):
        load_factors(tmp_path / "missing.safetensors")


def test_merge_factors_equals_attached_adapters_and_can_keep_the_original_weights(tiny):
    model, _ = tiny
    cfg = LoRAConfig(r=2, alpha=4)
    original = {k: v.clone() for k, v in model.state_dict().items()}
    attach_lora(model, cfg, seed=0, init="random")
    factors, with_lora = get_factors(model), _logits(model, IDS)
    detach_lora(model)
    kept = merge_factors(model, cfg, factors, seed=0, keep_original=True)
    assert not lora_modules(model) and len(kept) == 14
    torch.testing.assert_close(_logits(model, IDS), with_lora, rtol=1e-4, atol=1e-5)
    assert all(torch.equal(w, original[f"{n}.weight"]) for n, w in kept.items())
    assert merge_factors(tiny_model()[0], cfg, factors) == {}
