"""filters.risk.directions: factored storage, hash verification, mean-update factors, default cache."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from curator.errors import InputError
from curator.ml.chat import collate, encode_sample, model_per_sample_loss
from curator.ml.lora import attach_lora, detach_lora, lora_modules
from curator.ml.testing import tiny_model
from curator.ml.training import TrainConfig
from curator.refdata.anchors import danger_anchors, split
from filters.risk import directions as dirs
from tests.filters.risk.test_sqsd import TINY_CFG, tiny_data


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    model, tok = tiny_model()
    root = tmp_path_factory.mktemp("dirs")
    out = {m: dirs.build_directions(model, tok, tiny_data(), dirs.DirectionConfig(**{**TINY_CFG.__dict__, "method": m}),
                                    root / m, "fp-tiny", progress=False) for m in ("lora", "mean_update")}
    return out, model, tok


def test_round_trip_and_metadata(built):
    paths, model, _ = built
    d = dirs.load_directions(paths["lora"], "fp-tiny")
    assert d.method == "lora" and d.safety_state == "safety" and d.initial_scaling == 2.0
    assert d.lora == TINY_CFG.lora
    assert set(d.danger) == set(d.safety) == set(d.initial) and len(d.danger) == 14  # 2 blocks x 7 linears
    a, b = next(iter(d.danger.values()))
    assert a.shape[0] == b.shape[1] == 4 and b.abs().sum() > 0
    assert not any(lora_modules(model))  # build left the model clean
    summary = json.loads((paths["lora"] / "directions.json").read_text())
    assert summary["model_fingerprint"] == "fp-tiny" and summary["data"] == {"test": "tiny"}
    assert summary["config"]["danger_train"]["lr"] == TINY_CFG.danger_train.lr
    assert set(summary["train_logs"]) == {"danger", "safety", "initial"}
    assert dirs.directions_sha256(paths["lora"] / "danger.safetensors") == d.sha256
    # identical A init for all three adapters (one init seed), then trained apart
    name = next(iter(d.danger))
    cos = torch.nn.functional.cosine_similarity(d.danger[name][0].flatten(), d.initial[name][0].flatten(), dim=0)
    assert cos > 0.5


def test_tampered_swapped_and_foreign_files_are_errors(built, tmp_path):
    paths, _, _ = built
    copy = tmp_path / "copy"
    shutil.copytree(paths["lora"], copy)
    tensors = load_file(str(copy / "danger.safetensors"))
    with safe_open(str(copy / "danger.safetensors"), "pt") as fh:
        meta = fh.metadata()
    key = next(iter(tensors))
    tensors[key] = tensors[key] + 1e-3
    save_file(tensors, str(copy / "danger.safetensors"), metadata=meta)
    with pytest.raises(InputError, match="integrity"):
        dirs.load_directions(copy)
    shutil.copy(paths["lora"] / "safety.safetensors", copy / "danger.safetensors")  # valid file, wrong place
    with pytest.raises(InputError, match="does not match the sha256"):
        dirs.load_directions(copy)
    with pytest.raises(InputError, match="fingerprint"):
        dirs.load_directions(paths["lora"], "another-model")
    with pytest.raises(InputError, match="not a directions directory"):
        dirs.load_directions(tmp_path)


def test_mean_update_factors_equal_dense_mean_update(built):
    paths, model, tok = built
    d = dirs.load_directions(paths["mean_update"])
    assert d.safety_state == "initial"
    attach_lora(model, TINY_CFG.lora, seed=TINY_CFG.init_seed)
    mods = lora_modules(model)
    for name, (a0, b0) in d.initial.items():
        assert torch.equal(mods[name].lora_A.detach(), a0) and not b0.any()
    rows = tiny_data().danger
    dense = {n: torch.zeros(m.base.out_features, m.base.in_features) for n, m in mods.items()}
    for r in rows:  # per-sample updates, batch 1, averaged densely
        model.zero_grad(set_to_none=True)
        for m in mods.values():
            m.lora_A.requires_grad_(True)
            m.lora_B.requires_grad_(True)
        s = encode_sample(tok, r["prompt"], r["response"], max_length=TINY_CFG.mean_max_length)
        model_per_sample_loss(model, collate([s], tok.pad_token_id)).sum().backward()
        for n, m in mods.items():
            dense[n] -= (m.lora_B.grad @ m.lora_A.detach() + m.lora_B.detach() @ m.lora_A.grad) / len(rows)
    detach_lora(model)
    for n, (a, b) in d.danger.items():
        torch.testing.assert_close(b @ a, dense[n], rtol=1e-4, atol=1e-7)


def test_default_directions_are_cached_by_key(tiny, curator_home, monkeypatch):
    model, tok = tiny
    cfg = dirs.DirectionConfig(**{**TINY_CFG.__dict__, "method": "mean_update", "initial_rows": 4})
    monkeypatch.setattr(dirs, "default_anchor_data", lambda c: dirs.AnchorData(
        tiny_data().danger[:4], tiny_data().safety[:4], tiny_data().initial[:4], {"n": 4}))
    root = dirs.ensure_default(model, tok, "fp-x", cfg, progress=False)
    assert root.parent == curator_home / "directions" / "fp-x"
    stamp = (root / "danger.safetensors").stat().st_mtime_ns
    assert dirs.ensure_default(model, tok, "fp-x", cfg, progress=False) == root
    assert (root / "danger.safetensors").stat().st_mtime_ns == stamp  # reused, not rebuilt
    other = dirs.ensure_default(model, tok, "fp-x", dirs.DirectionConfig(**{**cfg.__dict__, "init_seed": 1}),
                                progress=False)
    assert other != root
    assert dirs.ensure_default(model, tok, "fp-x", cfg, force=True, progress=False) == root
    assert not list(root.parent.glob(f".{root.name}-*"))  # no temp dirs left behind


def test_default_anchor_data_uses_train_split_only():
    cfg = dirs.DirectionConfig()
    data = dirs.default_anchor_data(cfg)
    _, test, rec = split(danger_anchors(), cfg.test_fraction, cfg.split_seed)
    held_out = set(test["prompt"].to_pylist())
    assert held_out and not held_out & {r["prompt"] for r in data.danger + data.safety}
    assert len(data.danger) == len(data.safety) == rec["n_train"] and len(data.initial) == cfg.initial_rows
    assert data.record["danger_split"] == rec and len(data.record["danger_anchors_sha256"]) == 64
    with pytest.raises(InputError, match="method"):
        dirs.DirectionConfig(method="dense")
    assert TrainConfig() == TrainConfig()


def test_cache_key_ignores_noop_training_options_but_not_real_ones():
    base = dirs.DirectionConfig()
    assert all("autocast" not in base.to_json()[k] for k in ("danger_train", "safety_train", "initial_train"))
    bf16 = dirs.DirectionConfig(danger_train=TrainConfig(lr=1e-3, epochs=1, batch_size=8, max_length=192,
                                                         autocast="bfloat16"))
    assert dirs.build_key("fp", bf16, {}) != dirs.build_key("fp", base, {})
    assert dirs.build_key("fp", base, {}) == dirs.build_key("fp", dirs.DirectionConfig(), {})
