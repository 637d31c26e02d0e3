"""Run a recipe: plan -> ingest (phase 0) -> stage phases -> finalize (ledger, dataset, manifest).

Every unit writes its outputs atomically and then a ``done`` marker; a rerun skips finished
units, so a killed run resumes and ends byte-identical to an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from curator.errors import InputError, RecipeError, RunError
from curator.executors import Executor
from curator.executors.local import LocalExecutor
from curator.executors.ray import RayExecutor
from curator.finalize import finalize
from curator.ingest import run_ingest
from curator.input_files import expand_inputs
from curator.inputs import override_inputs
from curator.io import atomic_path, bytes_on_disk, file_states, sha256_path, write_json
from curator.plan import InputFile, Plan, output_scores_problem, plan_ingest, plan_stages, score_columns
from curator.recipe import Recipe, load_recipe
from curator.registry import get_stage
from curator.result import RunResult
from curator.rundir import RunDir, RunLock
from curator.sources import source_scheme
from curator.worker import finished, run_unit


def run(recipe: Recipe | str | Path | dict, run_dir: str | Path, *, inputs: list[str] | None = None,
        workers: int | None = None, executor: str | None = None, quiet: bool = False, wait: float = 0.0,
        on_finish: Callable[[RunResult], None] | None = None,
        prepare: Callable[[Path], None] | None = None) -> RunResult:
    """Run ``recipe`` into ``run_dir`` (resuming whatever is already finished there); ``inputs``
    (``[NAME=]PATH``) replace recipe inputs (``curator.inputs.override_inputs``); ``prepare`` is called with the
    run directory once its lock is held, before the inputs are looked at (``curator.apply`` writes its data file
    there), and ``on_finish`` with the result before the lock is released. The previous run's manifest is removed
    before anything is written, so a run that stops part-way leaves a directory that reads as not finished."""
    recipe = recipe if isinstance(recipe, Recipe) else load_recipe(recipe)
    recipe, extra_roots = override_inputs(recipe, inputs)
    recipe = expand_inputs(recipe, extra_roots)
    rundir = RunDir(Path(run_dir).resolve())
    _check_output_scores(recipe, rundir)
    _check_device(recipe, executor or recipe.executor.kind)
    rundir.check_is_run_dir()
    rundir.root.mkdir(parents=True, exist_ok=True)
    with _locked(rundir.root, wait):
        if prepare is not None:
            prepare(rundir.root)
        paths = _input_paths(recipe, extra_roots, rundir)
        started = time.time()
        exe = _executor(recipe, executor, workers, quiet)
        warm_up = isinstance(exe, LocalExecutor) and not rundir.manifest.exists()  # (a finished run has nothing to do)
        rundir.unpublish()  # from here until the new manifest, the directory reads as not finished
        _remove_stale_temporaries(rundir.root)
        with atomic_path(rundir.recipe) as tmp:
            tmp.write_text(recipe.text, encoding="utf-8")
        try:
            if warm_up:
                exe.warm_up(bytes_on_disk(paths))  # the workers start while the inputs are hashed
            states = [file_states(p) for p in paths]
            with ThreadPoolExecutor(min(len(paths), 4 * (os.cpu_count() or 1)) or 1) as pool:  # hashlib releases the GIL
                files = [InputFile(p, h) for p, h in zip(paths, pool.map(sha256_path, paths))]
            plan = plan_ingest(recipe, rundir, files, quiet)
            _record_plan(plan)
            # Input files are read on the driver's machine: Ray workers may not see them.
            t0 = time.time()
            ingested = run_ingest(plan, exe if isinstance(exe, LocalExecutor) else LocalExecutor(1, quiet))
            ingest_seconds = round(time.time() - t0, 3)
            _check_unchanged(paths, states)
            plan = plan_stages(plan, ingested.schema)
            _record_plan(plan)
            for ps in plan.stages:
                rundir.claim_outputs(f"stage-{ps.id}", ps.fingerprint, [rundir.scores(ps.id, 0).parent])
            timings = {"phase:ingest": ingest_seconds, **_run_phases(plan, exe)}
        finally:
            if isinstance(exe, LocalExecutor):
                exe.close(wait=False)  # no unit is running: a failed map has already waited for its pool
        _raise_failed(rundir)
        result = finalize(plan, ingested, {"kind": exe.name, "workers": exe.workers}, started, timings)
        if on_finish is not None:
            on_finish(result)  # still holding the lock: a run waiting for it cannot change the files read
        return result


def _check_output_scores(recipe: Recipe, rundir: RunDir) -> None:
    """``output.scores`` names only columns the recipe's score stages declare (or ``flag_reason``): a recipe error,
    raised before any work."""
    problem = output_scores_problem(recipe, score_columns(recipe, rundir.root)) if recipe.output.scores else None
    if problem:
        raise RecipeError(problem)


def _check_device(recipe: Recipe, executor: str) -> None:
    """``device: cuda`` for a local run on a machine whose torch sees no CUDA device is a recipe error before any
    work (a model stage would fail on its first unit). Ray workers may have the GPUs the driver lacks."""
    if recipe.device != "cuda" or executor != "local" or not any(get_stage(s.use).uses_model for s in recipe.stages):
        return
    import torch  # a model stage runs: torch is needed anyway

    if not torch.cuda.is_available():
        raise RecipeError(f"device: cuda, but torch {torch.__version__} sees no CUDA device on this machine; use "
                          "device: auto (CUDA when there is one, else CPU) or cpu")


@contextlib.contextmanager
def _locked(root: Path, wait: float):
    """Hold the run directory's lock; another run holding it is a usage conflict (``RecipeError``, exit 2), not a
    failed run."""
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(RunLock(root, wait))
        except RunError as exc:
            raise RecipeError(str(exc)) from None
        yield


def _record_plan(plan: Plan) -> None:
    """``cache/plan.json``: the planned stages in run order, with their units in total (each unit leaves a done
    marker), for ``curator status`` while the run has not finished."""
    units = {plan.ingest.id: len(plan.input_units()) + plan.recipe.shards + 1}  # input parts, shards, the whole
    for phase in plan.phases():
        units.update(dict.fromkeys(phase.stages, len(phase.units) + (1 if phase.final else 0)))
    write_json([{"id": ps.id, "name": ps.spec.use, "kind": ps.kind, "fingerprint": ps.fingerprint,
                 "units": units[ps.id]} for ps in (plan.ingest, *plan.stages)], plan.rundir.root / "cache" / "plan.json")


def _check_unchanged(paths: list[Path], states: list[list[tuple[str, int, int]]]) -> None:
    """Every input is as it was when it was hashed (size and modification time of each file): the manifest's
    hashes must describe the bytes the run read."""
    for path, before in zip(paths, states):
        if file_states(path) != before:
            raise InputError(f"{path}: changed while this run read it (its size or modification time differ from "
                             "when it was hashed), so the run's hashes would not describe what it read; run again "
                             "once the input is complete (the next run hashes and reads it afresh)")


def _run_phases(plan: Plan, exe: Executor) -> dict[str, float]:
    """Each phase's unfinished units on ``exe``, then its global unit here; seconds per stage id."""
    timings: dict[str, float] = {}
    for phase in plan.phases():
        t0 = time.time()
        if phase.final is None or not finished(plan, phase.final):
            if phase.units:
                exe.map(plan, [u for u in phase.units if not finished(plan, u)], phase.desc)
            if phase.final is not None:
                run_unit(plan, phase.final)
        for sid in phase.stages:
            timings[sid] = round(time.time() - t0, 3)
            _check_one_type(plan, sid)
    return timings


