"""The engine's allocator settings: Arrow allocates from jemalloc in processes that run units, unless the user
chose a pool with ``ARROW_DEFAULT_MEMORY_POOL`` (each case in a fresh process: the pool is process-wide)."""

import os
import subprocess
import sys

import pyarrow as pa
import pytest

PROBE = "from curator.allocator import keep_freed_memory; keep_freed_memory(); import pyarrow as pa; " \
        "print(pa.default_memory_pool().backend_name)"


def _backend(**env: str) -> str:
    clean = {k: v for k, v in os.environ.items() if k != "ARROW_DEFAULT_MEMORY_POOL"}
    out = subprocess.run([sys.executable, "-c", PROBE], env={**clean, **env}, capture_output=True, text=True, check=True)
    return out.stdout.strip()


def _has_jemalloc() -> bool:
    try:
        pa.jemalloc_memory_pool()
        return True
    except NotImplementedError:
        return False


@pytest.mark.skipif(not _has_jemalloc(), reason="this pyarrow is built without jemalloc")
def test_units_allocate_from_jemalloc():
    assert _backend() == "jemalloc"


def test_a_pool_the_user_chose_is_kept():
    assert _backend(ARROW_DEFAULT_MEMORY_POOL="system") == "system"
