"""Running one unit of a plan in this process (``run_unit``): what every executor calls.

A unit streams each stage's view through the stage in batches and writes its output as it goes
(``ParquetSink``), then that stage's ``done`` marker listing the files and their hashes, so a rerun
skips finished work it can verify; a stage that raises leaves a ``failed`` marker with its traceback and
the unit raises. Stages are constructed and set up once per process for each (fingerprint, run directory):
a worker that serves two runs never writes one run's cache into the other.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NoReturn

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curator.allocator import release_arrow_memory
from curator.database import RuleError
from curator.errors import CuratorError, RecipeError, RunError
from curator.faults import fault_point
from curator.ingest import input_unit, shard_unit
from curator.io import ParquetSink, read_parquet
from curator.parallel import map_ordered
from curator.plan import Plan, PlannedStage, Unit
from curator.rundir import shard_name
from curator.samples import MESSAGE_TYPE, sample_ids, shard_indices
from curator.stage import FLAG_COLUMN, Stage
from curator.views import ShardView

_STAGES: dict[tuple[str, str], Stage] = {}  # (fingerprint, run dir) -> set-up stage, per process


def stage_for(plan: Plan, ps: PlannedStage) -> Stage:
    """The set-up instance of ``ps`` in this process."""
    key = (ps.fingerprint, str(plan.rundir.root))
    stage = _STAGES.get(key)
    if stage is None:
        stage = plan.new_stage(ps)
        stage.setup()
        _STAGES[key] = stage
    return stage


def finished(plan: Plan, unit: Unit) -> bool:
    """Every stage of ``unit`` has its done marker, and the files it lists are unchanged."""
    return all([plan.rundir.verify_done(ps.fingerprint, unit.name, ps.id) for ps in plan.steps(unit)])


def run_unit(plan: Plan, unit: Unit) -> dict:
    """Run ``unit`` of ``plan`` here; returns what its done marker(s) record."""
    return _RUNNERS[unit.kind](plan, unit)


def _input_unit(plan: Plan, unit: Unit) -> dict:
    return input_unit(plan, unit, stage_for(plan, plan.ingest))


def _shard_unit(plan: Plan, unit: Unit) -> dict:
    """Consecutive shard-scope stages on one shard (augment output is kept in ``scores/`` too;
    finalize builds ``added/``)."""
    rundir, shard, out = plan.rundir, unit.index, {}
    for ps in plan.steps(unit):
        if rundir.is_done(ps.fingerprint, unit.name):
            continue
        t0 = time.time()
        try:
            view = _view(plan, ps, shard)
            info = {"rows_in": 0, "seconds": 0.0}
            if view is not None:
                stage = stage_for(plan, ps)
                with ParquetSink(rundir.scores(ps.id, shard)) as sink:
                    info["rows_in"] = _stream(stage, view.batches(max(1, stage.resources().batch_size)),
                                              view.schema, sink, ps.id)
                    info["outputs"] = {_rel(plan, sink.dest): sink.close()}
                info["sha256"], info["rows_out"] = info["outputs"][_rel(plan, sink.dest)]["sha256"], sink.rows
            info["seconds"] = round(time.time() - t0, 3)
            rundir.mark_done(ps.fingerprint, unit.name, info)
            out[ps.id] = info
        except Exception as exc:
            _failed(plan, ps, unit, exc)
        fault_point("unit_done")
    return out


def _map_unit(plan: Plan, unit: Unit) -> dict:
    """The per-shard part (``map_shard``, batch by batch) of a ``map_reduce`` global stage."""
    (ps,) = plan.steps(unit)
    rundir = plan.rundir
    if not rundir.is_done(ps.fingerprint, unit.name):
        t0 = time.time()
        try:
            view = _view(plan, ps, unit.index)
            info = {"rows_in": 0}
            if view is not None:
                stage = stage_for(plan, ps)
                with ParquetSink(_map_output(plan, ps, unit.index)) as sink:
                    for table in view.tables():
                        sink.write(stage.map_shard(table))
                        info["rows_in"] += table.num_rows
                        release_arrow_memory()
                    if not sink.rows:
                        sink.write(stage.map_shard(view.schema.empty_table()))
                    info["outputs"] = {_rel(plan, sink.dest): sink.close()}
                info["sha256"] = info["outputs"][_rel(plan, sink.dest)]["sha256"]
            info["seconds"] = round(time.time() - t0, 3)
            rundir.mark_done(ps.fingerprint, unit.name, info)
        except Exception as exc:
            _failed(plan, ps, unit, exc)
        fault_point("unit_done")
    return rundir.read_done(ps.fingerprint, unit.name)


def _global_unit(plan: Plan, unit: Unit) -> dict:
    """A global stage on every shard: a ``map_reduce`` stage reduces the columns it names of every shard's
    ``map_shard`` output, and each shard's output is that output plus the reduced columns; a stage with
    ``summary_columns`` summarises those columns of the whole set, then runs shard by shard in batches; any
    other global stage sees every shard's view at once. The output is written per shard."""
    (ps,) = plan.steps(unit)
    rundir = plan.rundir
    if rundir.is_done(ps.fingerprint, unit.name):
        return rundir.read_done(ps.fingerprint, unit.name)
    t0 = time.time()
    try:
        stage = stage_for(plan, ps)
        outputs = _reduce(plan, ps, stage) if ps.cls.map_reduce else _global_views(plan, ps, stage)
    except Exception as exc:
        _failed(plan, ps, unit, exc)
    info = {"seconds": round(time.time() - t0, 3), "rows_out": sum(rows for _, rows in outputs.values()),
            "sha256": {s: rec["sha256"] for s, (rec, _) in outputs.items()},
            "outputs": {_rel(plan, plan.rundir.scores(ps.id, s)): rec for s, (rec, _) in outputs.items()}}
    rundir.mark_done(ps.fingerprint, unit.name, info)
    for shard in range(plan.recipe.shards):  # map outputs are not needed once the stage is done
        _map_output(plan, ps, shard).unlink(missing_ok=True)
    fault_point("unit_done")
    return info


