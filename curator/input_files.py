"""Inputs that name many files: a glob pattern (``data/*.jsonl``, ``corpus/**/*.jsonl.gz``) or a directory of data
files (the shards another tool wrote, not a ``datasets`` ``save_to_disk`` directory), expanded before a run into
one input per file, in path order.

Every file becomes an input of its own (its rows' ``input_idx``, its sha256 in the manifest, read in parallel) that
keeps the recipe input's name (the pattern's directory: ``data/*.jsonl`` -> ``data``; or its ``name:``), so
``--input data=...`` and ``source`` labels treat them as one input, and its ``format``, ``source``, ``limit`` and
``sample`` (``limit`` and ``sample`` count rows of each file). A directory is searched recursively; names starting
with ``.`` or ``_`` (``_SUCCESS``, ``.DS_Store``, hidden folders) and files of other types are skipped; a
``save_to_disk`` directory inside it (or matched by the pattern) is one input, not its own files. A pattern or a
directory that names no data file is an ``InputError``.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path, PurePosixPath

from curator.errors import InputError
from curator.paths import resolve_input
from curator.readers import FILE_KINDS, is_data_file, is_dataset_dir
from curator.sources import source_scheme

WILDCARD = re.compile(r"[*?\[]")


def is_pattern(path: str) -> bool:
    """A local path with a glob wildcard (``*``, ``?``, ``[``) in it."""
    return not source_scheme(path) and bool(WILDCARD.search(str(path)))


def pattern_name(path: str) -> str:
    """The default input name of a pattern: its last directory before the first wildcard (``input`` if none)."""
    fixed = [part for part in _fixed_parts(path) if part not in ("", ".", "..", "/")]
    return fixed[-1] if fixed else "input"


def _fixed_parts(path: str) -> list[str]:
    parts = PurePosixPath(str(path).replace("\\", "/")).parts
    first = next(i for i, part in enumerate(parts) if WILDCARD.search(part))
    return list(parts[:first])


def expand_inputs(recipe, extra_roots: tuple[Path, ...] = ()):
    """``recipe`` with each pattern or directory-of-files input replaced by one input per file it names."""
    from curator.inputs import input_name  # inputs.py names patterns with this module

    new, changed = [], False
    for k, spec in enumerate(recipe.inputs):
        files = _files(spec.path, recipe.base_dir, extra_roots, f"inputs[{k}].path")
        if files is None:
            new.append(spec)
            continue
        changed = True
        new += [dataclasses.replace(spec, path=str(f), name=input_name(spec)) for f in files]
    return dataclasses.replace(recipe, inputs=tuple(new)) if changed else recipe


def _files(path: str, base_dir: Path, extra_roots: tuple[Path, ...], where: str) -> list[Path] | None:
    """The data files ``path`` names if it is a pattern or a directory of data files; None if it names one input."""
    if source_scheme(path):
        return None
    if is_pattern(path):
        fixed = _fixed_parts(path)
        root = resolve_input(str(PurePosixPath(*fixed)) if fixed else ".", base_dir, extra_roots, where)
        rest = str(PurePosixPath(*PurePosixPath(str(path).replace("\\", "/")).parts[len(fixed):]))
        found = [p for p in sorted(root.glob(rest)) if not _hidden(p, root) and not _in_dataset_dir(p, root)
                 and (p.is_file() and is_data_file(p) or p.is_dir() and is_dataset_dir(p))]
        what = f"the pattern '{path}'"
    else:
        root = (base_dir / path).resolve()  # only a folder of files is confined here; a file is, with every input,
        if not root.is_dir() or is_dataset_dir(root):  # after the recipe's own checks (device, output scores)
            return None
        root = resolve_input(path, base_dir, extra_roots, where)
        found = _walk(root)
        what = f"the directory {root}"
    if not found:
        raise InputError(f"{where}: {what} names no data file (one of {', '.join(sorted(FILE_KINDS))}, text ones "
                         "optionally compressed; names starting with '.' or '_' are skipped); check the path, or "
                         "give a `datasets.save_to_disk` directory or files")
    return [resolve_input(str(p), base_dir, extra_roots, where) for p in found]


def _walk(folder: Path) -> list[Path]:
    """The inputs under ``folder`` in path order: its data files, and each ``save_to_disk`` directory as one input
    (not its own files); hidden and ``_`` names and symbolic links to folders are skipped."""
    found = []
    for p in sorted(folder.iterdir()):
        if p.name.startswith((".", "_")):
            continue
        if p.is_dir() and not p.is_symlink():
            found += [p] if is_dataset_dir(p) else _walk(p)
        elif p.is_file() and is_data_file(p):
            found.append(p)
    return found


def _in_dataset_dir(path: Path, root: Path) -> bool:
    """``path`` is inside a ``save_to_disk`` directory (``root`` or below it): part of that one input."""
    return any(is_dataset_dir(d) for d in path.parents if d == root or root in d.parents)


def _hidden(path: Path, root: Path) -> bool:
    return any(part.startswith((".", "_")) for part in path.relative_to(root).parts)
