"""The files a finished run's manifest lists, their sizes, and the cheap check that they are still as the run
wrote them before anything reads them: each exists and has the size the manifest's ``sizes`` recorded (a stat,
no hashing; ``curator verify`` re-hashes them). A manifest without ``sizes`` (an older curator wrote it) is
checked for missing files only. A finished run's ``OUTPUT_DIRS`` hold only the files its manifest lists: a run
removes what an earlier run of another recipe left there (``remove_unlisted``), because the views read every
file of those directories."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from curator.errors import damaged_run

OUTPUT_DIRS = ("input", "scores", "ledger", "added", "quarantine")  # the shard files the manifest lists


def listed_files(manifest: dict) -> list[str]:
    """Run-relative paths of every file ``manifest`` lists: each shard's files and the dataset's."""
    dataset = manifest.get("dataset") or {}
    listed = {rel for shard in manifest.get("shards") or [] for rel in shard.get("files") or {}}
    listed |= {f"{dataset.get('path', 'dataset')}/{name}" for name in dataset.get("files") or {}}
    return sorted(listed)


def unlisted(root: Path, listed: set[str], dirs: Iterable[str] = OUTPUT_DIRS) -> list[str]:
    """Run-relative paths of the files under ``dirs`` of run directory ``root`` that are not in ``listed``."""
    found = []
    for top in dirs:
        for path in sorted((root / top).rglob("*")) if (root / top).is_dir() else []:
            rel = path.relative_to(root).as_posix()
            if path.is_file() and rel not in listed:
                found.append(rel)
    return found


def remove_unlisted(root: Path, listed: set[str]) -> None:
    """Remove the files under ``OUTPUT_DIRS`` that are not in ``listed`` (this run's), and the folders that leaves
    empty: an earlier run with more shards, or a stage this recipe no longer has, left them, and the views would
    read them (a ledger row counted twice)."""
    for rel in unlisted(root, listed):
        path = root / rel
        path.unlink()
        for folder in path.parents:
            if folder == root or any(folder.iterdir()):
                break
            folder.rmdir()


def file_sizes(root: Path, manifest: dict) -> dict[str, int]:
    """Bytes of every file ``manifest`` lists, as they are in run directory ``root`` now."""
    return {rel: (root / rel).stat().st_size for rel in listed_files(manifest)}


def _problem(root: Path, rel: str, recorded: int | None) -> str | None:
    path = root / rel
    if not path.is_file():
        return f"{rel} is missing"
    size = path.stat().st_size
    if recorded is not None and size != recorded:
        return f"{rel} has {size} bytes, the run wrote {recorded}"
    return None


def check_intact(root: Path, manifest: dict) -> None:
    """Raise ``DamagedRunError`` (exit 2) naming the first file ``manifest`` lists that is missing from run
    directory ``root`` or whose size differs from the one recorded, with ``curator verify`` and the fix."""
    sizes = manifest.get("sizes") or {}
    for rel in listed_files(manifest):
        problem = _problem(Path(root), rel, sizes.get(rel))
        if problem:
            raise damaged_run(root, ValueError(f"{problem}: the run directory changed after the run"))
