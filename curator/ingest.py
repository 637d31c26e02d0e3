"""Ingest (phase 0): read inputs, adapt to the canonical schema, normalise, id, shard, dedupe, quarantine.

Writes per shard ``input/`` (canonical samples in input order), ``quarantine/`` (rows that
could not be read or normalised, with the reason) and ``cache/ingest-ledger/`` (a ledger row for
every quarantined row and every later duplicate). Runs as units on the executor: one per
input, or per part of a large input (``readers.input_parts``; map), then one per shard (reduce, which
numbers a part's rows from the rows of the parts before it), each with a done marker. Both stream: an input unit
holds a few blocks of its input (``curator.canonical``), a shard unit a bounded buffer of its
output files plus the shard's ids. A later exact copy (same ``sample_id``) is dropped, or with ``dedupe: false``
kept under an id of its own (``samples.own_ids``). Deterministic: the same inputs give the same files whatever the
number of workers (an input's parts depend on its size only). The plan's ``ingest`` stage normalises the rows; its ``IngestParams`` say what
happens to bad rows and duplicates.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.ipc as ipc

from curator.canonical import QUARANTINE_SCHEMA, Canonical, InputCanonicaliser
from curator.errors import InputError, storage_error
from curator.executors import Executor
from curator.faults import fault_point
from curator.features import KEY, merged, with_carried
from curator.io import ParquetSink, atomic_path, file_record
from curator.ledger import LEDGER_SCHEMA, probe_mask
from curator.parallel import map_ordered
from curator.plan import InputPart, Plan, Unit
from curator.readers import PartUnreadable, Restart, detect_kind, first_block
from curator.rundir import RunDir
from curator.samples import CANONICAL_SCHEMA, later_repeats, own_ids, resolve_format, shard_indices
from curator.stage import IngestParams, Stage

log = logging.getLogger("curator")
NO_ROWS_SCHEMA = CANONICAL_SCHEMA.append(pa.field("_input_idx", pa.int32())).append(
    pa.field("_input_row", pa.int64()))  # of the input shards when no input has a good row


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
    probes: dict[str, int] | None = None  # str(shard) -> samples without a response (None: not recorded)

    def rows_in(self, shard: int) -> int:
        return self.shards[str(shard)]["rows_in"]


def run_ingest(plan: Plan, exe: Executor) -> Ingested:
    """Phase 0 on ``exe``: an ``input`` unit per input file reads, normalises, ids and shards it into
    Arrow files in the ingest cache (map); an ``ingest`` unit per shard takes that shard's rows from
    every input (in input order), drops later duplicates and writes the shard's files (reduce). The
    whole is recorded by the ``ingest`` done marker, trusted only while every shard unit's files are
    as their markers recorded them."""
    rundir, fp = plan.rundir, plan.ingest.fingerprint
    rundir.claim_outputs("ingest", fp, [rundir.input_shard(0).parent, rundir.ingest_ledger(0).parent])
    units = plan.ingest_units()
    if rundir.is_done(fp, "ingest") and not all([rundir.verify_done(fp, u.name, "ingest") for u in units]):
        reads = plan.input_units()  # the map outputs are gone: read again
        for name in ["ingest", *{n for u in reads for n in (u.name, u.whole().name)}]:
            rundir.marker(fp, name).unlink(missing_ok=True)
    if not rundir.is_done(fp, "ingest"):
        t0 = time.time()
        read_inputs(plan, exe)
        sources = input_sources(plan)
        schema = part_schema(rundir, fp, sources, report=True)
        exe.map(plan, [u for u in units if not rundir.verify_done(fp, u.name, "ingest")], "ingest: shards")
        done = [rundir.read_done(fp, u.name) for u in units]
        shards = {u.index: d["counts"] for u, d in zip(units, done)}
        rundir.mark_done(fp, "ingest", {
            "shards": shards, "probes": {u.index: d.get("probes") for u, d in zip(units, done)},
            "inputs": [_input_info(rundir, fp, names) for names in sources],
            "schema": schema.serialize().to_pybytes().hex(),
            "seconds": round(time.time() - t0, 3)})
        fault_point("unit_done")
    remove_parts(rundir, fp)
    info = rundir.read_done(fp, "ingest")
    schema = pa.ipc.read_schema(pa.py_buffer(bytes.fromhex(info["schema"]))) if info["schema"] else None
    return Ingested(info["inputs"], info["shards"], schema, info.get("probes"))


def read_inputs(plan: Plan, exe: Executor) -> None:
    """The map: every input unit not done yet. The parts of a split file are read with what its first block
    fixes (``split_part``): a JSONL file's column types, and the layout ``auto`` resolves to. If a JSONL range
    holds a row that does not fit those types (where the streamed reader starts over), or the first block does
    not parse, the file is read whole: the same rows, types and row numbers as if it had never been split."""
    rundir, fp = plan.rundir, plan.ingest.fingerprint
    files, todo, split = _input_units_by_file(plan), [], []
    for units in files:
        if units[0].part and rundir.verify_done(fp, units[0].whole().name, "ingest"):
            continue
        left = [u for u in units if not rundir.verify_done(fp, u.name, "ingest")]
        (split if left and left[0].part else todo).append(left)
    todo = [u for left in todo for u in left]
    parts = map_ordered(lambda left: split_part(plan, left[0]), split)  # first blocks read on threads
    for left, part in zip(split, parts):
        todo += [replace(u, part=replace(part, index=u.part.index)) for u in left] if part else [left[0].whole()]
    exe.map(plan, todo, "ingest: inputs")
    unreadable = [units for units in files if units[0].part and not rundir.is_done(fp, units[0].whole().name)
                  and any(rundir.read_done(fp, u.name).get("unreadable") for u in units)]
    for u in (u for units in unreadable for u in units):
        rundir.marker(fp, u.name).unlink(missing_ok=True)
        for kind in ("good", "quarantine"):
            _part(rundir, fp, u.name, kind).unlink(missing_ok=True)
    exe.map(plan, [units[0].whole() for units in unreadable], "ingest: inputs read whole")


def split_part(plan: Plan, unit: Unit) -> InputPart | None:
    """``unit.part`` with what its file's first block fixes for every part: a JSONL file's column types, and
    the layout ``auto`` resolves to (``samples.resolve_format``); None if the file must be read whole."""
    path, spec = plan.files[unit.index].path, plan.recipe.inputs[unit.index]
    first = first_block(path)
    if first is None:
        return None
    schema = first.schema.serialize().to_pybytes() if detect_kind(path) == "jsonl" else b""
    fmt = resolve_format(first, spec.format, str(path)) if first.num_rows and first.column_names else ""
    return replace(unit.part, schema=schema, format=fmt)


def _input_units_by_file(plan: Plan) -> list[list[Unit]]:
    """``plan.input_units()`` grouped by input file, in recipe order."""
    by_file: dict[int, list[Unit]] = {}
    for u in plan.input_units():
        by_file.setdefault(u.index, []).append(u)
    return [by_file[i] for i in range(len(plan.files))]


def input_sources(plan: Plan) -> list[list[str]]:
    """Per input file, in recipe order: the names of the input units whose outputs hold its rows, in file order
    (the whole-file unit, or its parts)."""
    rundir, fp = plan.rundir, plan.ingest.fingerprint
    return [[units[0].whole().name] if units[0].part is None or rundir.is_done(fp, units[0].whole().name)
            else [u.name for u in units] for units in _input_units_by_file(plan)]


def _input_info(rundir: RunDir, fp: str, names: list[str]) -> dict:
    """One file's ``InputInfo`` from its units' markers (its rows: the sum over its parts)."""
    done = [rundir.read_done(fp, n) for n in names]
    return {**{f.name: done[0][f.name] for f in dataclasses.fields(InputInfo)}, "rows": sum(d["rows"] for d in done)}


class _Parts:
    """An input unit's two Arrow IPC files (``good``, ``quarantine``), each a sequence of one-shard
    batches; ``index[kind]`` lists (shard, rows) per batch, so a shard unit reads only its batches."""

    def __init__(self, rundir: RunDir, fp: str, name: str, shards: int):
        self.paths = {kind: _part(rundir, fp, name, kind) for kind in ("good", "quarantine")}
        self.shards = shards
        self.index: dict[str, list[list[int]]] = {"good": [], "quarantine": []}
        self._open: dict[str, tuple] = {}

    def add(self, kind: str, table: pa.Table) -> None:
        """Append ``table``'s rows to the ``kind`` file; a write that fails (disk full) is a ``StorageError`` naming it."""
        try:
            self._add(kind, table)
        except OSError as exc:
            raise storage_error(exc, self.paths[kind]) from exc

    def _add(self, kind: str, table: pa.Table) -> None:
        if kind not in self._open:
            atomic = atomic_path(self.paths[kind])
            self._open[kind] = (atomic, ipc.new_file(str(atomic.__enter__()), table.schema))
        if not table.num_rows:
            return
        shard = shard_indices(table.column("sample_id"), self.shards).to_numpy()
        order = np.argsort(shard, kind="stable")
        (batch,) = table.take(order).combine_chunks().to_batches()
        shard = shard[order]
        bounds = np.flatnonzero(np.diff(shard)) + 1
        for start, end in zip([0, *bounds], [*bounds, len(shard)]):
            self._open[kind][1].write_batch(batch.slice(start, end - start))
            self.index[kind].append([int(shard[start]), int(end - start)])

    def close(self, exc: BaseException | None = None) -> dict[str, dict]:
        """Publish the files (or, on ``exc``, remove them); their ``file_record``s by run-relative path. A file
        that cannot be finished (disk full) is a ``StorageError`` naming it, raised once every file is removed."""
        failed = exc
        for kind, (atomic, writer) in self._open.items():
            try:
                writer.close()
            except OSError as err:
                failed = failed or storage_error(err, self.paths[kind])
            atomic.__exit__(type(failed) if failed else None, failed, None)
        if failed is not None and exc is None:
            raise failed
        return {k: file_record(p) for k, p in self.paths.items() if k in self._open and exc is None}


