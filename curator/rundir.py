"""Run-directory layout (DESIGN §5), completion markers and the run lock.

Executors coordinate only through these files, so ``status``, ``query``, ``gate`` and
``verify`` work the same whichever executor produced a run. A done marker lists the files its unit
wrote (``outputs``: run-relative path -> size and sha256); the driver trusts a marker only after
``verify_done`` found them unchanged, so a rerun redoes a unit whose files were truncated, deleted or
altered since, and says which file.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from curator.errors import RecipeError, RunError
from curator.io import sha256_file, write_json

log = logging.getLogger("curator")


def shard_name(shard: int) -> str:
    return f"shard-{shard:05d}"


@dataclass(frozen=True)
class RunDir:
    root: Path

    # -- layout ----------------------------------------------------------------------------------
    @property
    def recipe(self) -> Path:
        return self.root / "recipe.yaml"

    @property
    def manifest(self) -> Path:
        return self.root / "manifest.json"

    @property
    def stats(self) -> Path:
        return self.root / "stats.json"

    @property
    def dataset(self) -> Path:
        return self.root / "dataset"

    def input_shard(self, shard: int) -> Path:
        return self.root / "input" / f"{shard_name(shard)}.parquet"

    def scores(self, stage_id: str, shard: int) -> Path:
        return self.root / "scores" / stage_id / f"{shard_name(shard)}.parquet"

    def ledger(self, shard: int) -> Path:
        return self.root / "ledger" / f"{shard_name(shard)}.parquet"

    def ingest_ledger(self, shard: int) -> Path:
        """Ledger rows decided at ingest (duplicates, quarantined rows) for one shard."""
        return self.root / "cache" / "ingest-ledger" / f"{shard_name(shard)}.parquet"

    def added(self, shard: int) -> Path:
        return self.root / "added" / f"{shard_name(shard)}.parquet"

    def quarantine(self, shard: int) -> Path:
        return self.root / "quarantine" / f"{shard_name(shard)}.parquet"

    def cache(self, key: str) -> Path:
        return self.root / "cache" / key

    def marker(self, fingerprint: str, unit: str, state: str = "done") -> Path:
        return self.root / "markers" / fingerprint / f"{unit}.{state}"

    def check_is_run_dir(self) -> None:
        """Refuse an existing directory that holds files but is not a run directory (no ``.lock``, which every
        run creates first, nor ``markers/``): a run deletes and rewrites ``input/``, ``scores/``, ``dataset/``...
        there, so it must never adopt a folder of the user's own files."""
        if not self.root.exists():
            return
        if not self.root.is_dir():
            raise RecipeError(f"{self.root}: exists and is not a directory; give a new or empty directory as the run "
                              "directory (-o)")
        if any(self.root.iterdir()) and not ((self.root / ".lock").is_file() or (self.root / "markers").is_dir()):
            raise RecipeError(f"{self.root}: this directory holds files but is not a curator run directory; a run "
                              "deletes and rewrites input/, scores/, dataset/ and more in its run directory, so give "
                              "a new or empty directory as the run directory (-o)")

    def unpublish(self) -> None:
        """Remove ``manifest.json``; a run does this under the lock before it changes anything, so that until it
        writes its own manifest the directory reads as not finished (``status``, ``gate``, ``verify``,
        ``report``), never as the previous run's result over a mix of old and new files."""
        self.manifest.unlink(missing_ok=True)

    # -- markers ---------------------------------------------------------------------------------
    def is_done(self, fingerprint: str, unit: str) -> bool:
        """Has ``unit`` a done marker that can be read? (One that cannot is removed, with a log line.)"""
        return self._done_info(fingerprint, unit) is not None

    def read_done(self, fingerprint: str, unit: str) -> dict:
        return json.loads(self.marker(fingerprint, unit).read_text())

    def _done_info(self, fingerprint: str, unit: str, step: str | None = None) -> dict | None:
        """What ``unit``'s done marker records; None when there is none, or when it is not a JSON object
        (then it is removed, with a log line: the unit is redone)."""
        marker = self.marker(fingerprint, unit)
        if not marker.exists():
            return None
        try:
            info = json.loads(marker.read_text())
        except (OSError, ValueError):
            info = None
        if not isinstance(info, dict):
            log.warning("%s: unreadable done marker; redoing %s%s", marker, unit, f" of {step}" if step else "")
            marker.unlink(missing_ok=True)
            return None
        return info

    def verify_done(self, fingerprint: str, unit: str, step: str) -> bool:
        """Is ``unit`` of ``step`` done, with every file its marker lists unchanged (size, then sha256)? A
        marker that cannot be read or whose files changed is removed, with a log line naming the file."""
        info = self._done_info(fingerprint, unit, step)
        if info is None:
            return False
        marker = self.marker(fingerprint, unit)
        outputs = info.get("outputs", {})
        for rel, want in outputs.items():
            problem = _changed(self.root / rel, want)
            if problem:
                log.warning("%s: %s; redoing %s of %s", self.root / rel, problem, unit, step)
                marker.unlink(missing_ok=True)
                return False
        return True

    def damaged(self) -> list[tuple[Path, str]]:
        """(file, how it changed) for every run-directory file a done marker lists (not the intermediate
        files under ``cache/`` that a finished step removes)."""
        found = []
        for marker in sorted((self.root / "markers").glob("*/*.done")):
            try:
                info = json.loads(marker.read_text())
            except (OSError, ValueError):
                continue
            outputs = info.get("outputs", {}) if isinstance(info, dict) else {}
            found += [(self.root / rel, p) for rel, want in outputs.items()
                      if (not rel.startswith("cache/") or rel.startswith("cache/ingest-ledger/"))
                      and (p := _changed(self.root / rel, want))]
        return found

    def recorded_hashes(self, fingerprints: Sequence[str]) -> dict[str, str]:
        """Run-relative path -> sha256 of every output the done markers of ``fingerprints`` record (a record of the
        files independent of the manifest). Reads only: a marker that cannot be read is skipped."""
        found: dict[str, str] = {}
        for fp in fingerprints:
            for marker in sorted((self.root / "markers" / fp).glob("*.done")):
                try:
                    info = json.loads(marker.read_text())
                except (OSError, ValueError):
                    continue
                outputs = info.get("outputs") if isinstance(info, dict) else None
                found.update({rel: want.get("sha256") for rel, want in (outputs or {}).items() if isinstance(want, dict)})
        return found

    def mark_done(self, fingerprint: str, unit: str, info: dict) -> None:
        write_json(info, self.marker(fingerprint, unit))
        self.marker(fingerprint, unit, "failed").unlink(missing_ok=True)

    def mark_failed(self, fingerprint: str, unit: str, info: dict) -> None:
        write_json(info, self.marker(fingerprint, unit, "failed"))

    def failed_markers(self) -> list[Path]:
        return sorted((self.root / "markers").glob("*/*.failed"))

    def claim_outputs(self, name: str, fingerprint: str, outputs: Sequence[Path]) -> None:
        """Output directories are shared by every fingerprint of one step (``scores/<stage id>/``,
        ``input/``), so ``cache/owners/<name>`` records which fingerprint wrote them last. When another
        one did, done markers can no longer vouch for the files (a recipe switched A -> B -> A would
        reuse A's markers with B's outputs): both fingerprints' markers and the outputs are removed and
        the step runs again. Outputs without the record (an older curator wrote them) are treated the same
        way: their owner is unknown, so the step runs once more."""
        stamp = self.root / "cache" / "owners" / name
        owner = stamp.read_text(encoding="utf-8").strip() if stamp.exists() else None
        if owner == fingerprint:
            return
        if owner is not None or any(out.exists() for out in outputs):
            for fp in {owner, fingerprint} - {None}:
                shutil.rmtree(self.root / "markers" / fp, ignore_errors=True)
            for out in outputs:
                shutil.rmtree(out, ignore_errors=True)
        stamp.parent.mkdir(parents=True, exist_ok=True)
        tmp = stamp.with_name(f".{name}.tmp")
        tmp.write_text(fingerprint, encoding="utf-8")
        os.replace(tmp, stamp)


