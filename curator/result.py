"""What a finished run returns (``curator.run``): its directory, manifest and dataset digest, and accessors for
the cleaned dataset, the ledger and the scores (read from the run directory on each access, while it still holds
this run: a ``RunError`` once it has been run again)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from curator.errors import InputError, RunError


@dataclass(frozen=True)
class RunResult:
    run_dir: Path
    manifest: dict
    digest: str

    @classmethod
    def load(cls, run_dir: str | Path) -> RunResult:
        """The result of a finished run directory."""
        from curator.manifest import read_manifest  # start-up time: `import curator` stays light

        manifest = read_manifest(existing_dir(run_dir))
        return cls(Path(run_dir).resolve(), manifest, manifest["dataset"]["digest"])

    def _check_current(self) -> None:
        """The run directory still holds this run (not a later run of it): a ``RunError`` saying so otherwise."""
        from curator.manifest import read_manifest  # start-up time: `import curator` stays light

        try:
            now = read_manifest(self.run_dir).get("run_id")
        except RunError:
            now = None
        if now != self.manifest.get("run_id"):
            raise RunError(f"{self.run_dir}: this result is of an earlier run of the directory, which has been run "
                           f"again since{'' if now else ' (and has not finished)'}; use "
                           "curator.RunResult.load(run_dir) for the run it holds now")

    @property
    def counts(self) -> dict:
        return self.manifest["totals"]

    @property
    def dataset(self):
        """The cleaned data as a ``datasets.Dataset`` (``datasets.load_from_disk(RUN_DIR/dataset)``); a file the
        manifest lists that is missing or changed in size is a ``DamagedRunError`` (``curator.run_files``)."""
        import datasets  # start-up time: datasets (~1 s)

        from curator.run_files import check_intact  # start-up time: `import curator` stays light

        self._check_current()
        check_intact(self.run_dir, self.manifest)
        return datasets.load_from_disk(str(self.run_dir / "dataset"))

    def _view(self, name: str) -> pa.Table:
        from curator.query import connect  # start-up time: duckdb

        self._check_current()
        return connect(self.run_dir).sql(f"SELECT * FROM {name}").to_arrow_table()

    @property
    def ledger(self) -> pa.Table:
        """One row per input row and added sample: ``sample_id, status, stage, reason, rule, input_idx, input_row``."""
        return self._view("ledger")

    @property
    def scores(self) -> pa.Table:
        """``sample_id`` and every score column, one row per canonical sample (the ``scores`` view)."""
        return self._view("scores")


def existing_dir(run_dir: str | Path) -> Path:
    """``run_dir`` as a ``Path``; ``InputError`` naming it if it does not exist or is not a directory (before the
    run's files are looked for in it)."""
    path = Path(run_dir)
    if not path.is_dir():
        problem = "is not a directory" if path.exists() else "does not exist"
        raise InputError(f"{path}: {problem}; give a run directory (the one `curator run -o` or "
                         "`curator.run(recipe, run_dir)` wrote)")
    return path
