"""Named input sources: a recipe input ``<scheme>:<name>`` is read by the resolver registered for ``<scheme>``.

The core registers ``dataset`` (``datasets.load_dataset``: a Hub id or a local dataset repository,
``curator.hub_source``) and the fsspec URL schemes in ``URL_SCHEMES`` (``s3://``, ``gs://``, ``hf://``,
``memory://``, ...: fetched to a local cache file and read like a local file, ``curator.url_source``); packages
add schemes through the ``curator.sources`` entry points (``curator.refdata`` provides ``builtin``).

A resolver is a class whose instances have ``load(name) -> pa.Table`` (rows in the input layout; an int64
``_file_row`` column, if there, gives each row's ``input_row``, else its position), ``sha256(name)
-> str`` (a content hash for the manifest) and either ``names() -> list[str]`` (a closed set) or ``check(name,
where)`` (raises ``RecipeError``). Optional: ``describe(name) -> dict``, what was read (URL, revision, cached
file), recorded in the manifest as the input's ``origin``. Core resolvers are constructed with their scheme.
"""

from __future__ import annotations

from functools import cache
from importlib import import_module
from importlib.metadata import entry_points

import pyarrow as pa

from curator.errors import RecipeError

URL_SCHEMES = ("s3", "s3a", "gs", "gcs", "hf", "memory", "az", "abfs", "http", "https")
_CORE = {"dataset": "curator.hub_source:HubDatasets", **{s: "curator.url_source:URLInputs" for s in URL_SCHEMES}}


def _core(scheme: str, target: str) -> object:
    module, attr = target.split(":")
    return getattr(import_module(module), attr)(scheme)


@cache
def resolvers() -> dict[str, object]:
    """Scheme -> resolver: the core's, then those of installed packages (which may not replace a core one)."""
    found = {ep.name: ep for ep in entry_points(group="curator.sources")}
    return {**{ep: found[ep].load()() for ep in found if ep not in _CORE},
            **{s: _core(s, t) for s, t in _CORE.items()}}


def source_scheme(path: object) -> str | None:
    """The scheme ``path`` names (``builtin`` for ``builtin:advbench``, ``s3`` for ``s3://b/k``), else None."""
    head, sep, _ = str(path).partition(":")
    return head if sep and (head in _CORE or head in resolvers()) else None


def _split(path: object) -> tuple[str, str]:
    """(scheme, name) of a source path; a URL's name is what follows ``scheme://`` (``Path`` keeps one '/')."""
    scheme, _, name = str(path).partition(":")
    return scheme, name.lstrip("/") if name.startswith("/") and scheme in URL_SCHEMES else name


def canonical_uri(path: object) -> str:
    """``path`` as the user wrote it: ``s3:/b/k`` (a URL that went through ``pathlib``) -> ``s3://b/k``."""
    if source_scheme(path) in URL_SCHEMES:
        scheme, name = _split(path)
        return f"{scheme}://{name}"
    return str(path)


def check_source(path: str, where: str) -> None:
    """A ``RecipeError`` naming ``where`` (and, for a closed set, the available names) if ``path`` names nothing."""
    scheme, name = _split(path)
    resolver = resolvers()[scheme]
    if hasattr(resolver, "check"):
        resolver.check(name, where)
        return
    names = resolver.names()
    if name not in names:
        raise RecipeError(f"{where}: unknown {scheme} input '{path}'; available: {[f'{scheme}:{n}' for n in names]}")


def load_source(path: object) -> pa.Table:
    scheme, name = _split(path)
    check_source(str(path), "input")
    return resolvers()[scheme].load(name)


def source_sha256(path: object) -> str:
    scheme, name = _split(path)
    return resolvers()[scheme].sha256(name)


def source_origin(path: object) -> dict | None:
    """What the resolver says was read for ``path`` (URL, revision, cached file), or None."""
    scheme = source_scheme(path)
    if scheme is None:
        return None
    resolver = resolvers()[scheme]
    return resolver.describe(_split(path)[1]) if hasattr(resolver, "describe") else None