def _per_shard(plan: Plan, ps: PlannedStage, write: Callable[[ParquetSink, int], None]) -> dict[int, tuple[dict, int]]:
    """``write(sink, shard)`` fills ``scores/<stage>/`` of every shard (shards on threads, each streamed):
    shard -> (file record, rows)."""
    def one(shard: int) -> tuple[dict, int]:
        with ParquetSink(plan.rundir.scores(ps.id, shard)) as sink:
            write(sink, shard)
            return sink.close(), sink.rows

    return dict(zip(range(plan.recipe.shards), map_ordered(one, range(plan.recipe.shards))))


def _reduce(plan: Plan, ps: PlannedStage, stage: Stage) -> dict[int, tuple[dict, int]]:
    """``reduce`` on the ``reduce_columns`` of every map output, then each shard's output streamed."""
    maps = {s: p for s in range(plan.recipe.shards) if (p := _map_output(plan, ps, s)).exists()}
    if not maps:
        return {}
    names = pq.read_schema(next(iter(maps.values()))).names
    wanted = [c for c in names if c in stage.reduce_columns] if stage.reduce_columns else None
    parts = pa.concat_tables([read_parquet(p, wanted) if wanted is None else read_parquet(p, wanted).select(wanted)
                              for p in maps.values()],
                             promote_options="permissive").combine_chunks()
    added = stage.reduce(parts)
    if added.num_rows != parts.num_rows:
        raise RunError(f"stage '{stage.name}': reduce returned {added.num_rows} rows for {parts.num_rows}")
    starts, at = {}, 0
    for s, p in maps.items():
        starts[s], at = at, at + pq.ParquetFile(p).metadata.num_rows
    empty = pq.read_schema(next(iter(maps.values()))).empty_table()

    def write(sink: ParquetSink, shard: int) -> None:
        at = starts.get(shard, 0)
        if shard in maps:
            for batch in pq.ParquetFile(maps[shard]).iter_batches(batch_size=_STREAM_ROWS):
                sink.write(_finish(pa.Table.from_batches([batch]), added.slice(at, batch.num_rows)))
                at += batch.num_rows
        if not sink.rows:
            sink.write(_finish(empty, added.slice(0, 0)))

    return _per_shard(plan, ps, write)


def _finish(mapped: pa.Table, added: pa.Table) -> pa.Table:
    """A map output batch without its private (``_``) columns, plus what ``reduce`` added for its rows."""
    table = mapped.drop_columns([c for c in mapped.column_names if c.startswith("_")])
    for name in added.column_names:
        table = table.append_column(name, added.column(name))
    return table


