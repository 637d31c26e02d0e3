"""Ray executor: units as Ray tasks, units of model stages on a pool of long-lived actors.

Same contract as ``LocalExecutor.map(plan, units, desc)``: units coordinate only through the run
directory (markers, atomic writes), so the result and its digest do not depend on the executor.
The plan goes into the object store once per call and each task runs ``run_unit(plan, unit)``;
the plan carries its stage classes, so stages registered in-process need no entry point. Each task
asks Ray for its unit's ``cpus`` / ``gpus``. Units that ``uses_model`` run on ``workers`` actors
that call ``run_unit`` repeatedly, so the per-process stage cache loads each model once per actor.
A unit that raises or whose process dies is retried ``retries`` times; then it keeps (or the
driver writes) a ``failed`` marker. This is the only module that imports ``ray``.
"""

from __future__ import annotations

import logging
import os
import sys
from collections import deque
from collections.abc import Sequence
from pathlib import Path

from curator.errors import CuratorError, InputError, RecipeError, RunError
from curator.plan import Plan, Unit
from curator.progress import progress_bar
from curator.worker import run_unit

INSTALL_HINT = "pip install 'safety-curator[ray]'"


def _import_ray():
    try:
        import ray  # optional heavy dependency (the [ray] extra), imported only when this executor is used
    except ImportError as exc:
        raise RecipeError(f"executor 'ray' needs Ray, which is not installed ({exc}); install it with "
                          f"`{INSTALL_HINT}`, or use `executor: {{kind: local}}`") from None
    return ray


class _UnitActor:
    """Runs units one after another in one process, keeping set-up (model) stages between them."""

    def run(self, plan: Plan, unit: Unit) -> dict:
        return run_unit(plan, unit)


def _driver_pythonpath() -> str:
    """The driver's own import roots (not the interpreter's), like ``multiprocessing`` spawn passes."""
    prefixes = {str(Path(p).resolve()) for p in (sys.prefix, sys.base_prefix)}
    paths = []
    for entry in sys.path:
        p = Path(entry or os.getcwd()).resolve()
        if p.is_dir() and not any(str(p).startswith(pre) for pre in prefixes) and str(p) not in paths:
            paths.append(str(p))
    return os.pathsep.join(paths)


class _Slots:
    """``size`` execution slots: plain task submissions, or one actor per slot for model stages."""

    def __init__(self, ray, size: int, cpus: float, gpus: float, actors: bool):
        self.ray, self.actors, self.opts = ray, actors, {"num_cpus": cpus, "num_gpus": gpus}
        if actors:
            self._actor = ray.remote(_UnitActor)
            self.free = [self._new_actor() for _ in range(size)]
        else:
            self._task = ray.remote(run_unit)
            self.free = list(range(size))

    def _new_actor(self):
        return self._actor.options(**self.opts, max_restarts=0).remote()

    def submit(self, slot, plan_ref, unit: Unit):
        if self.actors:
            return slot.run.remote(plan_ref, unit)
        return self._task.options(**self.opts, max_retries=0).remote(plan_ref, unit)

    def replace(self, slot):
        """A slot whose process died: actors are replaced, task slots are reused as they are."""
        if not self.actors:
            return slot
        self.ray.kill(slot, no_restart=True)
        return self._new_actor()

    def close(self, inflight: dict) -> None:
        for ref in inflight:
            self.ray.cancel(ref, force=not self.actors)
        if self.actors:
            for actor in [*self.free, *(slot for _, slot in inflight.values())]:
                self.ray.kill(actor, no_restart=True)


