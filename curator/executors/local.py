"""Local executor: ``workers: 1`` runs units in-process; ``workers: N`` uses N spawned processes.

Units are independent (stage, shard) jobs that coordinate only through the run directory, so
their order of completion never changes the result.
"""

from __future__ import annotations

import multiprocessing as mp
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any

from curator.progress import progress_bar


def _init_worker(threads: int) -> None:
    import torch

    torch.set_num_threads(max(1, threads))


class LocalExecutor:
    name = "local"

    def __init__(self, workers: int = 1, quiet: bool = False):
        self.workers = max(1, workers)
        self.quiet = quiet

    def map(self, fn: Callable[[Any], dict], jobs: Sequence[Any], desc: str) -> list[dict]:
        """Run ``fn`` on every job; results in job order. The first exception is re-raised."""
        results: list[dict | None] = [None] * len(jobs)
        with progress_bar(desc, len(jobs), self.quiet) as advance:
            if self.workers == 1 or len(jobs) <= 1:
                for i, job in enumerate(jobs):
                    results[i] = fn(job)
                    advance()
                return results  # type: ignore[return-value]
            import os

            threads = max(1, (os.cpu_count() or 1) // self.workers)
            ctx = mp.get_context("spawn")
            with ProcessPoolExecutor(self.workers, mp_context=ctx, initializer=_init_worker,
                                     initargs=(threads,)) as pool:
                futures = {pool.submit(fn, job): i for i, job in enumerate(jobs)}
                for fut in as_completed(futures):
                    results[futures[fut]] = fut.result()
                    advance()
        return results  # type: ignore[return-value]
