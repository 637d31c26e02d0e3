"""Training targets for ``rebalance``: sample candidates, check them, pick one per prompt, record all.

``TargetMiner.mine(role, prompts)`` samples ``k`` candidate answers per prompt (``filters.hardness.rollouts``:
stored in the ``rollouts`` artifact, seeded per (prompt, j)), has every member of the role's judge label
them (cached in ``verdicts``), runs ``filters.target_checks`` (the coherence check last, one batched forward
pass over the survivors), and picks the target among the accepted candidates with
``filters.mix_order.pick_target`` (stream sha256(seed, "target", group id)). The pick is persisted in the
``targets`` artifact under H(seed, group id, checks fingerprint), so every variant pairs a prompt with the
same text. Each examined candidate yields a record (``filters.mix_records``) with its reason (None = accepted).
``check`` runs the same checks on given answers (e.g. a data set's reference answers).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence

import pyarrow as pa

from curator.hashing import sha256_parts
from curator.keyed_store import KeyedStore
from curator.stage import Artifact
from filters.hardness.judges.base import Judge
from filters.hardness.judges.ensemble import EnsembleJudge
from filters.hardness.rollouts import GenParams, RolloutGenerator, rollout_id
from filters.hardness.verdicts import VerdictCache
from filters.mix_order import pick_target
from filters.target_checks import Candidate, TargetChecks, n_words

TARGETS = Artifact("targets", "cache/targets", "target_key",
                   "the training target chosen per prompt (group_id, j) among its accepted candidates")
TARGET_SCHEMA = pa.schema([("target_key", pa.string()), ("group_id", pa.string()), ("j", pa.int64()),
                           ("rollout_id", pa.string()), ("seed", pa.int64())])


class TargetMiner:
    """Targets for one role (``harmful`` or ``benign``) with one judge, checks and sampling setup."""

    def __init__(self, role: str, generator: RolloutGenerator, verdicts: VerdictCache, judge: Judge,
                 checks: TargetChecks, gen: GenParams, k: int, targets: KeyedStore):
        self.role, self.generator, self.verdicts, self.judge = role, generator, verdicts, judge
        self.checks, self.gen, self.k, self.targets = checks, gen, k, targets
        members = judge.judges if isinstance(judge, EnsembleJudge) else [judge]
        self.members = members
        self.fingerprint = sha256_parts("targets-v2", role, json.dumps(dataclasses.asdict(checks), sort_keys=True),
                                        *(m.fingerprint() for m in members))

    def mine(self, prompts: Sequence[str]) -> tuple[list[dict | None], list[dict]]:
        """Per prompt its target rollout row (None when no candidate passed), and a record per candidate."""
        if not prompts:
            return [], []
        rollouts = self.generator.rollouts(list(prompts), self.k, self.gen)
        accepted, records = self.check([(p, r) for p, rs in zip(prompts, rollouts) for r in rs])
        ok = {rs[0]["group_id"]: [r["j"] for r, a in zip(rs, accepted[i * self.k:(i + 1) * self.k]) if a]
              for i, rs in enumerate(rollouts)}
        picks = self._picks({g: js for g, js in ok.items() if js})
        return [rs[picks[rs[0]["group_id"]]] if rs[0]["group_id"] in picks else None for rs in rollouts], records

    def check(self, pairs: Sequence[tuple[str, dict]]) -> tuple[list[bool], list[dict]]:
        """For (prompt, answer) pairs (an answer: a row with ``text``, ``finish_reason``, ``rollout_id``): whether
        each passes the checks, and a record of each."""
        votes = list(zip(*(self.verdicts.judge(m, [(p, r["text"]) for p, r in pairs]) for m in self.members)))
        cands = [Candidate(p, r["text"], r["finish_reason"], v) for (p, r), v in zip(pairs, votes)]
        reasons = [self.checks.before_coherence(self.role, c) for c in cands]
        lp_of = iter(self._logprobs([c for c, why in zip(cands, reasons) if why is None]))
        records, accepted = [], []
        for c, (_, r), why in zip(cands, pairs, reasons):
            lp = next(lp_of) if why is None else None
            why = why or self.checks.coherence(lp)
            records.append({"role": self.role, "prompt": c.prompt, "rollout_id": r["rollout_id"], "text": c.text,
                            "finish_reason": c.finish_reason, "n_words": n_words(c.text), "mean_logprob": lp,
                            "reason": why})
            accepted.append(why is None)
        return accepted, records

    def _picks(self, accepted: dict[str, list[int]]) -> dict[str, int]:
        """Per group its persisted target index (drawn among its ``accepted`` indices the first time)."""
        keys = {g: sha256_parts("target-v2", str(self.gen.seed), g, self.fingerprint) for g in accepted}
        stored = self.targets.get(list(keys.values()))
        new = [{"target_key": key, "group_id": g, "j": j, "rollout_id": rollout_id(g, j), "seed": self.gen.seed}
               for g, key in keys.items() if key not in stored for j in [pick_target(self.gen.seed, g, accepted[g])]]
        self.targets.add(new)
        stored.update({r["target_key"]: r for r in new})
        return {g: stored[key]["j"] for g, key in keys.items()}

    def _logprobs(self, cands: list[Candidate]) -> list[float | None]:
        if self.checks.min_mean_logprob is None or not cands:
            return [None] * len(cands)
        from curator.ml.models import load_model  # start-up time: torch
        from filters.coherence import mean_logprobs  # start-up time: torch

        m = load_model(self.generator.spec, device=self.generator.device, dtype=self.generator.dtype)
        return mean_logprobs(m.model, m.tokenizer, [(c.prompt, c.text) for c in cands])
