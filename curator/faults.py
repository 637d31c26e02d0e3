"""Fault injection for tests: ``CURATOR_FAULT=<point>:<n>`` SIGKILLs this process at the
n-th time it reaches ``<point>``. Points: ``unit_done``, ``before_publish``, ``before_manifest``,
``write:<kind>`` just before an atomic rename (kinds: scores, markers, ledger, input, quarantine,
added, cache, manifest, stats, dataset, dataset-swap)."""

from __future__ import annotations

import os
import signal

_hits: dict[str, int] = {}


def fault_point(point: str) -> None:
    spec = os.environ.get("CURATOR_FAULT")
    if not spec:
        return
    name, _, count = spec.rpartition(":")
    if name != point:
        return
    _hits[point] = _hits.get(point, 0) + 1
    if _hits[point] >= int(count or 1):
        os.kill(os.getpid(), signal.SIGKILL)
