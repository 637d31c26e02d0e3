"""Shared pytest fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from curator.ml.testing import save_tiny_model, tiny_model

# Subprocesses (`python -m curator.cli ...` from a temporary directory) import this checkout, not whichever
# curator the interpreter has installed (an editable install of another tree would be tested instead).
REPO = str(Path(__file__).resolve().parents[1])
os.environ["PYTHONPATH"] = os.pathsep.join([REPO, *[p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep)
                                                    if p and p != REPO]])


# --- models (curator.ml.models / chat / lora / gradients) ---------------------------------------------
@pytest.fixture
def curator_home(tmp_path, monkeypatch):
    """A private, empty CURATOR_HOME for one test."""
    home = tmp_path / "curator-home"
    monkeypatch.setenv("CURATOR_HOME", str(home))
    return home


@pytest.fixture
def tiny():
    """A fresh random 2-layer Llama and its in-code ChatML tokenizer: ``(model, tokenizer)``."""
    return tiny_model()


@pytest.fixture
def tiny_model_dir(tmp_path):
    """A loadable HF directory holding ``tiny_model()``."""
    return save_tiny_model(tmp_path / "tiny-model")


@pytest.fixture
def one_torch_thread():
    """Tiny models run faster on one thread, and far faster when other jobs share the CPU."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
