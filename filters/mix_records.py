"""What ``rebalance`` examined and why it left each item out: the ``target_checks`` artifact.

One row per examined item of one mix; ``stage_fp`` is the rebalance stage's fingerprint (the store is shared
by reruns with other settings), ``reason`` null means kept:

- ``candidate``: a sampled answer considered as a training target (``role`` harmful / benign); reason = the
  first check it failed (``filters.target_checks``);
- ``prompt``: a harmful prompt hardness scored, or a benign candidate prompt; reasons in ``PROMPT_REASONS``;
- ``mix``: per role, the rows asked for (``n_asked``) and built (``n_built``); reason = the warning logged
  when fewer were built (with the counts per reason).

``report_sections`` shows them in ``report.html``; ``curator status`` counts the reasons.
"""

from __future__ import annotations

import logging
from collections import Counter

import pyarrow as pa

from curator.hashing import sha256_parts
from curator.keyed_store import KeyedStore
from curator.stage import Artifact, ReportSection

LOG = logging.getLogger("curator.rebalance")
TARGET_CHECKS = Artifact("target_checks", "cache/target_checks", "check_key",
                         "every candidate target, prompt and mix size rebalance examined, with why it was left out")
SCHEMA = pa.schema([
    ("check_key", pa.string()), ("stage_fp", pa.string()), ("level", pa.string()), ("role", pa.string()),
    ("prompt", pa.string()), ("parent_id", pa.string()), ("rollout_id", pa.string()), ("text", pa.string()),
    ("finish_reason", pa.string()), ("n_words", pa.int64()), ("mean_logprob", pa.float64()),
    ("n_asked", pa.int64()), ("n_built", pa.int64()), ("reason", pa.string())])
HARDNESS_0 = "hardness 0: never answered harmfully, nothing to teach"
HARDNESS_1 = "hardness 1: always answered harmfully, no safe answer"
NO_TARGET = "no candidate target passed the checks"
NOT_SELECTED = "beyond the selected budget"
PROMPT_REASONS = (HARDNESS_0, HARDNESS_1, NO_TARGET, NOT_SELECTED)
ADVICE = {  # what to change, by the most common reason a prompt was left out (and "framed": hardness framing was on)
    ("harmful", HARDNESS_1): "the model complies with these prompts: use a safety-aligned `model:` (model: default "
                             "is SmolLM2-135M-Instruct with curator's safety adapter) or raise hardness k",
    ("harmful", HARDNESS_0): "the model refuses these prompts every time, so they teach nothing: use harder prompts "
                             "(hardness framing: builtin or pyrit) or raise hardness k",
    ("harmful", NO_TARGET): "no sampled answer passed the target checks (see the report's 'what each check removed'):"
                            " raise target_k or max_new_tokens, or relax min_mean_logprob / target_judge",
    ("harmful", NOT_SELECTED): "raise hardest_fraction or count",
    ("harmful", HARDNESS_0, "framed"): "the model refuses these prompts every time, even in the hardness stage's "
                                       "jailbreak framings, so they teach nothing: use harder prompts, another "
                                       "framing source (builtin or pyrit) or raise hardness k",
    ("benign", NO_TARGET): "too few benign answers passed the checks: raise benign_oversample or benign_k, give a "
                           "benign file with good answers (benign_answer: reference), or relax min_words",
    ("benign", NOT_SELECTED): "raise benign_oversample",
}


class MixRecords:
    """Collects one mix's records and writes them to the ``target_checks`` store."""

    def __init__(self, store: KeyedStore, stage_fp: str):
        self.store, self.stage_fp, self.rows = store, stage_fp, []
        self.framed = False  # the hardness stage framed the prompts (its advice then says so)

    def add(self, level: str, role: str, **fields) -> None:
        item = (fields.get("prompt") or "", fields.get("rollout_id") or "", fields.get("parent_id") or "")
        self.rows.append({"check_key": sha256_parts(self.stage_fp, level, role, *item), "stage_fp": self.stage_fp,
                          "level": level, "role": role, **fields})

    def reasons(self, role: str, level: str) -> Counter:
        return Counter(r["reason"] for r in self.rows if r["role"] == role and r["level"] == level and r["reason"])

    def mix(self, role: str, asked: int, built: int, what: str) -> str | None:
        """Record the size of one side of the mix; when it is smaller than asked or empty, log and return why."""
        why = None
        if built < asked or built == 0:
            prompts = "; ".join(f"{n} {r}" for r, n in self.reasons(role, "prompt").most_common()) or "none"
            cands = "; ".join(f"{n} {r}" for r, n in self.reasons(role, "candidate").most_common()) or "none"
            top = self.reasons(role, "prompt").most_common(1)
            advice = (ADVICE.get((role, top[0][0], "framed")) if self.framed and top else None) or \
                (ADVICE.get((role, top[0][0])) if top else None)
            why = (f"rebalance built {built} {role} rows, {asked} asked ({what}). Prompts left out: {prompts}. "
                   f"Candidate targets rejected: {cands}." + (f" What to change: {advice}." if advice else ""))
            LOG.warning(why)
        self.add("mix", role, n_asked=asked, n_built=built, reason=why)
        return why

    def write(self) -> None:
        """Store the records collected so far (and start afresh)."""
        self.store.add(self.rows)
        self.rows = []


def report_sections(stage_fp: str) -> tuple[ReportSection, ...]:
    mine = f"FROM target_checks WHERE stage_fp = '{stage_fp}'"
    size = ReportSection("Rebalance: mix size", f"SELECT role, n_asked AS asked, n_built AS built, "
                         f"coalesce(reason, 'as asked') AS note {mine} AND level = 'mix' ORDER BY role DESC",
                         note="a mix smaller than asked says why (also logged as a warning)")
    removed = ReportSection(
        "Rebalance: what each check removed",
        "SELECT role, level, coalesce(reason, CASE level WHEN 'prompt' THEN 'in the mix' ELSE 'accepted' END) "
        f"AS outcome, count(*) AS n {mine} AND level <> 'mix' GROUP BY ALL ORDER BY role DESC, level, n DESC",
        note="candidates: the first check each failed (judge members, complete, long enough, coherent); "
             "prompts: why a prompt is not in the mix")
    examples = ReportSection(
        "Rebalance: rejected candidate targets (examples)",
        f"SELECT role, reason, mean_logprob, left(prompt, 80) AS prompt, text {mine} AND level = 'candidate' "
        "AND reason IS NOT NULL ORDER BY role, reason, check_key LIMIT 20")
    return size, removed, examples
