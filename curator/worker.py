"""Running one unit of a plan in this process (``run_unit``): what every executor calls.

A unit writes each stage's output atomically, then that stage's ``done`` marker, so a rerun skips
finished work; a stage that raises leaves a ``failed`` marker with its traceback and the unit
raises. Stages are constructed and set up once per process for each (fingerprint, run directory):
a worker that serves two runs never writes one run's cache into the other.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

import pyarrow as pa
import pyarrow.compute as pc

from curator.errors import CuratorError, RunError
from curator.faults import fault_point
from curator.ingest import input_unit, shard_unit
from curator.io import read_parquet, write_parquet
from curator.plan import Plan, PlannedStage, Unit
from curator.rundir import shard_name
from curator.samples import MESSAGE_TYPE, sample_ids, shard_indices
from curator.stage import Stage
from curator.views import shard_view

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
    """Every stage of ``unit`` has its done marker."""
    return all(plan.rundir.is_done(ps.fingerprint, unit.name) for ps in plan.steps(unit))


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
            result = _apply(stage_for(plan, ps), view) if view is not None else None
            info = {"rows_in": 0 if view is None else view.num_rows, "seconds": 0.0}
            if result is not None:
                if ps.kind == "augment":
                    result = _prepare_added(result, ps.id)
                info["sha256"] = write_parquet(result, rundir.scores(ps.id, shard))
                info["rows_out"] = result.num_rows
            info["seconds"] = round(time.time() - t0, 3)
            rundir.mark_done(ps.fingerprint, unit.name, info)
            out[ps.id] = info
        except Exception as exc:
            _failed(plan, ps, unit, exc)
        fault_point("unit_done")
    return out


def _map_unit(plan: Plan, unit: Unit) -> dict:
    """The per-shard part (``map_shard``) of a ``map_reduce`` global stage."""
    (ps,) = plan.steps(unit)
    rundir = plan.rundir
    if not rundir.is_done(ps.fingerprint, unit.name):
        t0 = time.time()
        try:
            view = _view(plan, ps, unit.index)
            info = {"rows_in": 0 if view is None else view.num_rows}
            if view is not None:
                info["sha256"] = write_parquet(stage_for(plan, ps).map_shard(view), _map_output(plan, ps, unit.index))
            info["seconds"] = round(time.time() - t0, 3)
            rundir.mark_done(ps.fingerprint, unit.name, info)
        except Exception as exc:
            _failed(plan, ps, unit, exc)
        fault_point("unit_done")
    return rundir.read_done(ps.fingerprint, unit.name)


def _global_unit(plan: Plan, unit: Unit) -> dict:
    """A global stage sees every shard's view (or, ``map_reduce``, every shard's ``map_shard``
    output) at once; its output is split back by shard."""
    (ps,) = plan.steps(unit)
    rundir, shards = plan.rundir, range(plan.recipe.shards)
    if rundir.is_done(ps.fingerprint, unit.name):
        return rundir.read_done(ps.fingerprint, unit.name)
    try:
        stage = stage_for(plan, ps)
        if ps.cls.map_reduce:
            parts = [read_parquet(p) for s in shards if (p := _map_output(plan, ps, s)).exists()]
        else:
            parts = [v for s in shards if (v := _view(plan, ps, s)) is not None]
        t0 = time.time()
        whole = pa.concat_tables(parts, promote_options="permissive") if parts else None
        result = _apply(stage, whole, stage.reduce if ps.cls.map_reduce else None) if whole is not None else None
    except Exception as exc:
        _failed(plan, ps, unit, exc)
    hashes = {}
    if result is not None:
        if ps.kind == "augment":
            result = _prepare_added(result, ps.id)
        shard_of_row = shard_indices(result.column("sample_id"), plan.recipe.shards)
        for shard in shards:
            hashes[shard] = write_parquet(result.filter(pc.equal(shard_of_row, shard)), rundir.scores(ps.id, shard))
    info = {"seconds": round(time.time() - t0, 3), "sha256": hashes, "rows_out": 0 if result is None else result.num_rows}
    rundir.mark_done(ps.fingerprint, unit.name, info)
    for shard in shards:  # map outputs are not needed once the stage is done
        _map_output(plan, ps, shard).unlink(missing_ok=True)
    fault_point("unit_done")
    return info


_RUNNERS: dict[str, Callable[[Plan, Unit], dict]] = {
    "input": _input_unit, "ingest": shard_unit, "shard": _shard_unit, "map": _map_unit, "global": _global_unit}


def _view(plan: Plan, ps: PlannedStage, shard: int) -> pa.Table | None:
    """``ps``'s view of ``shard``; None when the shard has no samples."""
    if not plan.rundir.input_shard(shard).exists():
        return None
    return shard_view(plan, ps, shard, stage_for(plan, ps).view_columns)


def _map_output(plan: Plan, ps: PlannedStage, shard: int) -> Path:
    return plan.rundir.cache(ps.fingerprint) / f"map-{shard_name(shard)}.parquet"


def _failed(plan: Plan, ps: PlannedStage, unit: Unit, exc: Exception) -> NoReturn:
    """Record ``exc`` as the unit's ``failed`` marker and raise it as a ``CuratorError``."""
    rundir = plan.rundir
    rundir.mark_failed(ps.fingerprint, unit.name, {"stage": ps.id, "error": f"{type(exc).__name__}: {exc}",
                                                   "traceback": traceback.format_exc()})
    if isinstance(exc, CuratorError):
        raise exc
    raise RunError(f"stage '{ps.id}' failed on {unit.name}: {type(exc).__name__}: {exc} "
                   f"(traceback in {rundir.marker(ps.fingerprint, unit.name, 'failed')})") from exc


def _apply(stage: Stage, view: pa.Table, fn: Callable[[pa.RecordBatch], pa.Table] | None = None) -> pa.Table:
    """Feed ``view`` to ``fn`` (default ``stage.process_batch``) in batches of
    ``resources().batch_size``; concatenate results."""
    fn = fn or stage.process_batch
    size = max(1, stage.resources().batch_size)
    view = view.combine_chunks()  # batches are cut by size only, never by how the table was read
    parts = [fn(b) for b in view.to_batches(max_chunksize=size)] if view.num_rows else []
    if not parts:
        parts = [fn(pa.RecordBatch.from_pylist([], schema=view.schema))]
    parts = [p if isinstance(p, pa.Table) else pa.Table.from_batches([p]) for p in parts]
    result = pa.concat_tables(parts, promote_options="permissive")
    if stage.kind == "score":
        missing = [c for c in ("sample_id", *stage.provided_columns()) if c not in result.column_names]
        if missing or result.num_rows != view.num_rows:
            raise RunError(f"stage '{stage.name}' returned columns {result.column_names} and {result.num_rows} "
                           f"rows; expected {['sample_id', *stage.provided_columns()]} for {view.num_rows} rows")
    return result


def _prepare_added(added: pa.Table, stage_id: str) -> pa.Table:
    """Give augment output its ``sample_id``, ``added_by`` and emission order ``_order``."""
    for col in ("prompt", "response", "messages"):
        if col not in added.column_names:
            added = added.append_column(col, pa.nulls(added.num_rows, MESSAGE_TYPE if col == "messages" else pa.string()))
    if "sample_id" in added.column_names:
        added = added.drop_columns(["sample_id"])
    added = pa.table({"sample_id": sample_ids(added), **{c: added.column(c) for c in added.column_names}})
    added = added.append_column("added_by", pa.array([stage_id] * added.num_rows, pa.string()))
    return added.append_column("_order", pa.array(range(added.num_rows), pa.int64()))
