"""Ingest (phase 0): read inputs, adapt to the canonical schema, normalise, id, shard, dedupe, quarantine.

Writes per shard ``input/`` (canonical samples in input order), ``quarantine/`` (rows that
could not be read or normalised, with the reason) and ``ledger/ingest/`` (a ledger row for
every quarantined row and every later duplicate). Runs as units on the executor: one per
input (map), then one per shard (reduce), each with a done marker. Deterministic: the same
inputs give the same files whatever the number of workers. The plan's ``ingest`` stage
normalises the rows; its ``IngestParams`` say what happens to bad rows and duplicates.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.ipc as ipc

from curator.errors import InputError
from curator.executors import Executor
from curator.faults import fault_point
from curator.io import atomic_path, read_table, write_parquet
from curator.ledger import LEDGER_SCHEMA
from curator.parallel import map_chunks
from curator.plan import InputFile, Plan, Unit
from curator.recipe import InputSpec
from curator.rundir import RunDir
from curator.samples import adapt, later_repeats, sample_ids, shard_indices
from curator.stage import IngestParams, Stage

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


@dataclass(frozen=True)
class Ingested:
    """What the ingest recorded in its ``ingest`` done marker."""

    inputs: list[dict]  # ``InputInfo`` per input, in recipe order
    shards: dict[str, dict]  # str(shard) -> rows_in, canonical, duplicates, quarantined
    schema: pa.Schema | None  # of the canonical samples (None: no input had a good row)

    def rows_in(self, shard: int) -> int:
        return self.shards[str(shard)]["rows_in"]


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


def read_input(idx: int, file: InputFile, spec: InputSpec, normalizer: Stage, params: IngestParams
               ) -> tuple[pa.Table | None, pa.Table, InputInfo]:
    """Input ``idx`` -> (canonical good rows with ``sample_id``, quarantine rows, input info).

    ``spec.limit`` keeps the file's first rows, ``spec.sample`` then a seeded subset (bad rows count
    as rows); ``normalizer`` is the set-up ingest stage and ``params`` its params."""
    path = file.path
    table, bad = read_table(path)
    file_rows = table.column("_file_row") if "_file_row" in table.column_names else pa.array(
        range(table.num_rows), pa.int64())
    total = max([table.num_rows + len(bad), *(b.row + 1 for b in bad),
                 (pc.max(file_rows).as_py() or 0) + 1 if len(file_rows) else 0])
    selected = _selected_rows(total, spec.limit, spec.sample, spec.sample_seed)
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
        canon = adapt(table, spec.format, spec.source or path.stem, str(path))

        def normalize_and_id(chunk: pa.Table) -> pa.Table:
            chunk = normalizer.process_batch(chunk)
            return pa.table({"sample_id": sample_ids(chunk), **{n: chunk.column(n) for n in chunk.column_names}})

        canon = map_chunks(normalize_and_id, canon)
        canon = canon.append_column("_input_idx", pa.repeat(pa.scalar(idx, pa.int32()), canon.num_rows))
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
    if quarantined and params.on_bad_row == "fail":
        row, _, why = quarantined[0]
        raise InputError(f"{path}: row {row} (0-based): {why} ({len(quarantined)} bad row(s); {normalizer.name}.on_bad_row "
                         "is 'fail': fix the data or set it to 'quarantine' to set such rows aside and continue)")
    info = InputInfo(uri=str(path), format=spec.format, sha256=file.sha256, rows=n_rows)
    return canon, _quarantine_rows(idx, quarantined), info


def _concat(tables: list[pa.Table], where: str) -> pa.Table:
    try:
        return pa.concat_tables(tables, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise InputError(f"{where}: inputs have columns of incompatible types ({exc}); "
                         "rename or cast the conflicting pass-through column") from None


def run_ingest(plan: Plan, exe: Executor) -> Ingested:
    """Phase 0 on ``exe``: an ``input`` unit per input file reads, normalises, ids and shards it into
    Arrow files in the ingest cache (map); an ``ingest`` unit per shard takes that shard's rows from
    every input (in input order), drops later duplicates and writes the shard's files (reduce). The
    whole is recorded by the ``ingest`` done marker."""
    rundir, fp = plan.rundir, plan.ingest.fingerprint
    rundir.claim_outputs("ingest", fp, [rundir.input_shard(0).parent, rundir.ingest_ledger(0).parent])
    if not rundir.is_done(fp, "ingest"):
        t0 = time.time()
        infos = exe.map(plan, plan.input_units(), "ingest: inputs")
        parts = [_part(rundir, fp, idx, "good") for idx in range(len(plan.files))]
        schema = _schema([ipc.open_file(pa.memory_map(str(p))).schema for p in parts if p.exists()])
        shards = exe.map(plan, plan.ingest_units(), "ingest: shards")
        rundir.mark_done(fp, "ingest", {
            "shards": dict(enumerate(shards)), "inputs": infos,
            "schema": schema.serialize().to_pybytes().hex() if schema is not None else None,
            "seconds": round(time.time() - t0, 3)})
        fault_point("unit_done")
    remove_parts(rundir, fp)
    info = rundir.read_done(fp, "ingest")
    schema = pa.ipc.read_schema(pa.py_buffer(bytes.fromhex(info["schema"]))) if info["schema"] else None
    return Ingested(info["inputs"], info["shards"], schema)


def input_unit(plan: Plan, unit: Unit, normalizer: Stage) -> dict:
    """Map unit: input ``unit.index`` -> ``good`` and ``quarantine`` Arrow files with a ``_shard`` column."""
    rundir, fp, idx = plan.rundir, plan.ingest.fingerprint, unit.index
    if not rundir.is_done(fp, unit.name):
        good, quar, info = read_input(idx, plan.files[idx], plan.recipe.inputs[idx], normalizer, plan.ingest.params)
        if good is not None:
            _write_arrow(good.append_column("_shard", shard_indices(good.column("sample_id"), plan.recipe.shards)),
                         _part(rundir, fp, idx, "good"))
        _write_arrow(quar.append_column("_shard", shard_indices(quar.column("sample_id"), plan.recipe.shards)),
                     _part(rundir, fp, idx, "quarantine"))
        rundir.mark_done(fp, unit.name, dataclasses.asdict(info))
        fault_point("unit_done")
    return rundir.read_done(fp, unit.name)


def shard_unit(plan: Plan, unit: Unit) -> dict:
    """Reduce unit: shard ``unit.index``'s ``input/``, ``quarantine/`` and ingest ledger files."""
    rundir, fp, shard = plan.rundir, plan.ingest.fingerprint, unit.index
    params: IngestParams = plan.ingest.params
    if rundir.is_done(fp, unit.name):
        return rundir.read_done(fp, unit.name)
    n_inputs = len(plan.files)
    goods = [_shard_rows(p, shard) for i in range(n_inputs) if (p := _part(rundir, fp, i, "good")).exists()]
    g = _concat(goods, "inputs") if goods else None
    q = pa.concat_tables([_shard_rows(_part(rundir, fp, i, "quarantine"), shard) for i in range(n_inputs)])
    stage = plan.ingest.cls.name
    ledger_parts = [_ledger(q, "quarantined", q.column("reason"), stage)]
    n_dup = 0
    if g is not None and params.dedupe:
        dup_mask = _later_duplicates(g)
        if pc.any(dup_mask).as_py():
            dups = g.filter(dup_mask)
            n_dup = dups.num_rows
            ledger_parts.append(_ledger(dups, "dropped", pa.array(["duplicate"] * n_dup), stage))
            g = g.filter(pc.invert(dup_mask))
    if g is not None:
        write_parquet(g, rundir.input_shard(shard))
    write_parquet(q, rundir.quarantine(shard))
    write_parquet(pa.concat_tables(ledger_parts), rundir.ingest_ledger(shard))
    canonical = g.num_rows if g is not None else 0
    rundir.mark_done(fp, unit.name, {"rows_in": canonical + n_dup + q.num_rows, "canonical": canonical,
                                     "duplicates": n_dup, "quarantined": q.num_rows})
    fault_point("unit_done")
    return rundir.read_done(fp, unit.name)


