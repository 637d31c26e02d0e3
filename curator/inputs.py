"""Recipe inputs by name: default names, ``--input [NAME=]PATH`` overrides, and the path a ``dataset:``
input's split/config/revision become.

An input's name is its ``name:`` if set, else the built-in name of a named source (``builtin:advbench`` ->
``advbench``, ``dataset:org/set`` -> ``set``), else the file's stem (``data/my_sft.jsonl`` -> ``my_sft``,
``data/web.jsonl.zst`` -> ``web``,
``s3://bucket/a.parquet`` -> ``a``). ``NAME=PATH`` replaces the input called NAME and its rows keep that
input's ``source`` label (its ``source:``, else NAME), so stages that select rows by source still see them; a
bare ``PATH`` replaces the input of a recipe that has exactly one.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path, PurePosixPath
from urllib.parse import urlencode

from curator.errors import RecipeError
from curator.readers import input_stem
from curator.sources import source_scheme

_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


def is_url(path: str) -> bool:
    """``scheme://...`` with a registered scheme (read through ``curator.sources``)."""
    head, sep, rest = str(path).partition(":")
    return bool(sep) and rest.startswith("//") and source_scheme(path) is not None


def input_name(spec) -> str:
    """The name ``--input NAME=PATH`` refers to (see the module docstring)."""
    if spec.name:
        return spec.name
    path = str(spec.path)
    scheme = source_scheme(path)
    rest = path.split(":", 1)[1] if scheme else path
    last = rest.rstrip("/").rsplit("/", 1)[-1] or rest
    return last if scheme and not is_url(path) else input_stem(PurePosixPath(last))


def source_path(spec) -> str:
    """The path the input is read from: a ``dataset:`` input carries its split/config/revision as a query."""
    query = {k: getattr(spec, k) for k in ("split", "config", "revision") if getattr(spec, k, None)}
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
        new = tuple(type(recipe.inputs[0])(path=_resolved(p), format=recipe.inputs[0].format) for p in bare)
        paths = bare
    else:
        new, paths = [], []
        for name, spec in zip(names, recipe.inputs):
            if name not in named:
                new.append(spec)
                continue
            for p in named[name]:
                new.append(type(spec)(path=_resolved(p), format=spec.format, name=name, source=spec.source or name))
                paths.append(p)
        new = tuple(new)
    roots = tuple(Path(p).resolve().parent for p in paths if not source_scheme(p))
    return dataclasses.replace(recipe, inputs=new), roots
