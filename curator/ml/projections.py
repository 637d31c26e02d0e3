"""A seeded random projection that preserves inner products: ``E⟨Px, Py⟩ = ⟨x, y⟩``.

- ``SparseJL``: block CountSketch (Kane–Nelson): ``k`` outputs in ``nnz`` blocks of ``k/nnz``; every
  input coordinate j lands in one bucket per block with a random sign, value ±1/√nnz (``nnz=1`` is
  CountSketch). For unit x, y: ``Var⟨Px, Py⟩ ≤ 2/k``. Hashes are regenerated per chunk of
  coordinates from ``(seed, chunk)``, so no d×k matrix and no d-sized index table is ever kept.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch

CHUNK = 1 << 20


def _seed(*parts) -> int:
    return int(hashlib.sha256(":".join(map(str, parts)).encode()).hexdigest()[:15], 16)


@dataclass(frozen=True)
class SparseJL:
    """Project flat vectors of length ``dim`` to ``k`` dims; ``project(x [b, dim]) -> [b, k]``."""

    dim: int
    k: int
    seed: int = 0
    nnz: int = 1

    def __post_init__(self):
        if self.k % self.nnz:
            raise ValueError(f"k={self.k} must be a multiple of nnz={self.nnz}")

    def _hashes(self, chunk: int, length: int) -> tuple[torch.Tensor, torch.Tensor]:
        gen = torch.Generator().manual_seed(_seed("sparse-jl", self.seed, chunk))
        block = self.k // self.nnz
        rows = torch.randint(0, block, (self.nnz, length), generator=gen)
        rows += torch.arange(self.nnz).unsqueeze(1) * block
        signs = torch.randint(0, 2, (self.nnz, length), generator=gen).float() * 2 - 1
        return rows, signs

    def project(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.dim:
            raise ValueError(f"expected vectors of length {self.dim}, got {x.shape[-1]}")
        x2 = x.reshape(-1, self.dim).float()
        out = torch.zeros(x2.shape[0], self.k, device=x.device)
        for chunk, start in enumerate(range(0, self.dim, CHUNK)):
            part = x2[:, start : start + CHUNK]
            rows, signs = self._hashes(chunk, part.shape[1])
            rows, signs = rows.to(x.device), signs.to(x.device)
            for c in range(self.nnz):
                out.index_add_(1, rows[c], part * signs[c])
        out /= self.nnz**0.5
        return out.reshape(*x.shape[:-1], self.k)
