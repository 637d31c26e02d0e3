"""Batch scoring that survives bad samples: split on out-of-memory, retry non-finite rows alone.

``score_robustly(fn, items)`` calls ``fn(batch) -> list[tuple[float, ...]]`` on the whole
batch. On an out-of-memory error the batch is halved and retried (down to single items); rows
whose scores are NaN/inf are retried on their own (batch composition can matter through
padding). A row that still fails gets ``None`` scores and a reason, so the stage can flag it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TypeVar

import torch

T = TypeVar("T")
Scores = tuple[float, ...]


def is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.OutOfMemoryError) or (
        isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower())


def _finite(scores: Scores) -> bool:
    return all(v is not None and math.isfinite(v) for v in scores)


def score_robustly(fn: Callable[[Sequence[T]], list[Scores]], items: Sequence[T]
                   ) -> tuple[list[Scores | None], list[str | None]]:
    """(scores or None, failure reason or None) per item, in order."""
    scores: list[Scores | None] = [None] * len(items)
    reasons: list[str | None] = [None] * len(items)

    def attempt(idx: list[int]) -> None:
        try:
            out = fn([items[i] for i in idx])
        except Exception as exc:  # noqa: BLE001 - OOM is split; others fail the row(s) alone
            if len(idx) > 1 and is_oom(exc):
                half = len(idx) // 2
                attempt(idx[:half])
                attempt(idx[half:])
                return
            if len(idx) > 1:
                for i in idx:
                    attempt([i])
                return
            reasons[idx[0]] = f"{'out of memory' if is_oom(exc) else type(exc).__name__}: {str(exc)[:200]}"
            return
        bad = []
        for i, s in zip(idx, out):
            if _finite(s):
                scores[i] = s
            elif len(idx) > 1:
                bad.append(i)
            else:
                reasons[i] = "non-finite score (NaN or inf) from the model"
        for i in bad:
            attempt([i])

    if items:
        attempt(list(range(len(items))))
    return scores, reasons
