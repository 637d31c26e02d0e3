"""Benign side of ``rebalance``: candidate prompts, their self-rollouts and refusal judging (notes §1.7).

Candidates come from a user file -- WildJailbreak's TSV layout (``data_type`` = ``adversarial_benign`` /
``vanilla_benign``, text in ``adversarial`` / ``vanilla``; read with a tab delimiter and empty fields
kept as empty strings, never NaN) or any table with a ``prompt`` column -- or from
``filters.framing`` (benign requests wrapped in jailbreak-style templates; ``template_id`` recorded).
Candidates are visited in a seeded order; each gets ``k`` rollouts judged for refusal, and a candidate is
usable when at least one rollout is judged not a refusal (``refusal is False``); its target is one
such rollout drawn by the stream ``curator.hashing.seeded_rng(seed, "benign_target", prompt)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from curator.errors import InputError
from curator.hashing import seeded_rng
from curator.refdata.anchors import overrefusal_prompts, read_user_table
from curator.refdata.demo_pool import load_demo_pool
from filters.framing import benign_requests, framed_prompts
from filters.hardness.rollouts import GenParams, RolloutGenerator
from filters.hardness.verdicts import VerdictCache

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


def read_benign_file(path: str | Path, kind: str = "adversarial_benign") -> list[str]:
    """Distinct non-empty benign prompts of ``kind`` from a user file (WildJailbreak layout or ``prompt``)."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"benign file {path}: no such file")
    table = read_tsv(path) if path.suffix.lower() in (".tsv", ".tab", ".csv") else read_user_table(path)
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
    candidate does not depend on ``n``): {prompt, template_id, base_prompt}."""
    pool = load_demo_pool() if request_source == "demo_pool" else overrefusal_prompts()
    available = len({p for p in pool["prompt"].to_pylist() if isinstance(p, str) and p.strip()})
    requests = benign_requests(available, seed, request_source)
    table = framed_prompts(requests, n, seed, source=framing_source, max_template_chars=max_template_chars)
    return [{"prompt": r["prompt"], "template_id": r["template_id"], "base_prompt": r["base_prompt"]}
            for r in table.to_pylist()]


def usable_benign(candidates: Sequence[dict], n_needed: int, generator: RolloutGenerator, verdicts: VerdictCache,
                  judge, k: int, gen: GenParams, seed: int, chunk: int = 16) -> tuple[list[dict], int]:
    """First ``n_needed`` usable candidates (in the given order) with their target rollout; also the number
    of candidates examined. Rows: candidate fields + response, j, rollout_id, rollout_seed."""
    usable: list[dict] = []
    seen = 0
    while len(usable) < n_needed and seen < len(candidates):
        part = list(candidates[seen:seen + max(chunk, n_needed - len(usable))])
        seen += len(part)
        rollouts = generator.rollouts([c["prompt"] for c in part], k, gen)
        flat = [(c["prompt"], r["text"]) for c, rs in zip(part, rollouts) for r in rs]
        vs = verdicts.judge(judge, flat)
        for i, (c, rs) in enumerate(zip(part, rollouts)):
            ok = [r for r, v in zip(rs, vs[i * k:(i + 1) * k]) if v.refusal is False]
            if ok and len(usable) < n_needed:
                t = ok[int(seeded_rng(seed, "benign_target", c["prompt"]).integers(len(ok)))]
                usable.append({**c, "response": t["text"], "j": t["j"], "rollout_id": t["rollout_id"],
                               "rollout_seed": t["seed"]})
    return usable, seen
