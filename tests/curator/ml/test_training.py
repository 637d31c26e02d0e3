"""curator.ml.training: determinism, schedule, checkpoints, shuffling, and that training reduces the loss."""

from __future__ import annotations

import pytest
import torch

from curator.errors import InputError
from curator.ml.chat import collate, encode_sample, model_per_sample_loss
from curator.ml.lora import LoRAConfig, attach_lora, detach_lora, lora_modules, set_factors
from curator.ml.training import TrainConfig, lr_factor, train_lora

ROWS = [{"prompt": f"question {i}: how do i bake bread?", "response": f"mix flour, water and salt {i} times."}
        for i in range(10)] + [{"prompt": None, "response": "the quick brown fox jumps over the lazy dog"}]
LORA = LoRAConfig(r=4, alpha=8.0)


def _same(f1, f2) -> bool:
    return f1.keys() == f2.keys() and all(torch.equal(f1[k][i], f2[k][i]) for k in f1 for i in (0, 1))


def _mean_loss(model, tok, factors):
    attach_lora(model, LORA)
    set_factors(model, factors)
    batch = collate([encode_sample(tok, r["prompt"], r["response"]) for r in ROWS], tok.pad_token_id)
    with torch.no_grad():
        loss = float(model_per_sample_loss(model, batch).mean())
    detach_lora(model)
    return loss


def test_same_seed_same_factors_and_model_restored(tiny):
    model, tok = tiny
    before = {n: p.clone() for n, p in model.state_dict().items()}
    cfg = TrainConfig(lr=1e-2, epochs=2, batch_size=4, seed=3)
    f1, log1 = train_lora(model, tok, ROWS, LORA, cfg, progress=False)
    f2, log2 = train_lora(model, tok, ROWS, LORA, cfg, progress=False)
    assert _same(f1, f2) and log1.losses == log2.losses
    assert log1.steps == 6 and len(log1.losses) == 6
    assert not lora_modules(model)
    assert all(torch.equal(p, before[n]) for n, p in model.state_dict().items())
    f3, _ = train_lora(model, tok, ROWS, LORA, TrainConfig(lr=1e-2, epochs=2, batch_size=4, seed=4), progress=False)
    assert not _same(f1, f3)
    assert any(b.abs().sum() > 0 for _, b in f1.values())  # B moved away from 0


def test_training_reduces_loss(tiny):
    model, tok = tiny
    f0, _ = train_lora(model, tok, ROWS, LORA, TrainConfig(lr=0.0, max_steps=1, batch_size=4), progress=False)
    f1, log = train_lora(model, tok, ROWS, LORA, TrainConfig(lr=1e-2, epochs=4, batch_size=4), progress=False)
    assert _mean_loss(model, tok, f1) < _mean_loss(model, tok, f0) - 0.05
    assert log.losses[-1] < log.losses[0]


def test_checkpoints_max_steps_shuffle(tiny):
    model, tok = tiny
    cfg = TrainConfig(lr=1e-2, epochs=3, batch_size=4, max_steps=5, checkpoint_steps=(2, 5, 99))
    final, log = train_lora(model, tok, ROWS, LORA, cfg, progress=False)
    assert log.steps == 5 and sorted(log.checkpoints) == [2, 5]
    assert _same(log.checkpoints[5], final) and not _same(log.checkpoints[2], final)
    shuffled = TrainConfig(lr=1e-2, epochs=1, batch_size=4, shuffle=True, seed=1)
    s1, _ = train_lora(model, tok, ROWS, LORA, shuffled, progress=False)
    s2, _ = train_lora(model, tok, ROWS, LORA, shuffled, progress=False)
    plain, _ = train_lora(model, tok, ROWS, LORA, TrainConfig(lr=1e-2, epochs=1, batch_size=4, seed=1),
                          progress=False)
    assert _same(s1, s2) and not _same(s1, plain)


def test_schedule_and_errors(tiny):
    cos = TrainConfig(schedule="cosine", warmup_ratio=0.2)
    assert [round(lr_factor(s, 10, cos), 4) for s in (0, 1, 2, 6, 9)] == [0.5, 1.0, 1.0, 0.5, 0.0381]
    assert lr_factor(7, 10, TrainConfig()) == 1.0
    model, tok = tiny
    with pytest.raises(InputError, match="no training rows"):
        train_lora(model, tok, [], LORA, TrainConfig())
    with pytest.raises(InputError, match="schedule"):
        train_lora(model, tok, ROWS, LORA, TrainConfig(schedule="linear"))


def test_bf16_autocast_trains_close_to_float32_and_bad_value_is_an_error(tiny):
    model, tok = tiny
    cfg = TrainConfig(lr=1e-2, epochs=2, batch_size=4, seed=0)
    f32, log32 = train_lora(model, tok, ROWS, LORA, cfg, progress=False)
    f16, log16 = train_lora(model, tok, ROWS, LORA, TrainConfig(**{**cfg.__dict__, "autocast": "bfloat16"}),
                            progress=False)
    assert all(f16[k][i].dtype == torch.float32 for k in f16 for i in (0, 1))  # LoRA stays float32
    assert log16.losses[-1] < log16.losses[0]
    assert log16.losses[0] == pytest.approx(log32.losses[0], rel=0.02)
    assert not all(torch.equal(f16[k][1], f32[k][1]) for k in f16)  # bf16 matmuls really ran
    with pytest.raises(InputError, match="autocast"):
        train_lora(model, tok, ROWS, LORA, TrainConfig(autocast="fp8"), progress=False)
