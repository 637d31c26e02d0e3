"""Stage registry: name -> stage class, from the ``curator.stages`` entry points plus stages
registered in-process with ``register`` (for library users and tests)."""

from __future__ import annotations

import dataclasses
import logging
import re
from functools import cache
from importlib.metadata import entry_points
from typing import get_args

from curator.errors import RecipeError
from curator.stage import Stage, StageKind

log = logging.getLogger("curator")
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")  # a stage name or id, a run name: one folder name, never '..'

_LOCAL: dict[str, type[Stage]] = {}


@cache
def _entry_points() -> dict[str, object]:
    return {ep.name: ep for ep in entry_points(group="curator.stages")}


def register(cls: type[Stage]) -> type[Stage]:
    """Register a stage class under ``cls.name`` for this process (usable as a decorator). ``TypeError`` /
    ``ValueError`` for a class the engine could not run: not a ``Stage``, a ``name`` that is not one folder name
    (it names ``scores/<name>/``), an unknown ``kind``, ``Params`` not a dataclass. A built-in's name replaces the
    built-in in this process (logged)."""
    if not (isinstance(cls, type) and issubclass(cls, Stage)):
        raise TypeError(f"curator.registry.register: {cls!r} is not a subclass of curator.stage.Stage")
    name = getattr(cls, "name", None)
    if not (isinstance(name, str) and SAFE_NAME.fullmatch(name)):
        raise ValueError(f"curator.registry.register: {cls.__qualname__}.name = {name!r}: a stage name names a folder "
                         "under scores/, so use letters, digits, '.', '_' and '-', starting with a letter or digit")
    if cls.kind not in get_args(StageKind):
        raise ValueError(f"curator.registry.register: {cls.__qualname__}.kind = {cls.kind!r}; expected one of "
                         f"{list(get_args(StageKind))}")
    if not dataclasses.is_dataclass(cls.Params):
        raise TypeError(f"curator.registry.register: {cls.__qualname__}.Params must be a dataclass (frozen, with "
                        "typed fields), got {cls.Params!r}")
    if name in _entry_points() and _LOCAL.get(name) is not cls:
        log.info("curator.registry.register: %s replaces the registered stage '%s' in this process", cls.__qualname__,
                 name)
    _LOCAL[name] = cls
    return cls


def stage_names() -> list[str]:
    return sorted({*_entry_points(), *_LOCAL})


def get_stage(name: str, where: str = "stage") -> type[Stage]:
    """The stage class registered as ``name``; a clear error lists the known names otherwise."""
    if name in _LOCAL:
        return _LOCAL[name]
    eps = _entry_points()
    if name not in eps:
        raise RecipeError(f"{where}: unknown stage '{name}'; known stages are {stage_names()}")
    cls = eps[name].load()
    if not (isinstance(cls, type) and issubclass(cls, Stage)) or cls.name != name:
        raise RecipeError(f"{where}: entry point '{name}' does not name a curator Stage class")
    return cls


def ingest_stage() -> type[Stage]:
    """The one registered stage of ``kind = "ingest"`` (loads every registered stage to find it)."""
    found = [cls for name in stage_names() if (cls := get_stage(name)).kind == "ingest"]
    if len(found) != 1:
        raise RecipeError(f"exactly one registered stage must have kind 'ingest' (it normalises rows at ingest); "
                          f"found {[cls.name for cls in found] or 'none'} among {stage_names()}")
    return found[0]
