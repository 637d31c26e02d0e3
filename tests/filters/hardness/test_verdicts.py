"""The verdict cache: only new pairs reach a judge; ensemble members are cached one by one."""

from filters.hardness.judges.base import Verdict
from filters.hardness.judges.ensemble import EnsembleJudge
from filters.hardness.judges.keyword import KeywordRefusalJudge
from filters.hardness.verdicts import VerdictCache


class CountingJudge:
    name = "counting"

    def __init__(self):
        self.calls = 0

    def fingerprint(self):
        return "counting-v1"

    def judge(self, pairs):
        self.calls += len(pairs)
        return [Verdict(len(r) % 2 == 0, None, "len parity", self.name) for _, r in pairs]


def test_verdict_cache_judges_only_new_pairs_and_caches_ensemble_members(tmp_path):
    cache = VerdictCache(tmp_path)
    j = CountingJudge()
    pairs = [("p", "aa"), ("p", "abc"), ("q", "aa")]
    first = cache.judge(j, pairs)
    assert j.calls == 3 and [v.harmful for v in first] == [True, False, True]
    assert cache.judge(j, pairs + [("p", "zzzz")]) == first + [Verdict(True, None, "len parity", "counting")]
    assert j.calls == 4
    ens = EnsembleJudge([j, KeywordRefusalJudge()])
    out = VerdictCache(tmp_path).judge(ens, [("p", "aa"), ("p", "I cannot help with that.")])
    assert j.calls == 5  # "aa" was cached; only the refusal text is new to the counting judge
    assert [v.harmful for v in out] == [True, None]  # (T,T) -> harmful; (T,F) with J=2 -> tie
