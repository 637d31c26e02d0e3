"""Seeded random projections that preserve inner products: ``E⟨Px, Py⟩ = ⟨x, y⟩``.

- ``SparseJL``: block CountSketch (Kane–Nelson): ``k`` outputs in ``nnz`` blocks of ``k/nnz``; every
  input coordinate j lands in one bucket per block with a random sign, value ±1/√nnz (``nnz=1`` is
  CountSketch). For unit x, y: ``Var⟨Px, Py⟩ ≤ 2/k``. Hashes are regenerated per chunk of
  coordinates from ``(seed, chunk)``, so no d×k matrix and no d-sized index table is ever kept.
- ``FactoredProjector`` (LoGra-style): per module, Gaussian ``L`` (k_out×m) and ``R`` (k_in×n), each
  scaled by 1/√rows, applied to gradient factors without forming m×n matrices:
  linear ``∇W = GᵀX  ->  L Gᵀ X Rᵀ = (G Lᵀ)ᵀ (X Rᵀ)``; LoRA ``(∇A, ∇B) -> (∇A Rᵀ, L ∇B)``.
  For unit inputs ``Var ≲ 2/k_in + 2/k_out``.
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


class FactoredProjector:
    """Per-module Kronecker projections ``R ⊗ L`` for gradients given as factors (never dense m×n)."""

    def __init__(self, k_out: int = 16, k_in: int = 16, seed: int = 0, device: str | torch.device = "cpu"):
        self.k_out, self.k_in, self.seed, self.device = k_out, k_in, seed, torch.device(device)
        self._mats: dict[tuple[str, int, int], tuple[torch.Tensor, torch.Tensor]] = {}

    def matrices(self, name: str, m: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(L [k_out, m], R [k_in, n])`` for module ``name``; a pure function of (seed, name, m, n)."""
        key = (name, m, n)
        if key not in self._mats:
            gen = torch.Generator().manual_seed(_seed("factored", self.seed, name, m, n))
            left = torch.randn(self.k_out, m, generator=gen) / self.k_out**0.5
            right = torch.randn(self.k_in, n, generator=gen) / self.k_in**0.5
            self._mats[key] = (left.to(self.device), right.to(self.device))
        return self._mats[key]

    def project_linear(self, name: str, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """``vec(L Gᵢᵀ Xᵢ Rᵀ)`` for X [b,T,n], G [b,T,m] -> [b, k_out·k_in]."""
        left, right = self.matrices(name, g.shape[-1], x.shape[-1])
        gl = g.float() @ left.T  # [b,T,k_out]
        xr = x.float() @ right.T  # [b,T,k_in]
        return torch.bmm(gl.transpose(1, 2), xr).flatten(1)

    def project_lora(self, name: str, grad_a: torch.Tensor, grad_b: torch.Tensor) -> torch.Tensor:
        """``[vec(∇A Rᵀ), vec(L ∇B)]`` for ∇A [b,r,n], ∇B [b,m,r] -> [b, r·k_in + k_out·r]."""
        left, right = self.matrices(name, grad_b.shape[1], grad_a.shape[2])
        pa = grad_a.float() @ right.T  # [b,r,k_in]
        pb = left @ grad_b.float()  # [b,k_out,r]
        return torch.cat([pa.flatten(1), pb.flatten(1)], dim=1)

    def project_lora_grads(self, grads: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        """Concatenate ``project_lora`` over modules in name order -> [b, Σ dims]."""
        return torch.cat([self.project_lora(n, *grads[n]) for n in sorted(grads)], dim=1)
