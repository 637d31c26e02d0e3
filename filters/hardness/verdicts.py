"""Judge verdicts on (prompt, rollout) pairs, cached in the ``verdicts`` artifact (shared by every fingerprint).

``pair_key = H("pair", prompt, text)`` names a pair (rollout rows carry it, so the ``rollouts`` and
``verdicts`` views join on it); ``verdict_key = H(judge fingerprint, pair_key)``. Only pairs without a
stored verdict are sent to the judge; an ensemble's members are cached one by one, so adding a member
judges only with the new one. H = ``curator.hashing.sha256_parts``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa

from curator.hashing import sha256_parts
from curator.keyed_store import KeyedStore
from curator.stage import Artifact
from filters.hardness.judges.base import Judge, Verdict
from filters.hardness.judges.ensemble import EnsembleJudge

VERDICTS = Artifact("verdicts", "cache/verdicts", "verdict_key",
                    "judge verdicts per (prompt, rollout) pair and judge; join rollouts on pair_key")
VERDICT_SCHEMA = pa.schema([
    ("verdict_key", pa.string()), ("pair_key", pa.string()), ("judge", pa.string()), ("judge_fp", pa.string()),
    ("harmful", pa.bool_()), ("refusal", pa.bool_()), ("raw", pa.string())])


def pair_key(prompt: str, text: str) -> str:
    return sha256_parts("pair", prompt, text)


class VerdictCache:
    """Judges (prompt, rollout) pairs through the verdict store in ``directory``."""

    def __init__(self, directory: str | Path):
        self.store = KeyedStore(directory, VERDICTS.key, VERDICT_SCHEMA)
        self._fps: dict[int, str] = {}
        self.n_judged = 0  # pairs actually sent to a (non-ensemble) judge

    def fingerprint(self, judge: Judge) -> str:
        if id(judge) not in self._fps:
            self._fps[id(judge)] = judge.fingerprint()
        return self._fps[id(judge)]

    def judge(self, judge: Judge, pairs: Sequence[tuple[str, str]]) -> list[Verdict]:
        if isinstance(judge, EnsembleJudge):
            return [judge.combine(v) for v in zip(*self.members(judge, pairs))]
        fp, pks = self.fingerprint(judge), [pair_key(p, r) for p, r in pairs]
        keys = [sha256_parts(fp, pk) for pk in pks]
        have = self.store.get(keys)
        todo = {k: (pairs[i], pks[i]) for i, k in enumerate(keys) if k not in have}
        if todo:
            verdicts = judge.judge([pr for pr, _ in todo.values()])
            rows = [{"verdict_key": k, "pair_key": pk, "judge": judge.name, "judge_fp": fp, "harmful": v.harmful,
                     "refusal": v.refusal, "raw": v.raw} for (k, (_, pk)), v in zip(todo.items(), verdicts)]
            self.store.add(rows)
            have.update({r["verdict_key"]: r for r in rows})
            self.n_judged += len(todo)
        return [Verdict(have[k]["harmful"], have[k]["refusal"], have[k]["raw"], have[k]["judge"]) for k in keys]

    def members(self, judge: EnsembleJudge, pairs: Sequence[tuple[str, str]]) -> list[list[Verdict]]:
        """Per member judge, its verdicts on ``pairs`` (abstentions added to ``judge.abstain_counts``)."""
        per = [self.judge(m, pairs) for m in judge.judges]
        for m, vs in zip(judge.judges, per):
            judge.abstain_counts[m.name] += sum(v.harmful is None for v in vs)
        return per