def input_unit(plan: Plan, unit: Unit, normalizer: Stage) -> dict:
    """Map unit: input ``unit.index`` (or its part ``unit.part``) -> ``good`` and ``quarantine`` Arrow files of
    one-shard batches. A JSONL byte range that cannot be streamed alone writes nothing and records
    ``unreadable`` (``read_inputs`` then reads the file whole)."""
    rundir, fp, idx = plan.rundir, plan.ingest.fingerprint, unit.index
    if rundir.is_done(fp, unit.name):
        return rundir.read_done(fp, unit.name)
    file, spec, params = plan.files[idx], plan.recipe.inputs[idx], plan.ingest.params
    source = InputCanonicaliser(idx, file.path, spec, normalizer, unit.part)
    parts, rows, first_bad, n_bad = _Parts(rundir, fp, unit.name, plan.recipe.shards), 0, None, 0
    info = dataclasses.asdict(InputInfo(uri=str(file.path), format=spec.format, sha256=file.sha256, rows=0))
    try:
        for block in source.blocks():
            if isinstance(block, Restart):
                parts.close(RuntimeError("restart"))
                parts, rows, first_bad, n_bad = _Parts(rundir, fp, unit.name, plan.recipe.shards), 0, None, 0
                continue
            rows, first_bad, n_bad = _tally(block, rows, first_bad, n_bad)
            if block.good is not None:
                parts.add("good", block.good)
            parts.add("quarantine", block.quarantine)
        if n_bad and params.on_bad_row == "fail":
            row, _, why = first_bad
            raise InputError(f"{file.path}: row {row} (0-based): {why} ({n_bad} bad row(s); {normalizer.name}.on_bad_row "
                             "is 'fail': fix the data or set it to 'quarantine' to set such rows aside and continue)")
    except PartUnreadable as exc:
        parts.close(exc)
        rundir.mark_done(fp, unit.name, {**info, "unreadable": str(exc)[:500], "outputs": {}})
        return rundir.read_done(fp, unit.name)
    except BaseException as exc:
        parts.close(exc)
        raise
    outputs = {_rel(rundir, parts.paths[k]): rec for k, rec in parts.close().items()}
    rundir.mark_done(fp, unit.name, {**info, "rows": rows, "parts": parts.index, "outputs": outputs})
    fault_point("unit_done")
    return rundir.read_done(fp, unit.name)