def _global_views(plan: Plan, ps: PlannedStage, stage: Stage) -> dict[int, tuple[dict, int]]:
    views = {s: v for s in range(plan.recipe.shards) if (v := _view(plan, ps, s)) is not None}
    if not views:
        return {}
    schema = next(iter(views.values())).schema
    summary = stage.summary_columns(list(schema.names))
    if summary is None:  # the whole set in one call
        whole = pa.concat_tables([_table(v) for v in views.values()], promote_options="permissive")
        result = _apply(stage, whole)
        if ps.kind == "augment":
            result = _prepare_added(result, ps.id)
        shard_of_row = shard_indices(result.column("sample_id"), plan.recipe.shards)
        return _per_shard(plan, ps, lambda sink, s: sink.write(result.filter(pc.equal(shard_of_row, s))))
    if summary:
        stage.summarise(pa.concat_tables([_table(ShardView(plan, ps, s, lambda _: summary)) for s in views]))

    def write(sink: ParquetSink, shard: int) -> None:
        view = views.get(shard)
        batches = view.batches(_STREAM_ROWS) if view is not None else iter(())
        _stream(stage, batches, schema, sink, ps.id)

    return _per_shard(plan, ps, write)


_STREAM_ROWS = 1 << 16  # rows per batch where a stage's own batch size is "the whole set"
_RUNNERS: dict[str, Callable[[Plan, Unit], dict]] = {
    "input": _input_unit, "ingest": shard_unit, "shard": _shard_unit, "map": _map_unit, "global": _global_unit}


def _table(view: ShardView) -> pa.Table:
    return pa.concat_tables([view.schema.empty_table(), *view.tables()])


def _view(plan: Plan, ps: PlannedStage, shard: int) -> ShardView | None:
    """``ps``'s view of ``shard``; None when the shard has no samples."""
    if not plan.rundir.input_shard(shard).exists():
        return None
    return ShardView(plan, ps, shard, stage_for(plan, ps).view_columns)


def _map_output(plan: Plan, ps: PlannedStage, shard: int) -> Path:
    return plan.rundir.cache(ps.fingerprint) / f"map-{shard_name(shard)}.parquet"


def _rel(plan: Plan, path: Path) -> str:
    return path.relative_to(plan.rundir.root).as_posix()


def _failed(plan: Plan, ps: PlannedStage, unit: Unit, exc: Exception) -> NoReturn:
    """Record ``exc`` as the unit's ``failed`` marker and raise it as a ``CuratorError``."""
    rundir = plan.rundir
    rundir.mark_failed(ps.fingerprint, unit.name, {"stage": ps.id, "error": f"{type(exc).__name__}: {exc}",
                                                   "traceback": traceback.format_exc()})
    if isinstance(exc, RuleError):  # a rule that fails on the data: named with its recipe key
        k = next(k for k, spec in enumerate(plan.recipe.stages) if spec.id == ps.id)
        raise RecipeError(exc.at(f"stages[{k}].with")) from None
    if isinstance(exc, CuratorError):
        raise exc
    raise RunError(f"stage '{ps.id}' failed on {unit.name}: {type(exc).__name__}: {exc} "
                   f"(traceback in {rundir.marker(ps.fingerprint, unit.name, 'failed')})") from exc


def _check(stage: Stage, result: pa.Table, batch: pa.Table | pa.RecordBatch) -> None:
    """A score stage's output for ``batch``: its declared columns (and no other, but ``flag_reason`` and ``_``-prefixed
    ones), one row per row of ``batch`` with the same
    ``sample_id``s (in any order), ``flag_reason`` as text, and no NaN or infinity in a float column (a row a stage
    cannot score gets a null score and a ``flag_reason``). A ``RunError`` naming the stage and the fix otherwise."""
    if stage.kind != "score":
        return
    rows = batch.num_rows
    expected = ["sample_id", *stage.provided_columns()]
    missing = [c for c in expected if c not in result.column_names]
    if missing or result.num_rows != rows:
        raise RunError(f"stage '{stage.name}' returned columns {result.column_names} and {result.num_rows} "
                       f"rows; expected {expected} for {rows} rows")
    extra = [c for c in result.column_names if c not in expected and c != FLAG_COLUMN and not c.startswith("_")]
    if extra:
        raise RunError(f"stage '{stage.name}' returned the column(s) {extra}, which it does not declare (it declares "
                       f"{expected[1:]}); add them to its provides (or provided_columns()), or leave them out")
    if not _same_ids(batch.column("sample_id"), result.column("sample_id")):
        raise RunError(f"stage '{stage.name}' returned sample_ids that are not those of its batch (each of the "
                       f"batch's {rows} ids once, in any order): copy 'sample_id' from the batch into its result")
    if FLAG_COLUMN in result.column_names and not _is_text(result.schema.field(FLAG_COLUMN).type):
        raise RunError(f"stage '{stage.name}' returned '{FLAG_COLUMN}' of type {result.schema.field(FLAG_COLUMN).type};"
                       " it is the reason a row is flagged: text (null where the row is fine)")
    for name in stage.provided_columns():
        column = result.column(name)
        if pa.types.is_floating(column.type):
            bad = pc.sum(pc.invert(pc.is_finite(column))).as_py() or 0
            if bad:
                raise RunError(f"stage '{stage.name}' returned NaN or infinity in '{name}' ({bad} of {rows} rows): a "
                               f"row a stage cannot score gets a null score and a '{FLAG_COLUMN}' saying why (decide "
                               "rules would otherwise order NaN above every threshold)")


