"""Content hashes and seeded streams: every id, cache key and seeded choice in curator comes from here.

- ``sha256_text(*parts)``: sha256 hex of the parts joined by NUL (``str(seed)``, a purpose tag, a key).
- ``sha256_parts(*parts)``: sha256 hex of length-prefixed parts (unambiguous for arbitrary bytes).
- ``sha256_file(path)``: sha256 hex of a file's bytes, read in chunks.
- ``seeded_rng(seed, purpose, key)``: a numpy Generator seeded by ``sha256_text(seed, purpose, key)``:
  one independent stream per choice, so a choice never depends on what else was drawn or on row order.
- ``seeded_order(seed, purpose, keys)``: indices of ``keys`` sorted by ``sha256_text(seed, purpose, key)``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np


def sha256_text(*parts: object) -> str:
    return hashlib.sha256("\x00".join(str(p) for p in parts).encode("utf-8")).hexdigest()


def sha256_parts(*parts: str | bytes) -> str:
    h = hashlib.sha256()
    for p in parts:
        b = p.encode("utf-8") if isinstance(p, str) else p
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)
    return h.hexdigest()


def sha256_file(path: str | Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def seeded_rng(seed: int, purpose: str, key: str) -> np.random.Generator:
    digest = hashlib.sha256(f"{int(seed)}\x00{purpose}\x00{key}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:16], "big"))


def seeded_order(seed: int, purpose: str, keys: Sequence[str]) -> list[int]:
    return sorted(range(len(keys)), key=lambda i: sha256_text(int(seed), purpose, keys[i]))
