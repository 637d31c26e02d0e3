"""Per-sample decisions: one ledger row per input row and per added sample.

Final status of a canonical input row: the first decide stage (in recipe order) that drops it
wins; otherwise a row without a response (a prompt that only probes the model, e.g. for
``hardness``) is ``probe``; otherwise the first stage that flags it; otherwise ``kept``. Quarantined
rows and later duplicates come from ingest; added samples are ``kept`` with reason ``added``. Only
kept and flagged rows (and added samples) are trainable: they alone go into ``dataset/`` (flagged ones unless
``output: {flagged: drop}``).
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from curator.strings import blank

LEDGER_STATUSES = ("kept", "dropped", "flagged", "quarantined", "probe")
PROBE_REASON = "prompt without response"
LEDGER_SCHEMA = pa.schema([
    ("sample_id", pa.string()), ("status", pa.string()), ("stage", pa.string()),
    ("reason", pa.string()), ("rule", pa.string()), ("input_idx", pa.int32()), ("input_row", pa.int64()),
])
VERDICT_SCHEMA = pa.schema([
    ("sample_id", pa.string()), ("status", pa.string()), ("reason", pa.string()), ("rule", pa.string()),
])


def probe_mask(response: pa.Array | pa.ChunkedArray) -> pa.Array:
    """True for rows with no response text (null, empty or whitespace): prompts to probe the model with."""
    mask = blank(response)
    return mask.combine_chunks() if isinstance(mask, pa.ChunkedArray) else mask


def final_statuses(samples: pa.Table, verdicts: list[tuple[str, pa.Table]], probe: pa.Array) -> pa.Table:
    """Ledger rows for the canonical samples (``sample_id``, ``_input_idx``, ``_input_row``) given each decide
    stage's (stage id, verdicts) and which samples are probes (``probe_mask`` of their responses)."""
    n = samples.num_rows
    ids = samples.column("sample_id")
    status = pa.repeat(pa.scalar("kept"), n)
    stage = reason = rule = pa.nulls(n, pa.string())

    def apply_verdicts(wanted: str) -> None:
        nonlocal status, stage, reason, rule
        for stage_id, table in verdicts:
            table = table.filter(pc.equal(table.column("status"), wanted))
            if not table.num_rows:
                continue
            hit = pc.index_in(ids, value_set=table.column("sample_id"))
            apply = pc.and_(pc.is_valid(hit), pc.equal(status, "kept"))
            status = pc.if_else(apply, wanted, status)
            stage = pc.if_else(apply, stage_id, stage)
            reason = pc.if_else(apply, pc.take(table.column("reason").cast(pa.string()), hit), reason)
            rule = pc.if_else(apply, pc.take(table.column("rule").cast(pa.string()), hit), rule)

    apply_verdicts("dropped")
    probe = pc.and_(probe, pc.equal(status, "kept"))
    status = pc.if_else(probe, "probe", status)
    reason = pc.if_else(probe, PROBE_REASON, reason)
    apply_verdicts("flagged")
    return pa.table({
        "sample_id": ids, "status": status, "stage": stage, "reason": reason, "rule": rule,
        "input_idx": samples.column("_input_idx").cast(pa.int32()),
        "input_row": samples.column("_input_row").cast(pa.int64()),
    }, schema=LEDGER_SCHEMA)


def added_rows(added: pa.Table, stage_ids: pa.Array | list[str]) -> pa.Table:
    n = added.num_rows
    return pa.table({
        "sample_id": added.column("sample_id"), "status": pa.array(["kept"] * n, pa.string()),
        "stage": pa.array(stage_ids, pa.string()), "reason": pa.array(["added"] * n, pa.string()),
        "rule": pa.nulls(n, pa.string()), "input_idx": pa.nulls(n, pa.int32()), "input_row": pa.nulls(n, pa.int64()),
    }, schema=LEDGER_SCHEMA)


def counts(ledger: pa.Table) -> dict[str, int]:
    """Rows per status, plus ``added`` (kept rows that came from an augment stage)."""
    out = dict.fromkeys(LEDGER_STATUSES, 0)
    for item in pc.value_counts(ledger.column("status")).to_pylist():
        out[item["values"]] = item["counts"]
    added = pc.sum(pc.equal(pc.fill_null(ledger.column("reason"), ""), "added")).as_py() or 0
    out["kept"] -= added
    out["added"] = added
    return out


def rows_accounted(c: dict[str, int]) -> int:
    """Input rows the ledger counts ``c`` account for: every status but ``added``."""
    return sum(c[s] for s in LEDGER_STATUSES)
