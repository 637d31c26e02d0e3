"""glibc malloc settings for a process that allocates and frees many large temporary arrays (the numpy
buffers of every batch): freed memory stays in the heap for the next batch instead of going back to the
OS and being faulted in again, which cost about a sixth of the engine's CPU time (page faults, in
the kernel). The heap then holds at most the largest working set the process had, so a worker gives its
free memory back at the end of each unit (``release_freed_memory``): idle workers do not sit on the
largest shard's working set while the driver runs a global step. Arrow's own pool is emptied once a batch of
a stage (``release_arrow_memory``), not in ingest, whose working set is bounded by its blocks and where the
refaulting cost more than it saved. jemalloc instead of Arrow's default mimalloc lowered the kernel time at
300k rows but raised it at 1M (measured; not used). The glibc parts are no-ops without glibc.
"""

from __future__ import annotations

import ctypes
from functools import cache

import pyarrow as pa

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


@cache
def _libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


def keep_freed_memory() -> None:
    """Serve allocations below 1 GiB from the heap and never trim it below 2 GiB of free space."""
    libc = _libc()
    if libc is not None and hasattr(libc, "mallopt"):
        libc.mallopt(_M_MMAP_THRESHOLD, 1 << 30)
        libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1)


def release_arrow_memory() -> None:
    """Return the free pages of Arrow's pool to the OS. Called once a batch: the pool (mimalloc) otherwise keeps
    what each batch's compute kernels freed, and what it keeps grows over a long unit (~120 MiB over a 187k-row
    quality unit), so a worker's peak grew with shard length rather than batch size."""
    pa.default_memory_pool().release_unused()


def release_freed_memory() -> None:
    """Return free memory to the OS: Arrow's pool (``release_arrow_memory``) and glibc's heap (``malloc_trim(0)``)."""
    release_arrow_memory()
    libc = _libc()
    if libc is not None and hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)
