"""glibc malloc settings for a process that allocates and frees many large temporary arrays (the numpy
buffers of every batch): freed memory stays in the heap for the next batch instead of going back to the
OS and being faulted in again, which cost about a sixth of the engine's CPU time (page faults, in
the kernel). The heap then holds at most the largest working set the process had. No-op without glibc.
"""

from __future__ import annotations

import ctypes

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


def keep_freed_memory() -> None:
    """Serve allocations below 1 GiB from the heap and never trim it below 2 GiB of free space."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(_M_MMAP_THRESHOLD, 1 << 30)
        libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1)
    except (OSError, AttributeError):
        return