def remove_parts(rundir: RunDir, fp: str) -> None:
    """Drop the map outputs once the whole ingest is recorded as done."""
    shutil.rmtree(rundir.cache(fp) / "ingest", ignore_errors=True)


def _part(rundir: RunDir, fp: str, idx: int, kind: str) -> Path:
    return rundir.cache(fp) / "ingest" / f"input-{idx:05d}.{kind}.arrow"


def _write_arrow(table: pa.Table, dest: Path) -> None:
    with atomic_path(dest) as tmp, ipc.new_file(str(tmp), table.schema) as writer:
        writer.write_table(table)


def _shard_rows(path: Path, shard: int) -> pa.Table:
    """One shard's rows of a map output, in file order (memory-mapped: only they are copied)."""
    table = ipc.open_file(pa.memory_map(str(path))).read_all()
    return table.filter(pc.equal(table.column("_shard"), shard)).drop_columns(["_shard"])


def _schema(schemas: list[pa.Schema]) -> pa.Schema | None:
    """The canonical table's schema over all inputs (pass-through columns promoted to one type)."""
    if not schemas:
        return None
    try:
        schema = pa.unify_schemas(schemas, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise InputError(f"inputs: inputs have columns of incompatible types ({exc}); "
                         "rename or cast the conflicting pass-through column") from None
    return schema.remove(schema.get_field_index("_shard"))


def _later_duplicates(table: pa.Table) -> pa.Array:
    return later_repeats(table.column("sample_id").combine_chunks())


def _ledger(table: pa.Table, status: str, reasons: pa.Array, stage: str) -> pa.Table:
    n = table.num_rows
    prefix = "_" if "_input_idx" in table.column_names else ""
    return pa.table({
        "sample_id": table.column("sample_id"), "status": pa.array([status] * n, pa.string()),
        "stage": pa.array([stage] * n, pa.string()), "reason": reasons.cast(pa.string()),
        "rule": pa.nulls(n, pa.string()), "input_idx": table.column(f"{prefix}input_idx").cast(pa.int32()),
        "input_row": table.column(f"{prefix}input_row").cast(pa.int64()),
    }, schema=LEDGER_SCHEMA)

