"""``curator stages``: every registered stage with its parameters (type, default, help) and the columns it writes.

A parameter's help is its dataclass field's ``metadata["help"]``, else the comment after the field in the
stage's source (``k: int = 8  # rollouts per prompt``). Columns come from an instance with default parameters
(``provided_columns()``), or the class's ``provides`` when the defaults are not valid on their own.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import sys
from pathlib import Path

from curator.errors import CuratorError
from curator.registry import get_stage, stage_names
from curator.stage import StageContext, describe_params

_COMMENT = re.compile(r"^\s+(\w+)\s*:[^#]*#\s*(.+?)\s*$")
WRITES = {"decide": ["ledger verdicts: status, reason, rule"], "augment": ["added samples (added/ and the dataset)"]}


def _comments(params_cls: type) -> dict[str, str]:
    try:
        source = inspect.getsource(params_cls)
    except (OSError, TypeError):
        return {}
    return {m.group(1): m.group(2) for line in source.splitlines() if (m := _COMMENT.match(line))}


def _columns(cls) -> list[str]:
    try:
        params = cls.Params()
        return list(cls(params, StageContext(run_dir=Path("."), cache_dir=Path("."))).provided_columns())
    except (TypeError, ValueError, CuratorError):
        return list(cls.provides)


def stage_info(name: str) -> dict:
    """What ``curator stages`` shows for one stage (``error`` instead when its module cannot be imported)."""
    try:
        cls = get_stage(name)
    except ImportError as exc:
        return {"name": name, "error": f"cannot be loaded ({exc}); the model stages need "
                                        "`pip install 'safety-curator[models]'`"}
    module = sys.modules.get(cls.__module__)  # absent for a stage defined in exec'd code
    doc = ((module.__doc__ if module else None) or cls.__doc__ or "").strip().splitlines()
    comments = _comments(cls.Params)
    fields = {f.name: f for f in dataclasses.fields(cls.Params)}
    params = [{"name": n, "type": t, "default": d,
               "help": fields[n].metadata.get("help") or comments.get(n, "")} for n, t, d in describe_params(cls.Params)]
    return {"name": name, "kind": cls.kind, "scope": cls.scope, "version": cls.version,
            "summary": doc[0] if doc else "", "params": params,
            "columns": _columns(cls) if cls.kind in ("score", "ingest") else WRITES.get(cls.kind, [])}


def catalog() -> list[dict]:
    return [stage_info(name) for name in stage_names()]
