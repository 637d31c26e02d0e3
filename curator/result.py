"""What a finished run returns (``curator.run``): its directory, manifest and dataset digest."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RunResult:
    run_dir: Path
    manifest: dict
    digest: str

    @property
    def counts(self) -> dict:
        return self.manifest["totals"]
