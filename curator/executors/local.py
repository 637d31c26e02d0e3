"""Local executor: ``workers: 1`` runs units in-process; ``workers: N`` uses N spawned processes.

Units are independent jobs that coordinate only through the run directory, so their order of
completion never changes the result. Each job is ``run_unit(plan, unit)``: the plan is pickled
with it, never rebuilt. The pool starts lazily, at the first phase worth it (more than one unit, and
inputs of at least ``POOL_MIN_BYTES``: below that, starting processes costs more than it saves), and
then serves every later phase of the run (``close`` ends it), so workers start once and keep their
set-up stages between phases.

Workers ignore Ctrl-C (the driver stops them: queued units are cancelled, running ones killed, and a rerun redoes
them) and die with the driver, even when it is killed by SIGKILL (Linux's parent-death signal, elsewhere a thread
that watches the parent pid), so they never outlive it holding its caller's pipes.
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing as mp
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import contextmanager

from curator.allocator import keep_freed_memory, release_freed_memory
from curator.parallel import set_threads
from curator.plan import Plan, Unit
from curator.progress import progress_bar
from curator.worker import run_unit

log = logging.getLogger("curator")

POOL_MIN_BYTES = 32 << 20
PR_SET_PDEATHSIG = 1  # prctl option (linux/prctl.h): the signal this process gets when its parent thread exits


def _init_worker(threads: int, driver: int) -> None:
    """Ignore Ctrl-C, die with ``driver`` (the pid that started the pool), and share the cores between workers:
    torch (imported later by model stages) reads the env."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with(driver)
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(max(1, threads))
    set_threads(threads)
    keep_freed_memory()
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(max(1, threads))


def _die_with(driver: int) -> None:
    """End this process when ``driver`` dies: SIGKILL from the kernel where ``prctl`` exists (Linux), else a
    thread that polls the parent pid; a driver already gone ends it now."""
    if not _parent_death_signal(signal.SIGKILL):
        threading.Thread(target=_watch_parent, args=(driver,), daemon=True).start()
    if os.getppid() != driver:
        os._exit(1)


def _parent_death_signal(sig: int) -> bool:
    """Ask the kernel for ``sig`` when the parent dies; False where ``prctl`` is missing."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        return ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(sig)) == 0
    except (OSError, AttributeError):
        return False


def _watch_parent(driver: int) -> None:
    while os.getppid() == driver:
        time.sleep(1.0)
    os._exit(1)


@contextmanager
def _starting() -> Iterator[None]:
    """Workers started in this block inherit SIGINT ignored, so a Ctrl-C while they import prints nothing; one
    that comes meanwhile stays pending (blocked) and reaches the driver when the block ends."""
    if threading.current_thread() is not threading.main_thread():  # only the main thread sets signal handlers
        yield
        return
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    handler = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, handler)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)


def _pooled_unit(plan: Plan, unit: Unit) -> dict:
    """``run_unit`` in a worker, which then gives back the free memory its unit's working set left."""
    try:
        return run_unit(plan, unit)
    finally:
        release_freed_memory()


def _ready() -> None:
    """A job that only makes a new worker import what units need (``warm_up``)."""


def _workers_can_import(plan: Plan) -> bool:
    """Whether worker processes can import every stage class of ``plan``: not so for one defined in an interactive
    ``__main__`` (a notebook, ``python -c``, stdin), which has no file a new process could run. Logged once."""
    main = sys.modules.get("__main__")
    stranded = [ps.cls.__qualname__ for ps in plan.stages
                if ps.cls.__module__ == "__main__" and not getattr(main, "__file__", None)]
    if stranded and stranded[0] not in _WARNED:
        _WARNED.add(stranded[0])
        log.warning("stage class %s is defined in an interactive session, which worker processes cannot import: its "
                    "run's units run in this process (define it in a module to use several workers)", stranded[0])
    return not stranded


_WARNED: set[str] = set()


class LocalExecutor:
    name = "local"

    def __init__(self, workers: int = 1, quiet: bool = False):
        keep_freed_memory()  # this process runs units too (global stages, small runs)
        self.workers = max(1, workers)
        self.quiet = quiet
        self._pool: ProcessPoolExecutor | None = None

    def _get_pool(self) -> ProcessPoolExecutor:
        if self._pool is None:
            threads = max(1, (os.cpu_count() or 1) // self.workers)
            # read by numpy's OpenBLAS when a worker imports it (before the initializer runs): without it each
            # worker starts a thread per core, which spin while the worker works (~1.5 % of the CPU time)
            os.environ.setdefault("OPENBLAS_NUM_THREADS", str(threads))
            self._pool = ProcessPoolExecutor(self.workers, mp_context=mp.get_context("spawn"),
                                             initializer=_init_worker, initargs=(threads, os.getpid()))
        return self._pool

    def _submit(self, fn, *args):
        """``fn(*args)`` on the pool (started here, in this thread: the parent-death signal follows the thread
        that starts a worker)."""
        with _starting():
            return self._get_pool().submit(fn, *args)

    def warm_up(self, input_bytes: int) -> None:
        """Start the worker processes now if the run will want them (``input_bytes`` of inputs, as ``map``
        judges), so that they import while the caller does other work (hashing the inputs)."""
        if self.workers > 1 and input_bytes >= POOL_MIN_BYTES:
            for _ in range(self.workers):
                self._submit(_ready)

    def close(self, wait: bool = True) -> None:
        """Stop the worker processes (the next ``map`` starts new ones); ``wait=False``: without waiting for
        idle workers to exit (their interpreters' teardown, ~0.1 s, overlaps what the caller does next)."""
        if self._pool is not None:
            try:
                self._pool.shutdown(wait=wait)
            except KeyboardInterrupt:  # Ctrl-C while running units finish: stop them too
                self.stop()
                raise
            self._pool = None

    def stop(self) -> None:
        """Stop the worker processes now: queued units are cancelled, running ones killed (a rerun redoes them)."""
        if self._pool is not None:
            workers = list((self._pool._processes or {}).values())  # Python 3.14: ProcessPoolExecutor.kill_workers
            self._pool.shutdown(wait=False, cancel_futures=True)
            for process in workers:
                process.kill()
            for process in workers:
                process.join()
            self._pool = None

    def map(self, plan: Plan, units: Sequence[Unit], desc: str) -> list[dict]:
        """Run every unit of ``plan``; results in unit order. The first exception is re-raised."""
        results: list[dict | None] = [None] * len(units)
        with progress_bar(desc, len(units), self.quiet) as advance:
            if self.workers == 1 or len(units) <= 1 or (self._pool is None and plan.input_bytes < POOL_MIN_BYTES) \
                    or not _workers_can_import(plan):
                for i, unit in enumerate(units):
                    results[i] = run_unit(plan, unit)
                    advance()
                return results  # type: ignore[return-value]
            try:
                futures = {self._submit(_pooled_unit, plan, unit): i for i, unit in enumerate(units)}
                for fut in as_completed(futures):
                    results[futures[fut]] = fut.result()
                    advance()
            except KeyboardInterrupt:  # Ctrl-C, or SIGTERM (``curator.cli.entry``): the workers ignore it
                self.stop()
                raise
            except BaseException:
                self.close()  # lets the other units finish; a failed or broken pool is not reused
                raise
        return results  # type: ignore[return-value]
