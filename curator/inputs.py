"""Recipe inputs by name: default names, ``--input [NAME=]PATH`` overrides, and the path a ``dataset:``
input's split/config/revision become.

An input's name is its ``name:`` if set, else the built-in name of a named source (``builtin:advbench`` ->
``advbench``, ``dataset:org/set`` -> ``set``), else the file's stem (``data/my_sft.jsonl`` -> ``my_sft``,
``data/web.jsonl.zst`` -> ``web``,
``s3://bucket/a.parquet`` -> ``a``; a pattern: its directory, ``data/*.jsonl`` -> ``data``, see ``curator.input_files``). ``NAME=PATH`` replaces the input called NAME, and a bare ``PATH`` the input
of a recipe that has exactly one; either way the replacement keeps that input's name, ``source`` label (its
``source:``, else its name: stages that select rows by source still see them), ``format`` (a layout, which a
file's extension does not tell) and how much of it is read (``limit``, ``sample``, ``sample_seed``). A
``dataset:`` input's ``split``, ``config`` and ``revision`` are kept when PATH is a ``dataset:`` too, else dropped
with a warning (they mean nothing for a file).
"""

from __future__ import annotations

import dataclasses
import logging
import re
from pathlib import Path, PurePosixPath
from urllib.parse import urlencode

from curator.errors import RecipeError
from curator.input_files import is_pattern, pattern_name
from curator.readers import input_stem
from curator.sources import source_scheme

_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
HUB_OPTIONS = ("split", "config", "revision")  # `dataset:` inputs only
log = logging.getLogger("curator")


def is_url(path: str) -> bool:
    """``scheme://...`` with a registered scheme (read through ``curator.sources``)."""
    head, sep, rest = str(path).partition(":")
    return bool(sep) and rest.startswith("//") and source_scheme(path) is not None


def input_name(spec) -> str:
    """The name ``--input NAME=PATH`` refers to (see the module docstring)."""
    if spec.name:
        return spec.name
    path = str(spec.path)
    if is_pattern(path):
        return pattern_name(path)
    scheme = source_scheme(path)
    rest = path.split(":", 1)[1] if scheme else path
    last = rest.rstrip("/").rsplit("/", 1)[-1] or rest
    return last if scheme and not is_url(path) else input_stem(PurePosixPath(last))


def source_path(spec) -> str:
    """The path the input is read from: a ``dataset:`` input carries its split/config/revision as a query."""
    query = {k: getattr(spec, k) for k in HUB_OPTIONS if getattr(spec, k, None)}
    return f"{spec.path}?{urlencode(query)}" if query else spec.path


def name_problems(inputs) -> list[str]:
    """Recipe errors for explicit ``name:``s that two inputs share (derived names may repeat)."""
    seen: dict[str, int] = {}
    out = []
    for k, spec in enumerate(inputs):
        if spec.name is None:
            continue
        if not _NAME.match(spec.name):
            out.append(f"inputs[{k}].name: {spec.name!r} may use letters, digits, '_', '-' and '.' only")
        if spec.name in seen:
            out.append(f"inputs[{k}].name: '{spec.name}' is also the name of inputs[{seen[spec.name]}]")
        seen.setdefault(spec.name, k)
    return out


def _resolved(path: str) -> str:
    return path if source_scheme(path) else str(Path(path).resolve())


def override_inputs(recipe, overrides: list[str] | None):
    """``(recipe with its inputs replaced, extra allowed roots)`` for ``--input`` values ``[NAME=]PATH``."""
    if not overrides:
        return recipe, ()
    names = [input_name(i) for i in recipe.inputs]
    listing = ", ".join(f"{n} ({i.path})" for n, i in zip(names, recipe.inputs))
    named: dict[str, list[str]] = {}
    bare: list[str] = []
    for item in overrides:
        head, sep, tail = str(item).partition("=")
        if sep and _NAME.match(head) and not Path(item).exists():
            if head not in names:
                raise RecipeError(f"--input {item}: recipe '{recipe.name}' has no input named '{head}'; its inputs "
                                  f"are {listing}")
            if names.count(head) > 1:
                raise RecipeError(f"--input {item}: several inputs of recipe '{recipe.name}' are named '{head}' "
                                  f"({listing}); give them distinct `name:`s in the recipe")
            named.setdefault(head, []).append(tail)
        else:
            bare.append(str(item))
    if bare and (len(recipe.inputs) != 1 or named):
        raise RecipeError(f"--input {bare[0]}: recipe '{recipe.name}' has {len(recipe.inputs)} inputs: {listing}. "
                          "Say which one to replace: --input NAME=PATH (inputs you do not name are kept)")
    if bare:
        named = {names[0]: bare}
    new = []
    for name, spec in zip(names, recipe.inputs):
        new += [_replacement(spec, name, p) for p in named[name]] if name in named else [spec]
    roots = tuple(Path(p).resolve().parent for paths in named.values() for p in paths if not source_scheme(p))
    return dataclasses.replace(recipe, inputs=tuple(new)), roots


def _replacement(spec, name: str, path: str):
    """``spec`` reading ``path`` instead (what it keeps: see the module docstring)."""
    hub = {k: getattr(spec, k) for k in HUB_OPTIONS if getattr(spec, k)}
    if hub and not path.startswith("dataset:"):
        log.warning("--input %s replaces %s with a path that is not a `dataset:` input; dropped (they apply to "
                    "`dataset:` inputs only): %s", path, spec.path, ", ".join(f"{k}: {v}" for k, v in hub.items()))
        hub = dict.fromkeys(hub)
    return dataclasses.replace(spec, path=_resolved(path), name=name, source=spec.source or name, **hub)
