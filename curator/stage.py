"""Stage protocol: kinds, typed params, resources and the per-worker context.

A stage is a class with a registry ``name``, a ``version`` (bump it when its output would
change), a frozen dataclass ``Params``, declared ``requires`` / ``provides`` columns and a
``kind``:

- ``ingest``:  ``process_batch(batch) -> pa.Table`` normalises every input row at ingest
               (``_bad_reason`` set on rows to quarantine); a recipe's first stage, or else the one
               registered stage of this kind. Its ``Params`` are also ``IngestParams``.
- ``score``:   ``process_batch(batch) -> pa.Table`` with ``sample_id`` + new columns; drops nothing.
               A row it cannot score (NaN/inf, OOM after splitting) gets null scores and a
               ``flag_reason``; the engine records it as ``flagged`` with that reason.
- ``decide``:  ``process_batch(batch) -> pa.Table`` of ledger rows
               (``sample_id, status, stage, reason, rule``) for the rows it has a verdict on.
- ``augment``: ``process_batch(batch) -> pa.Table`` of new samples with provenance columns
               (``parent_id, generator, template_id, seed``); ``scope = "global"`` stages see the
               whole data set once, after every shard.

The engine streams: a shard's view reaches a stage in consecutive batches. A global stage gets
the whole set in one ``process_batch`` call unless it says how to do without:

- ``map_reduce = True`` (its per-row work needs no global state): the engine runs ``map_shard``
  on consecutive batches of each shard's view on the worker pool (so it must be row-local), then
  ``reduce(parts)`` once on the columns ``reduce_columns`` names (all if empty) of every shard's
  output, in shard order; ``reduce`` returns the columns it adds, one row per row of ``parts``.
  A shard's result is its ``map_shard`` output without ``_``-prefixed columns, plus those.
- ``summary_columns(available)`` not None: the engine passes those columns of the whole set
  (with ``sample_id`` and the input position) to ``summarise`` once, then calls ``process_batch``
  shard by shard in bounded batches, which must give what one call on the whole set would.

``setup()`` runs once per worker (load models there) and ``teardown()`` at the end.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol, runtime_checkable

import pyarrow as pa

from curator.errors import RecipeError
from curator.paths import resolve_input

StageKind = Literal["ingest", "score", "decide", "augment"]
FLAG_COLUMN = "flag_reason"  # a score stage sets it (string) on rows it could not score: they are flagged


@dataclass(frozen=True)
class Resources:
    """What one worker of a stage needs; executors map this onto processes or Ray actors."""

    cpus: float = 1.0
    gpus: float = 0.0
    batch_size: int = 4096


@dataclass(frozen=True)
class Artifact:
    """Data a stage writes for later stages, queries and reports: a ``curator.keyed_store.KeyedStore``
    under the run directory. ``curator query`` shows it as a view called ``name``."""

    name: str  # view name, e.g. "rollouts"
    path: str  # directory relative to RUN_DIR, e.g. "cache/rollouts"
    key: str  # the store's key column
    description: str = ""


@dataclass(frozen=True)
class ReportSection:
    """A section a stage adds to ``report.html``: a DuckDB query over the run's views, shown as a table,
    or as the histogram of the result's column ``histogram``."""

    title: str
    sql: str
    histogram: str | None = None
    note: str = ""


@dataclass(frozen=True)
class StageContext:
    """Everything a stage may know about the run it is part of (no global state)."""

    run_dir: Path
    cache_dir: Path  # RUN_DIR/cache/<stage fingerprint>, private to this stage
    model: str = "default"  # recipe `model:` (registry "default" or a local HF directory)
    device: str = "auto"
    dtype: str = "float32"
    seed: int = 0
    quiet: bool = False
    recipe_dir: Path = Path(".")  # where the recipe lives: relative data paths in params resolve here
    artifacts: dict[str, Path] = field(default_factory=dict)  # name -> directory, declared by the recipe's stages
    extra: dict[str, Any] = field(default_factory=dict)

    def data_path(self, path: str, where: str) -> Path:
        """A data file named in a stage parameter, resolved and confined like recipe inputs."""
        return resolve_input(path, self.recipe_dir, (), where)


@runtime_checkable
class IngestParams(Protocol):
    """Fields the ``Params`` of the ``ingest`` stage have, read by the engine's ingest."""

    on_bad_row: Literal["quarantine", "fail"]  # a row that cannot be read or normalised: set aside, or fail
    dedupe: bool  # drop later exact duplicates (ledger reason ``duplicate``)


@dataclass(frozen=True)
class NoParams:
    """Params of a stage that takes none."""


