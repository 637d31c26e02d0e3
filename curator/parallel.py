"""Thread parallelism for vectorised work: Arrow kernels, numpy and hashlib release the GIL, so
independent batches are processed on every core a worker has (``set_threads``)."""

from __future__ import annotations

import itertools
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import pyarrow as pa

T = TypeVar("T")
R = TypeVar("R")
_threads = os.cpu_count() or 1


def set_threads(n: int) -> None:
    """The cores this process may use (a pool worker gets its share of the machine)."""
    global _threads
    _threads = max(1, n)
    pa.set_cpu_count(_threads)


def map_ordered(fn: Callable[[T], R], items: Iterable[T]) -> Iterator[R]:
    """``fn(item)`` for each item, in order, with at most one item per thread running and one ready
    ahead: memory stays bounded by a few items whatever the length of ``items``."""
    items = iter(items)
    head = list(itertools.islice(items, 2))
    if _threads == 1 or len(head) < 2:  # nothing to overlap: no threads to start
        yield from map(fn, head)
        yield from map(fn, items)
        return
    with ThreadPoolExecutor(_threads) as pool:
        pending: deque = deque()
        for item in itertools.chain(head, items):
            pending.append(pool.submit(fn, item))
            if len(pending) > _threads:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