class RayExecutor:
    """Run units on Ray: ``address`` is ``auto`` (``$RAY_ADDRESS``, else a running cluster, else a
    local one), ``local``, or a cluster address (``ray://host:10001`` or ``host:6379``);
    ``workers`` caps the units in flight (and sizes the actor pool of model stages)."""

    name = "ray"

    def __init__(self, address: str = "auto", workers: int = 1, retries: int = 2, quiet: bool = False):
        self.ray = _import_ray()
        self.address, self.workers, self.retries, self.quiet = address or "auto", max(1, workers), retries, quiet
        self.owns_cluster = False
        self._connect()

    def _connect(self) -> None:
        ray = self.ray
        if ray.is_initialized():
            return
        common = {"log_to_driver": not self.quiet, "logging_level": logging.ERROR if self.quiet else logging.WARNING}
        if self.address not in ("auto", "local"):
            ray.init(address=self.address, **common)
            return
        if self.address == "auto" and os.environ.get("RAY_ADDRESS"):
            ray.init(address=os.environ["RAY_ADDRESS"], **common)  # set but unreachable: an error, no fallback
            return
        if self.address == "auto":
            try:
                ray.init(address="auto", **common)
                return
            except ConnectionError:
                pass  # no running cluster: start a private local one
        ray.init(address="local", num_cpus=max(self.workers, os.cpu_count() or 1), include_dashboard=False,
                 runtime_env={"env_vars": {"PYTHONPATH": _driver_pythonpath()}}, **common)
        self.owns_cluster = True

    def close(self) -> None:
        """Shut down the local Ray instance this executor started (a cluster it joined stays up)."""
        if self.owns_cluster and self.ray.is_initialized():
            self.ray.shutdown()
        self.owns_cluster = False

    def __enter__(self) -> RayExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def map(self, plan: Plan, units: Sequence[Unit], desc: str) -> list[dict]:
        """Run every unit of ``plan`` (units of one call run the same stages); results in unit order.
        Failures do not stop other units; after all units settle, the first failed unit's error is raised."""
        if not units:
            return []
        ray = self.ray
        cpus, gpus = max(u.cpus for u in units), max(u.gpus for u in units)
        self._check_feasible(cpus, gpus, units[0].stages)
        slots = _Slots(ray, min(self.workers, len(units)), cpus, gpus, any(u.uses_model for u in units))
        plan_ref = ray.put(plan)
        results: list[dict | None] = [None] * len(units)
        errors: dict[int, Exception] = {}
        attempts = [0] * len(units)
        pending, inflight = deque(range(len(units))), {}
        with progress_bar(desc, len(units), self.quiet) as advance:
            try:
                while pending or inflight:
                    while pending and slots.free:
                        i = pending.popleft()
                        slot = slots.free.pop()
                        inflight[slots.submit(slot, plan_ref, units[i])] = (i, slot)
                    [ref], _ = ray.wait(list(inflight), num_returns=1)
                    i, slot = inflight.pop(ref)
                    try:
                        results[i] = ray.get(ref)
                        slots.free.append(slot)
                        advance()
                        continue
                    except ray.exceptions.RayTaskError as exc:  # the unit raised; its process is fine
                        err, died = exc.cause if isinstance(exc.cause, Exception) else exc, False
                    except ray.exceptions.RayError as exc:  # the process died (killed, OOM, node lost)
                        err, died = exc, True
                    slots.free.append(slots.replace(slot) if died else slot)
                    attempts[i] += 1
                    if attempts[i] <= self.retries and not isinstance(err, (RecipeError, InputError)):
                        pending.append(i)
                        continue
                    errors[i] = self._failure(plan, units[i], err, died, attempts[i])
                    advance()
            finally:
                slots.close(inflight)
        if errors:
            raise errors[min(errors)]
        return results  # type: ignore[return-value]

    def _check_feasible(self, cpus: float, gpus: float, stages: tuple[str, ...]) -> None:
        """On a local instance nothing will ever add resources: fail now instead of waiting forever."""
        if not self.owns_cluster:
            return  # an autoscaling cluster may still add nodes
        have = self.ray.cluster_resources()
        if cpus > have.get("CPU", 0) or gpus > have.get("GPU", 0):
            raise RecipeError(f"stages {list(stages)} need {cpus:g} CPU and {gpus:g} GPU per worker; "
                              f"the local Ray instance has {have.get('CPU', 0):g} CPU and {have.get('GPU', 0):g} GPU "
                              "(connect to a cluster with `executor: {kind: ray, address: ...}`)")

    def _failure(self, plan: Plan, unit: Unit, err: Exception, died: bool, attempts: int) -> Exception:
        """The error to report for a unit that failed ``attempts`` times; writes the ``failed`` marker
        for a dead process (a raising stage wrote its own)."""
        if not died:
            return err if isinstance(err, CuratorError) else RunError(f"{unit.name}: {type(err).__name__}: {err}")
        rundir, steps = plan.rundir, plan.steps(unit)
        ps = next((p for p in steps if not rundir.is_done(p.fingerprint, unit.name)), steps[-1])
        marker = rundir.marker(ps.fingerprint, unit.name, "failed")
        rundir.mark_failed(ps.fingerprint, unit.name, {
            "stage": ps.id, "error": f"worker process died ({type(err).__name__}) on each of {attempts} attempt(s)",
            "traceback": str(err), "executor": "ray"})
        return RunError(f"stage '{ps.id}' failed on {unit.name}: its worker process died {attempts} time(s) "
                        f"({type(err).__name__}); rerun to resume (details in {marker})")
