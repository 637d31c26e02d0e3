"""YAML recipe -> typed ``Recipe``: safe loading, validation with locations, canonical hash.

Every problem is reported with its location (``stages[3].with.k: expected int``), all at
once. Recipes name stages by registry name only; YAML aliases and custom tags are refused.
Input paths are resolved against the recipe's directory and confined (``curator.paths``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from curator.errors import RecipeError
from curator.export import OutputSpec
from curator.inputs import input_name, name_problems, source_path
from curator.paths import resolve_input
from curator.registry import SAFE_NAME, get_stage
from curator.samples import FORMAT_NAMES
from curator.stage import build_params, params_to_dict

RECIPE_VERSION = 1
MAX_RECIPE_BYTES = 1 << 20


@dataclass(frozen=True)
class InputSpec:
    path: str  # a file or directory, a named source (`builtin:advbench`), a URL (`s3://...`), `dataset:<id>`
    format: str = "auto"
    source: str | None = None
    limit: int | None = None  # only the first `limit` rows of this input
    sample: int | None = None  # then a seeded random subset of this many rows (input order kept)
    sample_seed: int = 0
    name: str | None = None  # what `--input NAME=PATH` replaces; default: see ``input_name``
    split: str | None = None  # `dataset:` inputs: the split, config and revision `datasets.load_dataset` reads
    config: str | None = None
    revision: str | None = None

    def validate(self) -> None:
        if (self.split or self.config or self.revision) and not self.path.startswith("dataset:"):
            raise ValueError("split, config and revision apply to `dataset:<hub id or directory>` inputs only")
        if self.format not in FORMAT_NAMES:
            raise ValueError(f"format: expected one of {list(FORMAT_NAMES)}, got {self.format!r}")
        if self.limit is not None and self.limit < 0:
            raise ValueError("limit: must be >= 0")
        if self.sample is not None and self.sample < 0:
            raise ValueError("sample: must be >= 0")


@dataclass(frozen=True)
class StageSpec:
    use: str
    id: str
    params: Any  # the stage's frozen Params instance
    raw: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ExecutorSpec:
    kind: Literal["local", "ray"] = "local"
    workers: int = 1
    address: str = "auto"
    retries: int = 2

    def validate(self) -> None:
        if self.workers < 1:
            raise ValueError("workers: must be >= 1")
        if self.retries < 0:
            raise ValueError("retries: must be >= 0")


@dataclass(frozen=True)
class GateRule:
    name: str
    sql: str


@dataclass(frozen=True)
class Recipe:
    name: str
    inputs: tuple[InputSpec, ...]
    stages: tuple[StageSpec, ...]
    shards: int = 8
    model: str = "default"
    device: str = "auto"
    dtype: str = "float32"
    seed: int = 0
    output: OutputSpec = OutputSpec()
    executor: ExecutorSpec = ExecutorSpec()
    gate: tuple[GateRule, ...] = ()
    base_dir: Path = Path(".")
    text: str = ""  # the YAML as written (copied verbatim into the run directory)

    def resolved(self) -> dict[str, Any]:
        """The recipe with defaults filled in: what runs, and what the canonical hash covers."""
        return {
            "curator": RECIPE_VERSION, "name": self.name, "shards": self.shards, "model": self.model,
            "device": self.device, "dtype": self.dtype, "seed": self.seed,
            "inputs": [_input_dict(i) for i in self.inputs],
            "stages": [{"use": s.use, "id": s.id, "with": params_to_dict(s.params)} for s in self.stages],
            "output": dataclasses.asdict(self.output), "executor": dataclasses.asdict(self.executor),
            "gate": [dataclasses.asdict(g) for g in self.gate],
        }

    def sha256(self) -> str:
        return hashlib.sha256(canonical_json(self.resolved()).encode()).hexdigest()

    def input_paths(self, extra_roots: tuple[Path, ...] = ()) -> list[Path]:
        return [resolve_input(source_path(i), self.base_dir, extra_roots, f"inputs[{k}].path")
                for k, i in enumerate(self.inputs)]


def _input_dict(spec: InputSpec) -> dict[str, Any]:
    """An input as the resolved recipe records it; fields added after recipe version 1 appear only when
    set, so existing recipes keep their canonical hash."""
    out = dataclasses.asdict(spec)
    for key in ("name", "split", "config", "revision"):
        if out[key] is None:
            del out[key]
    return out


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


class _NoAliasLoader(yaml.SafeLoader):
    """Safe loader that refuses anchors/aliases (alias bombs) and keeps only plain YAML types."""

    def compose_node(self, parent, index):  # type: ignore[override]
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise RecipeError(f"line {event.start_mark.line + 1}: YAML aliases (*name) are not allowed in recipes")
        return super().compose_node(parent, index)


def load_yaml(text: str, where: str) -> Any:
    if len(text.encode()) > MAX_RECIPE_BYTES:
        raise RecipeError(f"{where}: recipe is larger than {MAX_RECIPE_BYTES} bytes")
    try:
        return yaml.load(text, Loader=_NoAliasLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise RecipeError(f"{where}: not valid YAML: {exc}") from None


def load_recipe(source: str | Path | dict, base_dir: str | Path | None = None) -> Recipe:
    """Parse and validate a recipe from a path, a YAML string (several lines, or one flow mapping ``{...}``) or a
    dict; ``base_dir`` (a path or a string) is where a YAML string's or a dict's relative paths start (default: the
    working directory)."""
    base_dir = Path(base_dir) if base_dir is not None else None
    if isinstance(source, dict):
        raw, text, where, base = source, yaml.safe_dump(source, sort_keys=False), "recipe", base_dir or Path.cwd()
    else:
        is_text = isinstance(source, str) and ("\n" in source or source.lstrip().startswith("{"))
        path = None if is_text else Path(source)
        if path is not None:
            if not path.is_file():
                raise RecipeError(f"{path}: recipe file not found")
            text, where, base = path.read_text(encoding="utf-8"), str(path), path.resolve().parent
        else:
            text, where, base = str(source), "recipe", base_dir or Path.cwd()
        raw = load_yaml(text, where)
    return _build(raw, text, where, base)


def _build(raw: Any, text: str, where: str, base: Path) -> Recipe:
    errors: list[str] = []
    if not isinstance(raw, dict):
        raise RecipeError(f"{where}: a recipe must be a mapping with keys curator, name, inputs, stages")
    allowed = {f.name for f in dataclasses.fields(Recipe)} - {"base_dir", "text"} | {"curator"}
    for key in sorted(set(raw) - allowed):
        errors.append(f"{key}: unknown key; valid keys are {sorted(allowed)}")
    if raw.get("curator", RECIPE_VERSION) != RECIPE_VERSION:
        errors.append(f"curator: unsupported recipe version {raw.get('curator')!r}; this curator reads {RECIPE_VERSION}")

    def section(key: str, cls: type, value: Any) -> Any:
        if not isinstance(value, dict):
            errors.append(f"{key}: expected a mapping, got {value!r}")
            return cls()
        try:
            return build_params(cls, value, key)
        except RecipeError as exc:
            errors.append(str(exc))
            return cls()

    inputs = []
    raw_inputs = raw.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        errors.append("inputs: expected a non-empty list of {path, format}")
        raw_inputs = []
    for k, item in enumerate(raw_inputs):
        item = {"path": item} if isinstance(item, str) else item
        try:
            inputs.append(build_params(InputSpec, item if isinstance(item, dict) else {"path": item}, f"inputs[{k}]"))
        except RecipeError as exc:
            errors.append(str(exc))
    errors += name_problems(inputs)
    # a `dataset:` input's rows are labelled by its name (its path's stem would carry the query)
    inputs = [dataclasses.replace(i, source=input_name(i)) if i.path.startswith("dataset:") and i.source is None
              else i for i in inputs]
    stages, ids = [], set()
    raw_stages = raw.get("stages")
    if not isinstance(raw_stages, list) or not raw_stages:
        errors.append("stages: expected a non-empty list of {use: <stage>, with: {...}}")
        raw_stages = []
    for k, item in enumerate(raw_stages):
        loc = f"stages[{k}]"
        if not isinstance(item, dict) or not isinstance(item.get("use"), str):
            errors.append(f"{loc}: expected a mapping with `use: <stage name>`")
            continue
        extra = set(item) - {"use", "with", "id"}
        if extra:
            errors.append(f"{loc}.{sorted(extra)[0]}: unknown key; valid keys are ['id', 'use', 'with']")
        if item.get("with") is not None and not isinstance(item["with"], dict):
            errors.append(f"{loc}.with: expected a mapping of parameters, got {item['with']!r}")
            continue
        if item.get("id") is not None and not (isinstance(item["id"], str) and SAFE_NAME.fullmatch(item["id"])):
            errors.append(f"{loc}.id: {item['id']!r} is not a valid stage id: it names a folder under scores/, so use "
                          "letters, digits, '.', '_' and '-', starting with a letter or digit")
            continue
        try:
            cls = get_stage(item["use"], f"{loc}.use")
            params = build_params(cls.Params, item.get("with") or {}, f"{loc}.with")
        except RecipeError as exc:
            errors.append(str(exc))
            continue
        sid = str(item.get("id") or item["use"])
        n = 2
        while sid in ids:
            sid, n = f"{item.get('id') or item['use']}-{n}", n + 1
        ids.add(sid)
        stages.append(StageSpec(use=item["use"], id=sid, params=params, raw=dict(item.get("with") or {})))
    top = {k: raw[k] for k in ("name", "shards", "model", "device", "dtype", "seed") if k in raw}
    try:
        scalars = build_params(_Scalars, top, "recipe")
    except RecipeError as exc:
        errors.append(str(exc).removeprefix("recipe."))
        scalars = _Scalars()
    executor = section("executor", ExecutorSpec, raw.get("executor", {}))
    output = section("output", OutputSpec, raw.get("output", {}))
    gates = []
    raw_gate = raw.get("gate") or []
    if not isinstance(raw_gate, list):
        errors.append("gate: expected a list of {name, sql}")
        raw_gate = []
    for k, g in enumerate(raw_gate):
        try:
            gates.append(build_params(GateRule, g if isinstance(g, dict) else {}, f"gate[{k}]"))
        except RecipeError as exc:
            errors.append(str(exc))
    if errors:
        raise RecipeError(f"{where}: {len(errors)} problem(s):\n  " + "\n  ".join(errors))
    return Recipe(name=scalars.name, inputs=tuple(inputs), stages=tuple(stages), shards=scalars.shards,
                  model=scalars.model, device=scalars.device, dtype=scalars.dtype, seed=scalars.seed,
                  output=output, executor=executor, gate=tuple(gates), base_dir=base, text=text)


@dataclass(frozen=True)
class _Scalars:
    name: str = "unnamed"
    shards: int = 8
    model: str = "default"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    dtype: Literal["float32", "bfloat16"] = "float32"
    seed: int = 0

    def validate(self) -> None:
        if not 1 <= self.shards <= 100_000:
            raise ValueError("shards: must be between 1 and 100000")
        if not SAFE_NAME.fullmatch(self.name):
            raise ValueError(f"name: {self.name!r} is not a valid run name: it names the run's folder under runs/, so "
                             "use letters, digits, '.', '_' and '-', starting with a letter or digit")
