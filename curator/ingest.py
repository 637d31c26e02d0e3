"""Ingest: read inputs, adapt to the canonical schema, normalise, id, shard, dedupe, quarantine.

Writes per shard ``input/`` (canonical samples in input order), ``quarantine/`` (rows that
could not be read or normalised, with the reason) and ``ledger/ingest/`` (a ledger row for
every quarantined row and every later duplicate). Deterministic: the same inputs give the
same files whatever the number of workers.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from curator.errors import InputError
from curator.io import read_table, sha256_path, write_parquet
from curator.ledger import LEDGER_SCHEMA
from curator.parallel import map_chunks
from curator.rundir import RunDir
from curator.samples import adapt, sample_ids, shard_indices
from curator.stage import Stage

RAW_LIMIT = 65536  # characters of a quarantined row's raw text kept in quarantine/
QUARANTINE_SCHEMA = pa.schema([
    ("sample_id", pa.string()), ("input_idx", pa.int32()), ("input_row", pa.int64()),
    ("reason", pa.string()), ("raw", pa.string()), ("raw_truncated", pa.bool_()),
])


@dataclass(frozen=True)
class InputInfo:
    uri: str
    format: str
    sha256: str
    rows: int


def _raw_id(raw: str) -> str:
    return hashlib.sha256(("quarantine\0" + raw).encode("utf-8", "surrogatepass")).hexdigest()


def _quarantine_rows(idx: int, rows: list[tuple[int, str, str]]) -> pa.Table:
    """Quarantine rows from (input_row, raw text, reason)."""
    return pa.table({
        "sample_id": [_raw_id(raw) for _, raw, _ in rows],
        "input_idx": pa.array([idx] * len(rows), pa.int32()),
        "input_row": pa.array([r for r, _, _ in rows], pa.int64()),
        "reason": [why for _, _, why in rows],
        "raw": [raw[:RAW_LIMIT] for _, raw, _ in rows],
        "raw_truncated": [len(raw) > RAW_LIMIT for _, raw, _ in rows],
    }, schema=QUARANTINE_SCHEMA)


def _selected_rows(n_rows: int, limit: int | None, sample: int | None, seed: int) -> set[int] | None:
    """File rows kept by ``limit`` (the first rows) then ``sample`` (seeded, by row-hash rank)."""
    if limit is None and sample is None:
        return None
    rows = range(min(n_rows, limit) if limit is not None else n_rows)
    if sample is None or sample >= len(rows):
        return set(rows)
    rank = sorted(rows, key=lambda r: hashlib.sha256(f"{seed}:{r}".encode()).digest())
    return set(rank[:sample])


def read_input(idx: int, path, fmt: str, source: str, normalizer: Stage, limit: int | None = None,
               sample: int | None = None, sample_seed: int = 0) -> tuple[pa.Table, pa.Table, InputInfo]:
    """One input -> (canonical good rows with ``sample_id``, quarantine rows, input info).

    ``limit`` keeps the file's first rows, ``sample`` then a seeded subset (bad rows count as rows)."""
    table, bad = read_table(path)
    file_rows = table.column("_file_row") if "_file_row" in table.column_names else pa.array(
        range(table.num_rows), pa.int64())
    total = max([table.num_rows + len(bad), *(b.row + 1 for b in bad),
                 (pc.max(file_rows).as_py() or 0) + 1 if len(file_rows) else 0])
    selected = _selected_rows(total, limit, sample, sample_seed)
    if selected is not None:
        keep = pc.is_in(file_rows, value_set=pa.array(sorted(selected), pa.int64()))
        table, file_rows = table.filter(keep), file_rows.filter(keep)
        bad = [b for b in bad if b.row in selected]
    n_rows = table.num_rows + len(bad)
    if "_file_row" in table.column_names:
        table = table.drop_columns(["_file_row"])
    quarantined = [(b.row, b.raw, b.reason) for b in bad]
    if table.num_rows:
        if not table.column_names:
            raise InputError(f"{path}: no columns")
        canon = adapt(table, fmt, source, str(path))

        def normalize_and_id(chunk: pa.Table) -> pa.Table:
            chunk = normalizer.process_batch(chunk)
            return pa.table({"sample_id": sample_ids(chunk), **{n: chunk.column(n) for n in chunk.column_names}})

        canon = map_chunks(normalize_and_id, canon)
        canon = canon.append_column("_input_idx", pa.array([idx] * canon.num_rows, pa.int32()))
        canon = canon.append_column("_input_row", file_rows.cast(pa.int64()))
        bad_mask = pc.is_valid(canon.column("_bad_reason"))
        if pc.any(bad_mask).as_py():
            bad_rows = canon.filter(bad_mask)
            originals = table.filter(bad_mask).to_pylist()
            quarantined += [
                (r, json.dumps(o, ensure_ascii=False, default=str), why)
                for r, o, why in zip(bad_rows.column("_input_row").to_pylist(), originals,
                                     bad_rows.column("_bad_reason").to_pylist())
            ]
            canon = canon.filter(pc.invert(bad_mask))
        canon = canon.drop_columns(["_bad_reason"])
    else:
        canon = None
    quarantined.sort()
    if quarantined and getattr(normalizer.params, "on_bad_row", "quarantine") == "fail":
        row, _, why = quarantined[0]
        raise InputError(f"{path}: row {row} (0-based): {why} ({len(quarantined)} bad row(s); normalize.on_bad_row is 'fail': "
                         "fix the data or set it to 'quarantine' to set such rows aside and continue)")
    info = InputInfo(uri=str(path), format=fmt, sha256=sha256_path(path), rows=n_rows)
    return canon, _quarantine_rows(idx, quarantined), info