def _check_one_type(plan: Plan, stage_id: str) -> None:
    """Each column of a score stage's shards has one type (null-only shards aside): a ``RunError`` naming the stage,
    the column and two shards otherwise (the views would read the column as text, and rules compare text)."""
    ps = next(p for p in plan.stages if p.id == stage_id)
    if ps.kind != "score":
        return
    seen: dict[str, tuple[pa.DataType, str]] = {}
    for path in sorted(plan.rundir.scores(stage_id, 0).parent.glob("shard-*.parquet")):
        for field in pq.read_schema(path):
            if pa.types.is_null(field.type):
                continue
            first = seen.setdefault(field.name, (field.type, path.name))
            if first[0] != field.type:
                raise RunError(f"stage '{stage_id}' wrote column '{field.name}' as {first[0]} in {first[1]} and as "
                               f"{field.type} in {path.name}; a stage's column must have one type in every shard "
                               "(cast it in process_batch, and bump the stage's version so that its shards are redone)")


def _input_paths(recipe: Recipe, extra_roots: tuple[Path, ...], rundir: RunDir) -> list[Path]:
    """The recipe's inputs, which must exist; a missing one is named together with the first damaged file of
    this run directory if there is one (it cannot be redone without the input)."""
    try:
        paths = recipe.input_paths(extra_roots)
        missing = [p for p in paths if not source_scheme(p) and not p.exists()]
        if missing:
            raise InputError(f"{missing[0]}: input not found")
        return paths
    except InputError as exc:
        damaged = rundir.damaged() if (rundir.root / "markers").is_dir() else []
        if not damaged:
            raise
        path, problem = damaged[0]
        raise InputError(f"{exc}; {path} is damaged ({problem}) and cannot be redone without that input "
                         f"({len(damaged)} damaged file(s)): restore the input unchanged and run again, or run "
                         "into a new directory") from None


def _remove_stale_temporaries(root: Path) -> None:
    """Temporary files and dataset staging dirs left by a killed run (we hold the lock)."""
    for tmp in root.rglob(".*.tmp"):
        tmp.unlink(missing_ok=True)
    for staging in root.glob(".dataset.*"):
        shutil.rmtree(staging, ignore_errors=True)


def _executor(recipe: Recipe, override: str | None, workers: int | None, quiet: bool) -> Executor:
    kind = override or recipe.executor.kind
    n = workers or recipe.executor.workers
    if kind == "ray":
        return RayExecutor(address=recipe.executor.address, workers=n, retries=recipe.executor.retries, quiet=quiet)
    return LocalExecutor(n, quiet)


def _raise_failed(rundir: RunDir) -> None:
    failed = [p for p in rundir.failed_markers() if not p.with_suffix(".done").exists()]
    if failed:
        raise RunError(f"{len(failed)} unit(s) failed; see {failed[0]}")