def _tally(block: Canonical, rows: int, first_bad: tuple | None, n_bad: int) -> tuple[int, tuple | None, int]:
    """Rows so far, the first bad row (row, raw, reason) and the number of bad rows, after ``block``."""
    q = block.quarantine
    good = block.good.num_rows if block.good is not None else 0
    if q.num_rows and first_bad is None:
        first_bad = (q.column("input_row")[0].as_py(), None, q.column("reason")[0].as_py())
    return rows + good + q.num_rows, first_bad, n_bad + q.num_rows


def shard_unit(plan: Plan, unit: Unit) -> dict:
    """Reduce unit: shard ``unit.index``'s ``input/``, ``quarantine/`` and ingest ledger files."""
    rundir, fp, shard = plan.rundir, plan.ingest.fingerprint, unit.index
    params: IngestParams = plan.ingest.params
    if rundir.is_done(fp, unit.name):
        return rundir.read_done(fp, unit.name)
    stage, sources = plan.ingest.cls.name, input_sources(plan)
    names = [name for names in sources for name in names]
    done = {name: rundir.read_done(fp, name) for name in names}
    index = {name: done[name]["parts"] for name in names}
    offset = {name: sum(done[n]["rows"] for n in names[:k]) for names in sources for k, name in enumerate(names)}
    schema = part_schema(rundir, fp, sources)
    outputs, n_quarantined, n_dup, canonical, n_probe = {}, 0, 0, 0, 0
    with ParquetSink(rundir.quarantine(shard), QUARANTINE_SCHEMA) as quarantine, \
            ParquetSink(rundir.ingest_ledger(shard), LEDGER_SCHEMA) as ledger:
        for name in names:
            for q in _shard_batches(rundir, fp, name, "quarantine", index[name], shard, offset[name]):
                quarantine.write(q)
                ledger.write(_ledger(q, "quarantined", q.column("reason"), stage))
                n_quarantined += q.num_rows
        goods = [name for name in names if _part(rundir, fp, name, "good").exists()]
        ids = [chunk for name in goods for chunk in _shard_ids(rundir, fp, name, index[name], shard)]
        n_ids = sum(len(c) for c in ids)
        dup = (later_repeats(pa.chunked_array(ids, pa.string()).combine_chunks()).to_numpy(zero_copy_only=False)
               if n_ids else np.zeros(n_ids, np.bool_))
        with ParquetSink(rundir.input_shard(shard), schema) as samples:
            at = 0
            for name in goods:
                for g in _shard_batches(rundir, fp, name, "good", index[name], shard, offset[name]):
                    g = pa.concat_tables([schema.empty_table(), g], promote_options="permissive")
                    mask = pa.array(dup[at:at + g.num_rows])
                    at += g.num_rows
                    if pc.any(mask).as_py() and not params.dedupe:  # each copy a sample of its own
                        own = own_ids(*(g.column(c).filter(mask).combine_chunks()
                                        for c in ("sample_id", "_input_idx", "_input_row")))
                        g = g.set_column(0, "sample_id", pc.replace_with_mask(g.column(0).combine_chunks(), mask, own))
                    elif pc.any(mask).as_py():
                        dups = g.filter(mask)
                        n_dup += dups.num_rows
                        ledger.write(_ledger(dups, "dropped", pa.repeat(pa.scalar("duplicate"), dups.num_rows), stage))
                        g = g.filter(pc.invert(mask))
                    samples.write(g)
                    canonical += g.num_rows
                    n_probe += int(np.count_nonzero(probe_mask(g.column("response")).to_numpy(zero_copy_only=False)))
            outputs[_rel(rundir, rundir.input_shard(shard))] = samples.close()
        outputs[_rel(rundir, rundir.quarantine(shard))] = quarantine.close()
        outputs[_rel(rundir, rundir.ingest_ledger(shard))] = ledger.close()
    counts = {"rows_in": canonical + n_dup + n_quarantined, "canonical": canonical, "duplicates": n_dup,
              "quarantined": n_quarantined}
    rundir.mark_done(fp, unit.name, {"counts": counts, "probes": n_probe, "outputs": outputs})
    fault_point("unit_done")
    return rundir.read_done(fp, unit.name)


