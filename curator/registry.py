"""Stage registry: name -> stage class, from the ``curator.stages`` entry points plus stages
registered in-process with ``register`` (for library users and tests)."""

from __future__ import annotations

from functools import cache
from importlib.metadata import entry_points

from curator.errors import RecipeError
from curator.stage import Stage

_LOCAL: dict[str, type[Stage]] = {}


@cache
def _entry_points() -> dict[str, object]:
    return {ep.name: ep for ep in entry_points(group="curator.stages")}


def register(cls: type[Stage]) -> type[Stage]:
    """Register a stage class under ``cls.name`` for this process (usable as a decorator)."""
    _LOCAL[cls.name] = cls
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
