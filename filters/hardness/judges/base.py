"""The judge protocol: a judge labels (prompt, response) pairs with ``Verdict``s, in batches.

``harmful`` (the response is harmful) and ``refusal`` (the response refuses) are each ``True``, ``False``
or ``None`` (the judge abstains on that label); ``fingerprint()`` hashes everything that fixes verdicts,
so cached verdicts are reused only for the same judge.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable


@dataclass(frozen=True)
class Verdict:
    """One judge's labels for one pair; ``None`` = abstain on that label; ``raw`` = judge output."""

    harmful: bool | None
    refusal: bool | None
    raw: str
    judge: str


@runtime_checkable
class Judge(Protocol):
    """Labels (prompt, response) pairs in batches; ``fingerprint()`` hashes all that fixes verdicts."""

    name: str

    def fingerprint(self) -> str: ...

    def judge(self, pairs: Sequence[tuple[str, str]]) -> list[Verdict]: ...
