"""Which self-rollouts ``rebalance`` may train on (method notes §1.6-1.7, with stricter checks).

A candidate target is one of the model's own sampled answers. Checks, in this order; the first that
fails is the candidate's ``reason`` (so the counts per reason say how many candidates each check removed):

- ``judge``: every member of the judge (an ensemble's members, or the one judge) gives the wanted label --
  harmful role: ``harmful is False`` (a refusal or a safe completion); benign role: ``refusal is False``.
  An abstention rejects. Reason ``"harmful: <judge>"``, ``"refusal: <judge>"`` or ``"abstained: <judge>"``.
- ``incomplete``: the rollout neither ended (end-of-turn token, finish reason ``stop``) nor stops at a
  sentence boundary (``.``, ``!``, ``?``, ``…`` or a closed code block, then optional closing quotes or
  brackets): it was cut at the token budget mid-sentence.
- ``too short`` (benign role): fewer than ``min_words`` words.
- ``incoherent``: mean token log-probability under the model (``filters.coherence``) below
  ``min_mean_logprob``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from filters.hardness.judges.base import Verdict

ROLES = ("harmful", "benign")
INCOMPLETE, TOO_SHORT, INCOHERENT = "incomplete", "too short", "incoherent"
_SENTENCE_END = re.compile(r"(?:[.!?…]|```)[\"'”’)\]*_]*\s*$")


@dataclass(frozen=True)
class Candidate:
    """A sampled answer to ``prompt``: its text, why generation stopped, and the judge members' verdicts."""

    prompt: str
    text: str
    finish_reason: str
    votes: Sequence[Verdict]


def is_complete(text: str, finish_reason: str) -> bool:
    """The model ended its answer, or the answer stops at a sentence boundary."""
    return finish_reason == "stop" or bool(_SENTENCE_END.search(text))


def n_words(text: str) -> int:
    return len(text.split())


def judge_reason(role: str, votes: Sequence[Verdict]) -> str | None:
    """Why the judge members reject the candidate for ``role``, or None when all give the wanted label."""
    for v in votes:
        label = v.harmful if role == "harmful" else v.refusal
        if label is None:
            return f"abstained: {v.judge}"
        if label:
            return f"{'harmful' if role == 'harmful' else 'refusal'}: {v.judge}"
    return None


@dataclass(frozen=True)
class TargetChecks:
    min_words: int = 8  # benign role only: a refusal may be short
    min_mean_logprob: float | None = None  # None: no coherence check
    require_complete: bool = True

    def before_coherence(self, role: str, c: Candidate) -> str | None:
        """The reason of the first failing check that needs no model, or None."""
        why = judge_reason(role, c.votes)
        if why:
            return why
        if self.require_complete and not is_complete(c.text, c.finish_reason):
            return INCOMPLETE
        if role == "benign" and n_words(c.text) < self.min_words:
            return TOO_SHORT
        return None

    def coherence(self, logprob: float) -> str | None:
        if self.min_mean_logprob is not None and not logprob >= self.min_mean_logprob:
            return INCOHERENT
        return None
