"""Run a recipe: ingest -> shard phases / global stages -> ledger -> dataset -> manifest.

Every (stage, shard) unit writes its output atomically and then a ``done`` marker; a rerun
skips finished units, so a killed run resumes and ends byte-identical to an uninterrupted one.
"""

from __future__ import annotations

import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from curator.errors import CuratorError, RunError
from curator.executors.local import LocalExecutor
from curator.faults import fault_point
from curator.finalize import finalize
from curator.ingest import ingest, remove_parts
from curator.io import atomic_path, read_parquet, sha256_path, write_parquet
from curator.plan import Plan, build_plan, ingest_plan, shard_view
from curator.recipe import Recipe, load_recipe
from curator.rundir import RunDir, RunLock, shard_name
from curator.samples import sample_ids, shard_indices

_STAGE_CACHE: dict[tuple[str, str], Any] = {}  # per process: (fingerprint, run dir) -> set-up stage


@dataclass(frozen=True)
class RunResult:
    run_dir: Path
    manifest: dict
    digest: str

    @property
    def counts(self) -> dict:
        return self.manifest["totals"]


def run(recipe: Recipe | str | Path | dict, run_dir: str | Path, *, inputs: list[str] | None = None,
        workers: int | None = None, executor: str | None = None, quiet: bool = False, wait: float = 0.0) -> RunResult:
    """Run ``recipe`` into ``run_dir`` (resuming whatever is already finished there)."""
    if not isinstance(recipe, Recipe):
        recipe = load_recipe(recipe)
    rundir = RunDir(Path(run_dir).resolve())
    rundir.root.mkdir(parents=True, exist_ok=True)
    extra_roots = tuple(Path(p).resolve().parent for p in inputs or ())
    if inputs:
        from dataclasses import replace

        from curator.recipe import InputSpec

        fmt = recipe.inputs[0].format if len(recipe.inputs) == 1 else "auto"
        recipe = replace(recipe, inputs=tuple(InputSpec(path=str(Path(p).resolve()), format=fmt) for p in inputs))
    paths = recipe.input_paths(extra_roots)
    with RunLock(rundir.root, wait):
        started = time.time()
        _remove_stale_temporaries(rundir.root)
        with atomic_path(rundir.recipe) as tmp:
            tmp.write_text(recipe.text, encoding="utf-8")
        with ThreadPoolExecutor(len(paths) or 1) as pool:  # hashlib releases the GIL on large reads
            input_hashes = list(pool.map(sha256_path, paths))
        exe = _executor(recipe, executor, workers, quiet)
        try:
            _, ingest_fp, _ = ingest_plan(recipe, rundir, input_hashes, quiet)
            ingest_info = _ingest(recipe, ingest_fp, rundir, paths, input_hashes, exe, quiet)
            plan = build_plan(recipe, rundir, input_hashes, quiet, schema=ingest_info["schema_obj"])
            for ps in plan.stages:
                rundir.claim_outputs(f"stage-{ps.id}", ps.fingerprint, [rundir.scores(ps.id, 0).parent])
            timings: dict[str, float] = {}
            for scope, stages in plan.phases():
                t0 = time.time()
                if scope == "global":
                    _run_global(plan, rundir, stages[0], exe, input_hashes, quiet)
                else:
                    jobs = [(recipe, str(rundir.root), [ps.index for ps in stages], shard, input_hashes, quiet)
                            for shard in range(recipe.shards)
                            if not all(rundir.is_done(ps.fingerprint, shard_name(shard)) for ps in stages)]
                    exe.map(run_shard_unit, jobs, f"stages {', '.join(ps.id for ps in stages)}")
                for ps in stages:
                    timings[ps.id] = round(time.time() - t0, 3)
        finally:
            if isinstance(exe, LocalExecutor):
                exe.close()
        _raise_failed(rundir)
        return finalize(plan, rundir, ingest_info, {"kind": exe.name, "workers": exe.workers}, started, timings,
                        quiet)


def _remove_stale_temporaries(root: Path) -> None:
    """Temporary files and dataset staging dirs left by a killed run (we hold the lock)."""
    import shutil

    for tmp in root.rglob(".*.tmp"):
        tmp.unlink(missing_ok=True)
    for staging in root.glob(".dataset.*"):
        shutil.rmtree(staging, ignore_errors=True)


