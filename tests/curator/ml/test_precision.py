"""bf16 is used only where the CPU runs it natively; asking for it elsewhere warns."""

import pytest
import torch

from curator.ml import precision
from curator.ml.lora import LoRAConfig
from curator.ml.testing import tiny_model
from curator.ml.training import TrainConfig, train_lora


def test_default_autocast_follows_native_support():
    assert precision.default_autocast() == ("bfloat16" if precision.native_bfloat16() else "none")


def test_bf16_training_on_a_cpu_without_native_bf16_warns_and_still_trains(monkeypatch):
    monkeypatch.setattr(precision, "native_bfloat16", lambda device="cpu": False)
    precision.warn_if_slow_bfloat16.cache_clear()
    model, tok = tiny_model()
    rows = [{"prompt": "hi there", "response": "hello"}] * 4
    with pytest.warns(RuntimeWarning, match="no native bf16"):
        factors, log = train_lora(model, tok, rows, LoRAConfig(r=2), TrainConfig(epochs=1, batch_size=2,
                                                                             autocast="bfloat16"))
    assert log.steps == 2 and all(torch.isfinite(torch.tensor(log.losses)))
    precision.warn_if_slow_bfloat16.cache_clear()
