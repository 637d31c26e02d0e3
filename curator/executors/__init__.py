"""Executors run a plan's units (``curator.plan.Unit``) with ``curator.worker.run_unit``; units
coordinate only through the run directory, so which executor ran them never changes the result."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from curator.plan import Plan, Unit


class Executor(Protocol):
    name: str
    workers: int

    def map(self, plan: Plan, units: Sequence[Unit], desc: str) -> list[dict]:
        """Run every unit of ``plan``; their results (done-marker info) in unit order."""
        ...
