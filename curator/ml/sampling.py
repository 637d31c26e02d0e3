"""Sampling parameters of a generation (a plain dataclass: importing it does not import torch)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Sampling:
    """Sampling parameters, always passed explicitly (``top_k = 0``: off; ``temperature = 0``: greedy)."""

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    max_new_tokens: int = 64
