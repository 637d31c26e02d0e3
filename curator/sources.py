"""Named input sources: a recipe input ``<scheme>:<name>`` (such as ``builtin:advbench``) is read by
the resolver registered for ``<scheme>`` through the ``curator.sources`` entry points.

A resolver is a class whose instances have ``names() -> list[str]``, ``load(name) -> pa.Table``
(rows in the canonical input layout, with a ``source`` column) and ``sha256(name) -> str`` (a content
hash for the manifest). The engine core knows no source by name; ``curator.refdata`` provides
``builtin``.
"""

from __future__ import annotations

from functools import cache
from importlib.metadata import entry_points

import pyarrow as pa

from curator.errors import RecipeError


@cache
def resolvers() -> dict[str, object]:
    return {ep.name: ep.load()() for ep in entry_points(group="curator.sources")}


def source_scheme(path: object) -> str | None:
    """The registered scheme that ``path`` names (``builtin`` for ``builtin:advbench``), else None."""
    head, sep, _ = str(path).partition(":")
    return head if sep and head in resolvers() else None


def check_source(path: str, where: str) -> None:
    """A ``RecipeError`` naming ``where`` and the available names if ``path`` names no known source."""
    scheme = source_scheme(path)
    names = resolvers()[scheme].names()
    if path.split(":", 1)[1] not in names:
        raise RecipeError(f"{where}: unknown {scheme} input '{path}'; available: {[f'{scheme}:{n}' for n in names]}")


def load_source(path: object) -> pa.Table:
    scheme, _, name = str(path).partition(":")
    check_source(str(path), "input")
    return resolvers()[scheme].load(name)


def source_sha256(path: object) -> str:
    scheme, _, name = str(path).partition(":")
    return resolvers()[scheme].sha256(name)