def _executor(recipe: Recipe, override: str | None, workers: int | None, quiet: bool):
    kind = override or recipe.executor.kind
    n = workers or recipe.executor.workers
    if kind == "ray":
        from curator.executors.ray import RayExecutor

        return RayExecutor(address=recipe.executor.address, workers=n, retries=recipe.executor.retries, quiet=quiet)
    return LocalExecutor(n, quiet)


def _ingest(recipe: Recipe, fp: str, rundir: RunDir, paths: list[Path], input_hashes: list[str], exe,
            quiet: bool) -> dict:
    unit = "ingest"
    rundir.claim_outputs("ingest", fp, [rundir.input_shard(0).parent, rundir.ingest_ledger(0).parent])
    if not rundir.is_done(fp, unit):
        specs = [(str(p), i.format, i.source or p.stem, i.limit, i.sample, i.sample_seed)
                 for p, i in zip(paths, recipe.inputs)]
        t0 = time.time()
        # Input files are read on the driver's machine: Ray workers may not see them.
        local = exe if isinstance(exe, LocalExecutor) else LocalExecutor(1, quiet)
        info = ingest(recipe, rundir, fp, specs, input_hashes, local, quiet)
        schema = info.pop("schema")
        info["schema"] = schema.serialize().to_pybytes().hex() if schema is not None else None
        info["seconds"] = round(time.time() - t0, 3)
        rundir.mark_done(fp, unit, info)
        fault_point("unit_done")
    remove_parts(rundir, fp)
    info = rundir.read_done(fp, unit)
    info["schema_obj"] = pa.ipc.read_schema(pa.py_buffer(bytes.fromhex(info["schema"]))) if info["schema"] else None
    return info


def _get_stage(ps) -> Any:
    """The set-up stage for ``ps`` in this process (keyed by run directory too: a worker that
    serves two runs must not write one run's cache into the other)."""
    key = (ps.fingerprint, str(ps.stage.context.run_dir))
    stage = _STAGE_CACHE.get(key)
    if stage is None:
        stage = ps.stage
        stage.setup()
        _STAGE_CACHE[key] = stage
    return stage


def run_shard_unit(job: tuple) -> dict:
    """Run one shard through consecutive shard-scope stages (a worker's unit of work)."""
    recipe, root, indices, shard, input_hashes, quiet = job
    rundir = RunDir(Path(root))
    plan = build_plan(recipe, rundir, input_hashes, quiet)
    unit = f"shard-{shard:05d}"
    out = {}
    for ps in (p for p in plan.stages if p.index in indices):
        if rundir.is_done(ps.fingerprint, unit):
            continue
        t0 = time.time()
        try:
            view = shard_view(rundir, plan, ps.index, shard)
            result = _apply(_get_stage(ps), view) if view is not None else None
            info = {"rows_in": 0 if view is None else view.num_rows, "seconds": 0.0}
            if result is not None:
                dest = rundir.scores(ps.id, shard)  # augment output too; finalize builds added/
                if ps.kind == "augment":
                    result = _prepare_added(result, ps.id, shard)
                info["sha256"] = write_parquet(result, dest)
                info["rows_out"] = result.num_rows
            info["seconds"] = round(time.time() - t0, 3)
            rundir.mark_done(ps.fingerprint, unit, info)
            out[ps.id] = info
        except Exception as exc:  # recorded as a failed marker; the run reports it
            _unit_failed(rundir, ps, unit, exc)
        fault_point("unit_done")
    return out


def run_map_unit(job: tuple) -> dict:
    """The per-shard part (``map_shard``) of a ``map_reduce`` global stage (a worker's unit of work)."""
    recipe, root, (index,), shard, input_hashes, quiet = job
    rundir = RunDir(Path(root))
    plan = build_plan(recipe, rundir, input_hashes, quiet)
    ps = next(p for p in plan.stages if p.index == index)
    unit = shard_name(shard)
    if not rundir.is_done(ps.fingerprint, unit):
        t0 = time.time()
        try:
            view = shard_view(rundir, plan, index, shard)
            info = {"rows_in": 0 if view is None else view.num_rows}
            if view is not None:
                info["sha256"] = write_parquet(_get_stage(ps).map_shard(view), _map_output(rundir, ps.fingerprint, shard))
            info["seconds"] = round(time.time() - t0, 3)
            rundir.mark_done(ps.fingerprint, unit, info)
        except Exception as exc:
            _unit_failed(rundir, ps, unit, exc)
        fault_point("unit_done")
    return rundir.read_done(ps.fingerprint, unit)