class Stage:
    """Base class of every stage; subclasses set the class attributes and ``process_batch``."""

    name: ClassVar[str]
    version: ClassVar[int] = 1
    kind: ClassVar[StageKind] = "score"
    scope: ClassVar[Literal["shard", "global"]] = "shard"
    Params: ClassVar[type] = NoParams
    requires: ClassVar[tuple[str, ...]] = ("sample_id",)
    provides: ClassVar[tuple[str, ...]] = ()
    uses_model: ClassVar[bool] = False
    artifacts: ClassVar[tuple[Artifact, ...]] = ()  # data this stage writes for others (see ``Artifact``)
    map_reduce: ClassVar[bool] = False  # global stages: per-shard ``map_shard`` then one ``reduce``
    reduce_columns: ClassVar[tuple[str, ...]] = ()  # map_reduce: what ``reduce`` reads (empty: every column)

    def __init__(self, params: Any, context: StageContext):
        self.params = params
        self.context = context

    # -- overridable -------------------------------------------------------------------------
    def resources(self) -> Resources:
        batch = getattr(self.params, "batch_size", None)
        return Resources(batch_size=batch) if isinstance(batch, int) else Resources()

    def provided_columns(self) -> tuple[str, ...]:
        """Columns this instance adds (may depend on params); defaults to ``provides``."""
        return self.provides

    def required_columns(self) -> tuple[str, ...]:
        """Columns this instance needs (may depend on params); defaults to ``requires``."""
        return self.requires

    def view_columns(self, available: list[str]) -> list[str]:
        """Of the ``available`` columns, those this stage reads; the engine loads only these
        (plus ``sample_id`` and the input position). Default: all."""
        return available

    def fingerprint_inputs(self) -> dict[str, Any]:
        """Extra content that determines the output (model/direction hashes); cheap to compute."""
        return {}

    def check_inputs(self, schema: pa.Schema) -> None:
        """Raise ``RecipeError`` if the columns this stage needs are missing (before models load)."""
        missing = [c for c in self.required_columns() if c not in schema.names]
        if missing:
            raise RecipeError(
                f"stage '{self.name}' needs column(s) {missing} but the data has {schema.names}; "
                "add the stage that provides them earlier in the recipe"
            )

    def report_sections(self) -> tuple[ReportSection, ...]:
        """Sections this stage adds to the run report (recorded in the manifest)."""
        return ()

    def setup(self) -> None:
        """Load models and other heavy state once per worker."""

    def process_batch(self, batch: pa.RecordBatch) -> pa.Table:
        raise NotImplementedError

    def map_shard(self, view: pa.Table) -> pa.Table:
        """``map_reduce`` stages: the per-row part for a batch of one shard's view."""
        raise NotImplementedError

    def reduce(self, parts: pa.Table) -> pa.Table:
        """``map_reduce`` stages: the columns added to every row of ``parts`` (``reduce_columns`` of every
        shard's ``map_shard`` output)."""
        raise NotImplementedError

    def summary_columns(self, available: list[str]) -> list[str] | None:
        """Global stages: the columns ``summarise`` needs of the whole set before ``process_batch`` can run
        shard by shard in bounded batches; None (the default): the whole set in one batch."""
        return None

    def summarise(self, table: pa.Table) -> None:
        """Global stages with ``summary_columns``: take their values over the whole set."""

    def teardown(self) -> None:
        """Free what ``setup`` loaded."""


# -- typed params ------------------------------------------------------------------------------


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(tp))
    if origin in (list, tuple):
        args = [a for a in typing.get_args(tp) if a is not Ellipsis]
        return f"list[{_type_name(args[0])}]" if args else "list"
    if origin is dict:
        return "mapping"
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` against the annotation ``tp``; return it (lists become tuples)."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin is Literal:
        if value in typing.get_args(tp):
            return value
        raise RecipeError(f"{where}: expected one of {_type_name(tp)}, got {value!r}")
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            try:
                return _coerce(value, arg, where)
            except RecipeError:
                continue
        raise RecipeError(f"{where}: expected {_type_name(tp)}, got {value!r}")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise RecipeError(f"{where}: expected {_type_name(tp)}, got {value!r}")
        (inner, *_) = typing.get_args(tp) or (Any,)
        return tuple(_coerce(v, inner, f"{where}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise RecipeError(f"{where}: expected a mapping, got {value!r}")
        return value
    if tp is type(None):
        if value is None:
            return None
        raise RecipeError(f"{where}: expected null, got {value!r}")
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp in (int, float) and isinstance(value, bool):
        raise RecipeError(f"{where}: expected {tp.__name__}, got {value!r}")
    if isinstance(tp, type) and isinstance(value, tp):
        return value
    raise RecipeError(f"{where}: expected {_type_name(tp)}, got {value!r}")


def build_params(params_cls: type, raw: dict[str, Any] | None, where: str) -> Any:
    """Validate ``raw`` (a recipe ``with:`` mapping) into the frozen dataclass ``params_cls``.

    Unknown keys, wrong types and missing required keys are ``RecipeError``s naming the key.
    """
    raw = dict(raw or {})
    hints = typing.get_type_hints(params_cls)
    fields = {f.name: f for f in dataclasses.fields(params_cls)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise RecipeError(
            f"{where}.{unknown[0]}: unknown parameter; valid parameters are {sorted(fields) or 'none'}"
        )
    values = {}
    for name, f in fields.items():
        if name in raw:
            values[name] = _coerce(raw[name], hints[name], f"{where}.{name}")
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise RecipeError(f"{where}.{name}: required parameter is missing")
    params = params_cls(**values)
    check = getattr(params, "validate", None)
    if callable(check):
        try:
            check()
        except ValueError as exc:
            raise RecipeError(f"{where}: {exc}") from None
    return params


def describe_params(params_cls: type) -> list[tuple[str, str, str]]:
    """(name, type, default) for every parameter; used by ``curator stages``."""
    hints = typing.get_type_hints(params_cls)
    rows = []
    for f in dataclasses.fields(params_cls):
        if f.default is not dataclasses.MISSING:
            default = repr(f.default)
        elif f.default_factory is not dataclasses.MISSING:
            default = repr(f.default_factory())
        else:
            default = "(required)"
        rows.append((f.name, _type_name(hints[f.name]), default))
    return rows


def params_to_dict(params: Any) -> dict[str, Any]:
    """JSON-ready dict of a params dataclass (tuples become lists)."""

    def plain(v: Any) -> Any:
        if isinstance(v, tuple | list):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return {k: plain(v) for k, v in dataclasses.asdict(params).items()}
