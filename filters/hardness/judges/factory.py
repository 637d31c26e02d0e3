"""Recipe judge specs -> judges: ``make_judge`` builds one, ``cached_judge`` shares one per process.

Specs: ``"keyword"`` | ``"classifier"`` | ``{"keyword": {opts}}`` | ``{"classifier": {opts}}`` |
``{"llm": {"path": DIR, "format": "llama_guard_3"|"wildguard", ...}}`` |
``{"ensemble": [spec, ...], "abstain_policy": ..., "rule": ...}``.
"""

from __future__ import annotations

import functools
import json
from typing import Any

from curator.errors import RecipeError
from filters.hardness.judges.base import Judge
from filters.hardness.judges.ensemble import EnsembleJudge
from filters.hardness.judges.keyword import KeywordRefusalJudge

JUDGE_NAMES = ("keyword", "classifier", "llm", "ensemble")


def _parts(spec: str | dict[str, Any]) -> tuple[str, Any, dict[str, Any]]:
    """(name, options, the ensemble's own keys) of a judge spec; a ``RecipeError`` for a malformed one."""
    if isinstance(spec, str):
        if spec in ("llm", "ensemble"):
            raise RecipeError(f"judge '{spec}' needs options, e.g. "
                              + ('{"llm": {"path": DIR, "format": "llama_guard_3"}}' if spec == "llm"
                                 else '{"ensemble": ["keyword", "classifier"]}'))
        name, opts, extra = spec, {}, {}
    elif isinstance(spec, dict):
        keys = [k for k in spec if k in JUDGE_NAMES]
        if len(keys) != 1:
            raise RecipeError(f"judge spec {spec!r} must have exactly one of {list(JUDGE_NAMES)} as a key")
        name = keys[0]
        opts = spec[name]
        extra = {k: v for k, v in spec.items() if k != name}
        if name == "ensemble":
            if not isinstance(opts, list):
                raise RecipeError("judge 'ensemble' takes a list of judge specs")
            return name, opts, extra
        if extra:
            raise RecipeError(f"judge '{name}': unexpected keys {sorted(extra)}; put options inside '{name}'")
        if opts is None:
            opts = {}
        if not isinstance(opts, dict):
            raise RecipeError(f"judge '{name}' options must be a mapping, got {type(opts).__name__}")
    else:
        raise RecipeError(f"judge spec must be a string or a mapping, got {type(spec).__name__}")
    if name not in JUDGE_NAMES:
        raise RecipeError(f"unknown judge '{name}'; valid judges are {list(JUDGE_NAMES)}")
    if name == "llm" and "path" not in opts:
        raise RecipeError("judge 'llm' needs 'path' (a local Hugging Face model directory)")
    return name, opts, extra


def check_judge_spec(spec: str | dict[str, Any]) -> None:
    """What ``make_judge`` would refuse before building anything (names, option mappings), checked without
    loading a model: for recipe validation (``curator validate`` warns about ``llm`` paths that are not here)."""
    name, opts, _ = _parts(spec)
    if name == "ensemble":
        for member in opts:
            check_judge_spec(member)


def make_judge(spec: str | dict[str, Any]) -> Judge:
    """Build a judge from a recipe spec (module docstring); unknown names or options are ``RecipeError``s."""
    name, opts, extra = _parts(spec)
    if name == "ensemble":
        try:
            return EnsembleJudge([make_judge(s) for s in opts], **extra)
        except TypeError as e:
            raise RecipeError(f"judge 'ensemble': {e}") from e
    try:
        if name == "keyword":
            return KeywordRefusalJudge(**opts)
        if name == "classifier":
            from filters.hardness.judges.classifier import ClassifierJudge  # start-up time: torch

            return ClassifierJudge.load_or_train(**opts)
        from filters.hardness.judges.guard import GuardJudge  # start-up time: torch

        opts = dict(opts)
        return GuardJudge(opts.pop("path"), **opts)
    except TypeError as e:
        raise RecipeError(f"judge '{name}': bad options {sorted(opts)}: {e}") from e


def cached_judge(spec: str | dict[str, Any]) -> Judge:
    """The judge for ``spec``, built once per process (models load once; equal specs share it)."""
    return _judge_of_json(json.dumps(spec, sort_keys=True))


@functools.cache
def _judge_of_json(spec_json: str) -> Judge:
    return make_judge(json.loads(spec_json))