def _map_output(rundir: RunDir, fp: str, shard: int) -> Path:
    return rundir.cache(fp) / f"map-{shard_name(shard)}.parquet"


def _unit_failed(rundir: RunDir, ps, unit: str, exc: Exception) -> None:
    """Record ``exc`` as the unit's ``failed`` marker and raise it as a ``CuratorError``."""
    rundir.mark_failed(ps.fingerprint, unit, {"stage": ps.id, "error": f"{type(exc).__name__}: {exc}",
                                              "traceback": traceback.format_exc()})
    if isinstance(exc, CuratorError):
        raise exc
    raise RunError(f"stage '{ps.id}' failed on {unit}: {type(exc).__name__}: {exc} "
                   f"(traceback in {rundir.marker(ps.fingerprint, unit, 'failed')})") from exc


def _apply(stage, view: pa.Table, fn=None) -> pa.Table:
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


def _prepare_added(added: pa.Table, stage_id: str, shard: int | None) -> pa.Table:
    """Give augment output its ``sample_id``, ``added_by`` and emission order ``_order``."""
    for col in ("prompt", "response", "messages"):
        if col not in added.column_names:
            from curator.samples import MESSAGE_TYPE

            added = added.append_column(col, pa.nulls(added.num_rows, MESSAGE_TYPE if col == "messages" else pa.string()))
    if "sample_id" in added.column_names:
        added = added.drop_columns(["sample_id"])
    added = pa.table({"sample_id": sample_ids(added), **{c: added.column(c) for c in added.column_names}})
    added = added.append_column("added_by", pa.array([stage_id] * added.num_rows, pa.string()))
    return added.append_column("_order", pa.array(range(added.num_rows), pa.int64()))


def _run_global(plan: Plan, rundir: RunDir, ps, exe, input_hashes: list[str], quiet: bool) -> None:
    """A global stage sees every shard's view (or, ``map_reduce``, every shard's ``map_shard``
    output, computed on ``exe``) at once; its output is split back by shard."""
    if rundir.is_done(ps.fingerprint, "global"):
        return
    shards = range(plan.recipe.shards)
    if ps.stage.map_reduce:
        jobs = [(plan.recipe, str(rundir.root), [ps.index], s, input_hashes, quiet) for s in shards
                if not rundir.is_done(ps.fingerprint, shard_name(s))]
        exe.map(run_map_unit, jobs, f"stage {ps.id} (per shard)")
        parts = [read_parquet(p) for s in shards if (p := _map_output(rundir, ps.fingerprint, s)).exists()]
    else:
        parts = [v for s in shards if (v := shard_view(rundir, plan, ps.index, s)) is not None]
    t0 = time.time()
    whole = pa.concat_tables(parts, promote_options="permissive") if parts else None
    try:
        stage = _get_stage(ps)
        result = _apply(stage, whole, stage.reduce if stage.map_reduce else None) if whole is not None else None
    except Exception as exc:
        rundir.mark_failed(ps.fingerprint, "global", {"stage": ps.id, "error": str(exc),
                                                      "traceback": traceback.format_exc()})
        if isinstance(exc, CuratorError):
            raise
        raise RunError(f"stage '{ps.id}' failed: {type(exc).__name__}: {exc}") from exc
    hashes = {}
    if result is not None and ps.kind == "augment":
        result = _prepare_added(result, ps.id, None)
    shard_of_row = shard_indices(result.column("sample_id"), plan.recipe.shards) if result is not None else None
    for shard in range(plan.recipe.shards):
        if result is None:
            break
        part = result.filter(pc.equal(shard_of_row, shard))
        hashes[shard] = write_parquet(part, rundir.scores(ps.id, shard))
    rundir.mark_done(ps.fingerprint, "global", {"seconds": round(time.time() - t0, 3), "sha256": hashes,
                                                "rows_out": 0 if result is None else result.num_rows})
    for shard in shards:  # map outputs are not needed once the stage is done
        _map_output(rundir, ps.fingerprint, shard).unlink(missing_ok=True)
    fault_point("unit_done")


def _raise_failed(rundir: RunDir) -> None:
    failed = [p for p in rundir.failed_markers() if not p.with_suffix(".done").exists()]
    if failed:
        raise RunError(f"{len(failed)} unit(s) failed; see {failed[0]}")