def _changed(path: Path, want: dict) -> str | None:
    """How ``path`` differs from its recorded ``{"size", "sha256"}``, or None."""
    if not path.is_file():
        return "missing"
    size = path.stat().st_size
    if size != want["size"]:
        return f"{size} bytes, its done marker recorded {want['size']}"
    if sha256_file(path) != want["sha256"]:
        return "content changed since its done marker recorded its sha256"
    return None


class RunLock:
    """An exclusive ``flock`` on ``RUN_DIR/.lock``: a second run on the same directory gets a
    clear error, or waits up to ``wait_seconds``."""

    def __init__(self, root: Path, wait_seconds: float = 0.0):
        self.path = root / ".lock"
        self.wait_seconds = wait_seconds
        self._fh = None

    def __enter__(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.path, "a+")
        deadline = time.monotonic() + self.wait_seconds
        while True:
            try:
                fcntl.flock(self._fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    self._fh.seek(0)
                    owner = self._fh.read().strip() or "another process"
                    self._fh.close()
                    raise RunError(
                        f"{self.path.parent}: run directory is in use by {owner}; wait for it to finish, "
                        "use another run directory, or pass --wait SECONDS (wait= in Python)"
                    ) from None
                time.sleep(0.2)
        self._fh.seek(0)
        self._fh.truncate()
        self._fh.write(f"pid {os.getpid()}")
        self._fh.flush()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fh is not None:
            fcntl.flock(self._fh, fcntl.LOCK_UN)
            self._fh.close()
