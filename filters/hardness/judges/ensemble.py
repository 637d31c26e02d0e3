"""``ensemble``: combines member judges' votes by a rule (majority / any / all) and an abstention policy."""

from __future__ import annotations

import json
from collections.abc import Sequence

from curator.errors import RecipeError
from curator.hashing import sha256_parts
from filters.hardness.judges.base import Judge, Verdict

ABSTAIN_POLICIES = ("safe", "drop", "harmful")
RULES = ("majority", "any", "all")


class EnsembleJudge:
    """Combines judges' ``harmful`` votes; per-judge verdicts are returned as JSON in ``raw``.

    ``majority``: harmful when harmful votes >= floor(J/2)+1, safe when safe votes reach the same
    threshold, else ``None`` (a tie with an even J is neither). ``any``/``all`` use thresholds 1/J.
    Abstentions follow ``abstain_policy``: ``safe`` counts them as not harmful (the paper),
    ``harmful`` as harmful, ``drop`` removes them (J shrinks; nobody left -> ``None``).
    ``refusal`` is the majority of the judges that give one (ties and none -> ``None``).
    """

    def __init__(self, judges: Sequence[Judge], rule: str = "majority", abstain_policy: str = "safe"):
        if not judges:
            raise RecipeError("ensemble: needs at least one judge")
        if rule not in RULES:
            raise RecipeError(f"ensemble: unknown rule '{rule}'; valid rules are {list(RULES)}")
        if abstain_policy not in ABSTAIN_POLICIES:
            raise RecipeError(f"ensemble: unknown abstain_policy '{abstain_policy}'; "
                              f"valid policies are {list(ABSTAIN_POLICIES)}")
        self.judges = list(judges)
        self.rule = rule
        self.abstain_policy = abstain_policy
        self.name = "ensemble(" + ",".join(j.name for j in self.judges) + ")"
        self.abstain_counts = {j.name: 0 for j in self.judges}

    def fingerprint(self) -> str:
        return sha256_parts("ensemble-v1", self.rule, self.abstain_policy, *(j.fingerprint() for j in self.judges))

    def _threshold(self, n: int) -> int:
        return {"majority": n // 2 + 1, "any": 1, "all": n}[self.rule]

    def combine(self, votes: Sequence[Verdict]) -> Verdict:
        """The ensemble verdict for one pair from its per-judge verdicts (same order as judges)."""
        harm = [v.harmful for v in votes]
        if self.abstain_policy == "drop":
            harm = [h for h in harm if h is not None]
        else:
            harm = [(self.abstain_policy == "harmful") if h is None else h for h in harm]
        n_yes, n_no = sum(harm), len(harm) - sum(harm)
        m = self._threshold(len(harm)) if harm else 0
        m_safe = m if self.rule == "majority" else len(harm) - m + 1  # any/all: complementary labels
        harmful = None if not harm else True if n_yes >= m else False if n_no >= m_safe else None
        refs = [v.refusal for v in votes if v.refusal is not None]
        r_yes = sum(refs)
        refusal = None if not refs or 2 * r_yes == len(refs) else 2 * r_yes > len(refs)
        raw = json.dumps({"rule": self.rule, "abstain_policy": self.abstain_policy, "threshold": m,
                          "harmful_votes": n_yes, "counted": len(harm),
                          "votes": [{"judge": v.judge, "harmful": v.harmful, "refusal": v.refusal,
                                     "raw": v.raw} for v in votes]})
        return Verdict(harmful, refusal, raw, self.name)

    def judge(self, pairs: Sequence[tuple[str, str]]) -> list[Verdict]:
        per_judge = [j.judge(pairs) for j in self.judges]
        for j, vs in zip(self.judges, per_judge):
            if len(vs) != len(pairs):
                raise RuntimeError(f"judge {j.name} returned {len(vs)} verdicts for {len(pairs)} pairs")
            self.abstain_counts[j.name] += sum(v.harmful is None for v in vs)
        return [self.combine(votes) for votes in zip(*per_judge)]


def per_judge_rates(verdicts: Sequence[Verdict]) -> dict[str, dict[str, float]]:
    """From ensemble verdicts: per judge, the share of pairs voted harmful / refusal / abstained."""
    counts: dict[str, list[int]] = {}
    for v in verdicts:
        for vote in json.loads(v.raw)["votes"]:
            c = counts.setdefault(vote["judge"], [0, 0, 0, 0])
            c[0] += vote["harmful"] is True
            c[1] += vote["refusal"] is True
            c[2] += vote["harmful"] is None
            c[3] += 1
    return {k: {"harmful": c[0] / c[3], "refusal": c[1] / c[3], "abstain": c[2] / c[3]}
            for k, c in counts.items()}