def remove_parts(rundir: RunDir, fp: str) -> None:
    """Drop the map outputs once the whole ingest is recorded as done."""
    shutil.rmtree(rundir.cache(fp) / "ingest", ignore_errors=True)


def part_schema(rundir: RunDir, fp: str, sources: list[list[str]], report: bool = False) -> pa.Schema:
    """The canonical table's schema over all inputs (pass-through columns promoted to one type, carrying the
    features the inputs agree on: ``curator.features``; ``report``: log why one is not); an ``InputError`` naming
    the column and two inputs if they hold it in types that do not promote to one."""
    schemas = {name: ipc.open_file(pa.OSFile(str(p))).schema for names in sources for name in names
               if (p := _part(rundir, fp, name, "good")).exists()}
    if not schemas:  # no input row was read: the shards are written empty, in the canonical columns
        return NO_ROWS_SCHEMA
    try:
        unified = pa.unify_schemas(list(schemas.values()), promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise InputError(_type_conflict(rundir, fp, schemas) or f"inputs: columns of incompatible types ({exc}); "
                         "rename or cast the conflicting pass-through column") from None
    if not any(KEY in (schema.metadata or {}) for schema in schemas.values()):
        return unified
    features, reasons = merged([(rundir.read_done(fp, name)["uri"], schema) for name, schema in schemas.items()])
    for reason in reasons if report else ():
        log.warning("inputs: %s", reason)
    return with_carried(unified, features)


def _type_conflict(rundir: RunDir, fp: str, schemas: dict[str, pa.Schema]) -> str | None:
    """Which column two input units (by name: their ``schemas``) hold in types that do not promote to one, with
    their files and the fix; None if no one column does."""
    first: dict[str, tuple[str, pa.Field]] = {}  # column -> the first unit that has it, and its field there
    for name, schema in schemas.items():
        for field in schema:
            seen, had = first.setdefault(field.name, (name, field))
            try:
                pa.unify_schemas([pa.schema([had]), pa.schema([field])], promote_options="permissive")
            except (pa.ArrowInvalid, pa.ArrowTypeError):
                files = [rundir.read_done(fp, unit)["uri"] for unit in (seen, name)]
                return (f"inputs {files[0]} and {files[1]}: column '{field.name}' is {had.type} in the first and "
                        f"{field.type} in the second; rename it in one of them, or convert it to one type in both")
    return None


def _part(rundir: RunDir, fp: str, name: str, kind: str) -> Path:
    """Input unit ``name``'s ``kind`` file."""
    return rundir.cache(fp) / "ingest" / f"{name}.{kind}.arrow"


def _rel(rundir: RunDir, path: Path) -> str:
    return path.relative_to(rundir.root).as_posix()


def _shard_batches(rundir: RunDir, fp: str, name: str, kind: str, index: dict, shard: int,
                   offset: int) -> Iterator[pa.Table]:
    """Input unit ``name``'s ``kind`` batches of ``shard``, in file order, read (not mapped) one at a time; the
    unit's first row is the file's row ``offset`` (a part numbers its rows from 0)."""
    wanted = [j for j, (s, _) in enumerate(index[kind]) if s == shard]
    if not wanted:
        return
    column = "_input_row" if kind == "good" else "input_row"
    with pa.OSFile(str(_part(rundir, fp, name, kind))) as fh:
        reader = ipc.open_file(fh)
        for j in wanted:
            table = pa.Table.from_batches([reader.get_batch(j)])
            if offset:
                at = table.schema.get_field_index(column)
                table = table.set_column(at, column, pc.add(table.column(at), pa.scalar(offset, pa.int64())))
            yield table


def _shard_ids(rundir: RunDir, fp: str, name: str, index: dict, shard: int) -> list[pa.Array]:
    """The ``sample_id``s of input unit ``name``'s good batches of ``shard`` (memory-mapped: only they are read)."""
    reader = ipc.open_file(pa.memory_map(str(_part(rundir, fp, name, "good"))))
    return [reader.get_batch(j).column(0) for j, (s, _) in enumerate(index["good"]) if s == shard]


def _ledger(table: pa.Table, status: str, reasons: pa.Array | pa.ChunkedArray, stage: str) -> pa.Table:
    n = table.num_rows
    prefix = "_" if "_input_idx" in table.column_names else ""
    return pa.table({
        "sample_id": table.column("sample_id"), "status": pa.repeat(pa.scalar(status), n),
        "stage": pa.repeat(pa.scalar(stage), n), "reason": reasons.cast(pa.string()),
        "rule": pa.nulls(n, pa.string()), "input_idx": table.column(f"{prefix}input_idx").cast(pa.int32()),
        "input_row": table.column(f"{prefix}input_row").cast(pa.int64()),
    }, schema=LEDGER_SCHEMA)
