"""The order of a rebalance mix (pure functions over lists; method notes §1.5-1.6).

``select`` picks prompts in training order: ``hard`` = hardness descending, stable (ties keep input
order); ``random`` = a seeded permutation; a budget of ``count`` or ceil(``fraction`` · n), else all;
with ``strata``, a per-stratum quota merged back by hardness (so the hardest-first prefix property holds).
``interleave`` mixes blocks of a harmful and b benign items (ratio "a:b"); ``pick_target`` draws a
prompt's training target among its safe rollouts. Every seeded choice is a ``curator.hashing.seeded_rng``
stream.
"""

from __future__ import annotations

import math
from typing import Any

from curator.hashing import seeded_rng


def parse_ratio(ratio: str) -> tuple[int, int]:
    parts = ratio.split(":")
    if len(parts) != 2 or not all(p.strip().isdigit() and int(p) > 0 for p in parts):
        raise ValueError(f"ratio must be 'a:b' with positive integers (harmful:benign), got {ratio!r}")
    return int(parts[0]), int(parts[1])


def hard_order(hardness: list[float]) -> list[int]:
    """Indices by hardness descending; ties keep input order (stable)."""
    return sorted(range(len(hardness)), key=lambda i: -hardness[i])


def budget(n: int, fraction: float | None, count: int | None) -> int:
    return min(n, count) if count is not None else math.ceil(fraction * n) if fraction is not None else n


def quotas(sizes: dict[Any, int], fraction: float | None, count: int | None) -> dict[Any, int]:
    """Per-stratum quota: ceil(fraction·|E_s|), or ``count`` split by largest remainder."""
    if count is None:
        return {s: budget(n, fraction, None) for s, n in sizes.items()}
    total, count = sum(sizes.values()), min(count, sum(sizes.values()))
    exact = {s: count * n / total for s, n in sizes.items()}
    q = {s: math.floor(x) for s, x in exact.items()}
    for s in sorted(sizes, key=lambda s: (-(exact[s] - q[s]), str(s)))[: count - sum(q.values())]:
        q[s] += 1
    return q


def select(hardness: list[float], mode: str = "hard", fraction: float | None = None, count: int | None = None,
           strata: list[Any] | None = None, seed: int = 0) -> list[int]:
    """Indices of the selected prompts in training order (``hard``: hardness descending, stable)."""
    n = len(hardness)
    if strata is None:
        order = hard_order(hardness) if mode == "hard" else list(seeded_rng(seed, "random", "").permutation(n))
        return [int(i) for i in order[: budget(n, fraction, count)]]
    groups: dict[Any, list[int]] = {}
    for i, s in enumerate(strata):
        groups.setdefault(s, []).append(i)
    q = quotas({s: len(ix) for s, ix in groups.items()}, fraction, count)
    chosen: list[int] = []
    for s, ix in groups.items():
        if mode == "hard":
            chosen += [ix[i] for i in hard_order([hardness[i] for i in ix])][: q[s]]
        else:
            chosen += [ix[int(i)] for i in seeded_rng(seed, "random", str(s)).permutation(len(ix))[: q[s]]]
    if mode == "hard":
        return sorted(chosen, key=lambda i: (-hardness[i], i))
    chosen.sort()
    return [chosen[int(i)] for i in seeded_rng(seed, "random", "merge").permutation(len(chosen))]


def n_benign_needed(n_harmful: int, ratio: tuple[int, int]) -> int:
    return math.ceil(n_harmful * ratio[1] / ratio[0])


def interleave(harmful: list, benign: list, ratio: tuple[int, int] = (1, 1)) -> list:
    """Blocks of ``a`` harmful then ``b`` benign items until both run out (1:1 -> H1,B1,H2,B2,...)."""
    a, b = ratio
    out, h, k = [], 0, 0
    while h < len(harmful) or k < len(benign):
        out += harmful[h:h + a] + benign[k:k + b]
        h, k = h + a, k + b
    return out


def pick_target(seed: int, key: str, candidates: list[int]) -> int:
    """One of ``candidates`` (sorted first) drawn by the stream sha256(seed, "target", key)."""
    cands = sorted(candidates)
    return cands[int(seeded_rng(seed, "target", key).integers(len(cands)))]
