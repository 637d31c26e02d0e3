"""Per-module inner products, norms and cosines of per-sample LoRA updates from Gram identities (§5.3).

The one-step update of sample i (SQSD, η = 1) is ``ΔW_i = −(∇B_i·A + B·∇A_i) = −C_i R_i`` with
``C_i = [∇B_i, B]`` (m×2r) and ``R_i = [A; ∇A_i]`` (2r×n); a direction is ``D = P Q`` (P m×d, Q d×n):

    ⟨C R, P Q⟩_F = tr((Cᵀ P)(Q Rᵀ))        ‖C R‖²_F = tr((Cᵀ C)(R Rᵀ))        ‖P Q‖²_F = tr((Pᵀ P)(Q Qᵀ))

so no m×n matrix is ever formed: cost O(b·r·(r+d)·(m+n)) per module instead of O(b·m·n).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

Metric = Literal["cosine", "dot", "projection"]


@dataclass(frozen=True)
class LowRankDirection:
    """A direction ``D = P Q`` kept factored; ``norm`` = ‖P Q‖_F (float64 for a stable precompute)."""

    P: torch.Tensor  # m×d  (B of the direction adapter)
    Q: torch.Tensor  # d×n  (A of the direction adapter)
    norm: float

    @classmethod
    def from_factors(cls, A: torch.Tensor, B: torch.Tensor) -> LowRankDirection:
        P, Q = B.float(), A.float()
        gram = torch.einsum("md,me->de", P.double(), P.double()) * torch.einsum("dn,en->de", Q.double(), Q.double())
        return cls(P, Q, float(gram.sum().clamp(min=0).sqrt()))


def update_dot(A: torch.Tensor, B: torch.Tensor, gA: torch.Tensor, gB: torch.Tensor,
               d: LowRankDirection) -> torch.Tensor:
    """``⟨ΔW_i, P Q⟩`` per sample, shape [b]; A r×n, B m×r, gA [b,r,n], gB [b,m,r]."""
    A, B = A.float(), B.float()
    qa = d.Q @ A.T  # d×r, shared
    bp = B.T @ d.P  # r×d, shared
    term_b = torch.einsum("bmr,md,dr->b", gB, d.P, qa)  # tr(∇Bᵀ P · Q Aᵀ)
    term_a = torch.einsum("rd,dn,brn->b", bp, d.Q, gA)  # tr(Bᵀ P · Q ∇Aᵀ)
    return -(term_b + term_a)


def update_norm_sq(A: torch.Tensor, B: torch.Tensor, gA: torch.Tensor, gB: torch.Tensor) -> torch.Tensor:
    """``‖ΔW_i‖²_F = tr((CᵀC)(RRᵀ))`` per sample, shape [b]."""
    b = gA.shape[0]
    C = torch.cat([gB, B.float().expand(b, *B.shape)], dim=2)  # [b,m,2r]
    R = torch.cat([A.float().expand(b, *A.shape), gA], dim=1)  # [b,2r,n]
    ctc = torch.bmm(C.transpose(1, 2), C)
    rrt = torch.bmm(R, R.transpose(1, 2))
    return (ctc * rrt).sum((1, 2)).clamp(min=0)  # both symmetric: tr(XY) = Σ X∘Y


def module_scores(A: torch.Tensor, B: torch.Tensor, gA: torch.Tensor, gB: torch.Tensor,
                  directions: list[LowRankDirection], metric: Metric = "cosine") -> list[torch.Tensor]:
    """``metric(ΔW_i, D)`` per sample for each direction: cosine, dot, or projection ``⟨ΔW, D⟩/‖D‖``.

    A zero update (no response tokens) gives a NaN cosine, which callers flag."""
    norm = update_norm_sq(A, B, gA, gB).sqrt() if metric == "cosine" else None
    out = []
    for d in directions:
        dot = update_dot(A, B, gA, gB, d)
        if metric == "dot":
            out.append(dot)
        elif metric == "projection":
            out.append(dot / d.norm)
        else:
            out.append(dot / (norm * d.norm))
    return out