def _same_ids(ids: pa.Array | pa.ChunkedArray, given: pa.Array | pa.ChunkedArray) -> bool:
    """``given`` holds each of ``ids`` (unique) once, in any order (the common case, the same order, costs a compare)."""
    ids = ids.combine_chunks() if isinstance(ids, pa.ChunkedArray) else ids
    given = given.combine_chunks() if isinstance(given, pa.ChunkedArray) else given
    try:
        given = given.cast(ids.type)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return False
    if given.equals(ids):
        return True
    return len(given) == len(ids) and pc.take(ids, pc.sort_indices(ids)).equals(pc.take(given, pc.sort_indices(given)))


def _is_text(kind: pa.DataType) -> bool:
    return pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_null(kind)


def _as_table(result: pa.Table | pa.RecordBatch) -> pa.Table:
    return result if isinstance(result, pa.Table) else pa.Table.from_batches([result])


def _stream(stage: Stage, batches: Iterator[pa.RecordBatch], schema: pa.Schema, sink: ParquetSink, stage_id: str) -> int:
    """``stage.process_batch`` on every batch (once on an empty one if there are none) into ``sink``;
    returns the rows seen. Augment output gets its ids and emission order (``_prepare_added``)."""
    rows = emitted = 0
    for batch in batches:
        result = _as_table(stage.process_batch(batch))
        _check(stage, result, batch)
        if stage.kind == "augment":
            result = _prepare_added(result, stage_id, emitted)
            emitted += result.num_rows
        sink.write(result)
        rows += batch.num_rows
        release_arrow_memory()
    if not rows:
        empty = pa.RecordBatch.from_pylist([], schema=schema)
        result = _as_table(stage.process_batch(empty))
        _check(stage, result, empty)
        sink.write(_prepare_added(result, stage_id) if stage.kind == "augment" else result)
    return rows


def _apply(stage: Stage, view: pa.Table) -> pa.Table:
    """``stage.process_batch`` over ``view`` in batches of ``resources().batch_size``; results concatenated."""
    size = max(1, stage.resources().batch_size)
    view = view.combine_chunks()  # batches are cut by size only, never by how the table was read
    parts = [_as_table(stage.process_batch(b)) for b in view.to_batches(max_chunksize=size)] if view.num_rows else []
    if not parts:
        parts = [_as_table(stage.process_batch(pa.RecordBatch.from_pylist([], schema=view.schema)))]
    result = pa.concat_tables(parts, promote_options="permissive")
    _check(stage, result, view)
    return result


def _prepare_added(added: pa.Table, stage_id: str, first: int = 0) -> pa.Table:
    """Give augment output its ``sample_id``, ``added_by`` and emission order ``_order`` (from ``first``)."""
    for col in ("prompt", "response", "messages"):
        if col not in added.column_names:
            added = added.append_column(col, pa.nulls(added.num_rows, MESSAGE_TYPE if col == "messages" else pa.string()))
    if "sample_id" in added.column_names:
        added = added.drop_columns(["sample_id"])
    added = pa.table({"sample_id": sample_ids(added), **{c: added.column(c) for c in added.column_names}})
    added = added.append_column("added_by", pa.array([stage_id] * added.num_rows, pa.string()))
    return added.append_column("_order", pa.array(range(first, first + added.num_rows), pa.int64()))
