"""Fault injection for tests: ``CURATOR_FAULT=<point>:<n>`` SIGKILLs this process at the
n-th time it reaches ``<point>`` (points: ``unit_done``, ``before_publish``, ``before_manifest``)."""

from __future__ import annotations

import os
import signal

_hits: dict[str, int] = {}


def fault_point(point: str) -> None:
    spec = os.environ.get("CURATOR_FAULT")
    if not spec:
        return
    name, _, count = spec.partition(":")
    if name != point:
        return
    _hits[point] = _hits.get(point, 0) + 1
    if _hits[point] >= int(count or 1):
        os.kill(os.getpid(), signal.SIGKILL)