def _concat(tables: list[pa.Table], where: str) -> pa.Table:
    try:
        return pa.concat_tables(tables, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise InputError(f"{where}: inputs have columns of incompatible types ({exc}); "
                         "rename or cast the conflicting pass-through column") from None


def ingest(inputs: list[tuple], n_shards: int, rundir: RunDir, normalizer: Stage) -> dict:
    """Run the ingest; ``inputs`` are (path, format, source, limit, sample, sample_seed). Returns per-shard and per-input counts."""
    goods, quars, infos = [], [], []
    for idx, (path, fmt, source, limit, sample, seed) in enumerate(inputs):
        good, quar, info = read_input(idx, path, fmt, source, normalizer, limit, sample, seed)
        if good is not None:
            goods.append(good)
        quars.append(quar)
        infos.append(info)
    good = _concat(goods, "inputs") if goods else None
    quar = pa.concat_tables(quars)
    dedupe = getattr(normalizer.params, "dedupe", True)
    stats = {}
    good_shards = _split(good, n_shards) if good is not None else {}
    quar_shards = _split(quar, n_shards)
    for shard in range(n_shards):
        g = good_shards.get(shard)
        q = quar_shards.get(shard, quar.slice(0, 0))
        dup_mask = _later_duplicates(g) if (g is not None and dedupe) else None
        ledger_parts = [_ledger(q, "quarantined", q.column("reason"))]
        n_dup = 0
        if dup_mask is not None and pc.any(dup_mask).as_py():
            dups = g.filter(dup_mask)
            n_dup = dups.num_rows
            ledger_parts.append(_ledger(dups, "dropped", pa.array(["duplicate"] * n_dup)))
            g = g.filter(pc.invert(dup_mask))
        if g is None:
            g = _empty_like(good) if good is not None else None
        if g is not None:
            write_parquet(g, rundir.input_shard(shard))
        write_parquet(q, rundir.quarantine(shard))
        write_parquet(pa.concat_tables(ledger_parts), rundir.ingest_ledger(shard))
        stats[shard] = {"rows_in": (g.num_rows if g is not None else 0) + n_dup + q.num_rows,
                        "canonical": g.num_rows if g is not None else 0, "duplicates": n_dup,
                        "quarantined": q.num_rows}
    return {"shards": stats, "inputs": [info.__dict__ for info in infos],
            "schema": (good.schema if good is not None else None)}


def _split(table: pa.Table, n_shards: int) -> dict[int, pa.Table]:
    """Rows per shard, each in input order (input_idx, input_row)."""
    if table.num_rows == 0:
        return {}
    pos = ("_input_idx", "_input_row") if "_input_idx" in table.column_names else ("input_idx", "input_row")
    shard = shard_indices(table.column("sample_id"), n_shards)
    table = table.append_column("_shard", shard)
    table = table.take(pc.sort_indices(table, [("_shard", "ascending"), (pos[0], "ascending"), (pos[1], "ascending")]))
    out, start = {}, 0
    counts = dict(sorted((v["values"], v["counts"]) for v in pc.value_counts(table.column("_shard")).to_pylist()))
    for s, c in counts.items():
        out[s] = table.slice(start, c).drop_columns(["_shard"])
        start += c
    return out


def _later_duplicates(table: pa.Table) -> pa.Array:
    seen: set[str] = set()
    mask = []
    for sid in table.column("sample_id").to_pylist():
        mask.append(sid in seen)
        seen.add(sid)
    return pa.array(mask, pa.bool_())


def _ledger(table: pa.Table, status: str, reasons: pa.Array) -> pa.Table:
    n = table.num_rows
    prefix = "_" if "_input_idx" in table.column_names else ""
    return pa.table({
        "sample_id": table.column("sample_id"), "status": pa.array([status] * n, pa.string()),
        "stage": pa.array(["normalize"] * n, pa.string()), "reason": reasons.cast(pa.string()),
        "rule": pa.nulls(n, pa.string()), "input_idx": table.column(f"{prefix}input_idx").cast(pa.int32()),
        "input_row": table.column(f"{prefix}input_row").cast(pa.int64()),
    }, schema=LEDGER_SCHEMA)


def _empty_like(table: pa.Table) -> pa.Table:
    return table.slice(0, 0)
