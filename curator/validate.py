"""``curator validate``: a recipe's dry run, without reading data or loading models.

Each stage is checked (``Stage.check_inputs``: ``decide`` binds its rules in DuckDB and checks they are boolean)
against the columns available when it runs: the canonical columns, the columns of the inputs whose header is cheap
to read (Parquet, Arrow, JSONL's first lines, CSV/TSV headers, ``save_to_disk`` features, named sources that load
locally) and the columns earlier score stages declare, typed where that is known (Parquet headers, the output of
a model-free score stage on no rows). Gate rules are bound against empty views with those columns. Also checked:
every local input exists, the ingest stage is first, ``output.scores`` names columns the stages write, gate rule
names are unique.

A column that is not found is an error, and says which stage writes it when a later one does. It is a warning
only when it may be a pass-through column of an input whose columns are not read here (URLs, ``dataset:``, a
missing or unreadable file), and never in a gate rule bound to ``scores`` (stage columns only). A package this
machine lacks (a stage's check that names ``pip install``) is a warning too.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from curator.database import (
    RuleError,
    boolean_problem,
    did_you_mean,
    missing_column,
    sandboxed_cursor,
    with_canonical_types,
)
from curator.errors import CuratorError, RecipeError
from curator.gate import EXAMPLE, expand, rule_problems, rule_query
from curator.inputs import input_name
from curator.ledger import LEDGER_SCHEMA
from curator.plan import declared_artifacts, output_name_problem, output_scores_problem
from curator.query import sql_message
from curator.readers import detect_kind, input_lines
from curator.recipe import Recipe, StageSpec
from curator.registry import get_stage
from curator.rundir import RunDir
from curator.samples import CANONICAL
from curator.sources import load_source, source_scheme
from curator.stage import Stage, StageContext

_SELECT = re.compile(r"(?is)(select|with)\b")


_JSON_TYPES = {frozenset({bool}): pa.bool_(), frozenset({int}): pa.int64(), frozenset({float}): pa.float64(),
               frozenset({int, float}): pa.float64(), frozenset({str}): pa.string()}


def _jsonl_schema(lines: list[str]) -> pa.Schema:
    """The keys of the JSON objects among ``lines``, typed when every value of a key is one scalar JSON type;
    a line that is not a JSON object is skipped (ingest quarantines it)."""
    kinds: dict[str, set[type]] = {}
    for line in lines:
        try:
            row = json.loads(line) if line.strip() else {}
        except ValueError:
            continue
        for key, value in (row if isinstance(row, dict) else {}).items():
            kinds.setdefault(key, set()).update(() if value is None else (type(value),))
    return pa.schema([(k, _JSON_TYPES.get(frozenset(v), pa.null())) for k, v in kinds.items()])


def _header(path: Path) -> pa.Schema | None:
    """The columns of a local input (typed where the file says), when they can be read without reading the data."""
    try:
        if path.is_dir():
            info = json.loads((path / "dataset_info.json").read_text())
            return _untyped(info.get("features", {}))
        kind = detect_kind(path)
        if kind == "parquet":
            return pq.read_schema(path)
        if kind in ("jsonl", "csv", "tsv"):
            lines = [line.decode("utf-8", "replace") for _, line in zip(range(200), input_lines(path))]
        if kind == "jsonl":
            return _jsonl_schema(lines)
        if kind in ("csv", "tsv") and lines:
            sep = "," if kind == "csv" else "\t"
            return _untyped([c.strip().strip('"') for c in lines[0].rstrip("\r\n").split(sep)])
    except (OSError, ValueError, pa.ArrowInvalid, CuratorError):
        return None
    return None


def _untyped(names) -> pa.Schema:
    return pa.schema([(n, pa.null()) for n in names])


def input_columns(recipe: Recipe, extra_roots: tuple[Path, ...] = ()) -> tuple[pa.Schema, list[str], list[str]]:
    """(the columns of the inputs that could be read cheaply, the inputs whose columns are unknown, warnings: each
    local input that does not exist, as a recipe's placeholder path may not, until ``--input`` replaces it);
    ``extra_roots`` as ``Recipe.input_paths`` takes them (``--input``)."""
    fields: dict[str, pa.DataType] = {}
    unread, missing = [], []
    for k, (spec, path) in enumerate(zip(recipe.inputs, recipe.input_paths(extra_roots))):
        scheme = source_scheme(path)
        if not scheme and not path.exists():
            missing.append(f"inputs[{k}].path: {spec.path}: input not found ({path}); `curator run` needs it, "
                           f"or give a file in its place with --input {input_name(spec)}=PATH")
        header = load_source(path).schema if scheme == "builtin" else None if scheme else _header(path)
        if header is None:
            unread.append(spec.path)
        else:
            for f in header:
                fields.setdefault(f.name, pa.null() if f.name in CANONICAL else f.type)
    return pa.schema(list(fields.items())), unread, missing


def _output_types(stage: Stage, columns: pa.Schema) -> dict[str, pa.DataType]:
    """The types of a model-free score stage's columns: its output on no rows. Empty when it needs a model or
    cannot run on no rows; its columns are then typed on the data, when the run reaches the rules that use them."""
    if stage.uses_model:
        return {}
    try:
        stage.setup()
        out = stage.process_batch(with_canonical_types(columns).empty_table())
    except Exception:  # noqa: BLE001 - a probe: whatever it raises, the types stay unknown until the run
        return {}
    return {f.name: f.type for f in out.schema if f.name in stage.provided_columns()}


def _stage_problem(k: int, spec: StageSpec, exc: CuratorError, names: list[str], writers: dict[str, tuple[int, str]],
                   unread: list[str]) -> tuple[str, bool]:
    """(message, is an error) for stage ``k``'s failed check. A missing column that a later stage writes is an
    error saying so; one that may come from an unread input, or a package this machine lacks, a warning."""
    text = exc.at(f"stages[{k}].with") if isinstance(exc, RuleError) else str(exc)
    message = f"stages[{k}] ({spec.id}): {text}{did_you_mean(str(exc), names)}"
    column = missing_column(str(exc))
    if column in writers:
        j, writer = writers[column]
        return f"{message}; `{column}` is written by stages[{j}] ({writer}), which must come before stages[{k}]", True
    if column and unread:
        return f"{message} -- unless it comes from {unread}, whose columns are not read here", False
    if "pip install" in str(exc):  # a package this machine lacks: the recipe itself may be fine
        return f"{message} -- a run on this machine would fail", False
    return message, True


def _stages(recipe: Recipe, context: StageContext) -> tuple[list[tuple[int, StageSpec, Stage]], list[str]]:
    """Every stage after the ingest stage, constructed; errors: an ingest stage that is not the first."""
    stages, errors = [], []
    for k, spec in enumerate(recipe.stages):
        cls = get_stage(spec.use, f"stages[{k}].use")
        if cls.kind != "ingest":
            stages.append((k, spec, cls(spec.params, context)))
        elif k:
            errors.append(f"stages[{k}].use: `{spec.use}` runs at ingest, so it must be the first stage, and "
                          "appear once")
    return stages, errors


def dry_run(recipe: Recipe, extra_roots: tuple[Path, ...] = ()) -> tuple[list[str], list[str]]:
    """(errors, warnings) of checking the inputs, every stage and every gate rule of ``recipe`` against the
    declared columns."""
    header, unread, missing = input_columns(recipe, extra_roots)
    errors: list[str] = []
    rundir = RunDir(Path(".").resolve() / ".curator-validate")
    context = StageContext(run_dir=rundir.root, cache_dir=rundir.root / "cache", model=recipe.model,
                           recipe_dir=recipe.base_dir, artifacts=declared_artifacts(recipe, rundir), quiet=True)
    stages, order_errors = _stages(recipe, context)
    errors += order_errors
    missing_models = model_warnings(recipe, stages)
    writers: dict[str, tuple[int, str]] = {}
    for k, spec, stage in stages:
        provided = stage.provided_columns() if stage.kind == "score" else ()
        earlier = {column: sid for column, (_, sid) in writers.items()}
        clashes = [(c, problem) for c in provided if (problem := output_name_problem(c, earlier))]
        if clashes:
            more = f" (and {len(clashes) - 1} more of its columns)" if len(clashes) > 1 else ""
            errors.append(f"stages[{k}] ({spec.id}): it writes the column '{clashes[0][0]}'{more}, {clashes[0][1]}")
        for c in provided:
            writers.setdefault(c, (k, spec.id))
    errors += [_shadowed(c, *writers[c]) for c in header.names if c not in CANONICAL and c in writers]
    columns = pa.schema([(n, pa.null()) for n in CANONICAL]
                        + [f for f in header if f.name not in CANONICAL and f.name not in writers])
    score_columns: list[str] = []
    warnings = [*missing, *missing_models]
    for k, spec, stage in stages:
        try:
            stage.check_inputs(columns)
        except CuratorError as exc:
            message, is_error = _stage_problem(k, spec, exc, columns.names,
                                               {c: w for c, w in writers.items() if w[0] > k}, unread)
            (errors if is_error else warnings).append(message)
        if stage.kind == "score":
            types = _output_types(stage, columns)
            new = [c for c in stage.provided_columns() if c not in columns.names]
            columns = pa.schema([*columns, *[(c, types.get(c, pa.null())) for c in new]])
            score_columns += new
    errors += [p for p in [output_scores_problem(recipe, list(writers))] if p]
    gate_errors, gate_warnings = check_gate(recipe, columns, score_columns, bool(unread))
    return errors + gate_errors, warnings + gate_warnings


def model_warnings(recipe: Recipe, stages: list[tuple[int, StageSpec, Stage]]) -> list[str]:
    """The model directories a run of the recipe needs that are not here: ``model:`` and the ``llm`` judges' paths,
    when written as paths (a ``/`` in them; a registry name such as ``default`` is resolved by the run). Warnings,
    as for missing inputs: a recipe may be checked on another machine than the one it runs on."""
    wanted: list[tuple[str, str]] = []
    if any(stage.uses_model for _, _, stage in stages):
        wanted.append(("model", recipe.model))
    for k, _, stage in stages:
        for f in dataclasses.fields(stage.params):
            wanted += [(f"stages[{k}].with.{f.name}", path) for path in _llm_paths(getattr(stage.params, f.name))]
    return [f"{key}: {path!r} is not a local Hugging Face model directory (no config.json there); `curator run` needs "
            "it (models are never downloaded)" for key, path in wanted
            if "/" in path and not (Path(path).expanduser() / "config.json").is_file()]


def _llm_paths(value: object) -> list[str]:
    """The ``path`` of every ``{"llm": {"path": ...}}`` judge spec in a parameter value (ensembles included)."""
    if isinstance(value, list):
        return [p for v in value for p in _llm_paths(v)]
    if not isinstance(value, dict):
        return []
    own = [str(value["llm"]["path"])] if isinstance(value.get("llm"), dict) and "path" in value["llm"] else []
    return own + [p for k, v in value.items() if k != "llm" for p in _llm_paths(v)]


def _shadowed(column: str, k: int, stage_id: str) -> str:
    """The error for an input column named like one stage ``k`` writes (``curator run`` refuses it too)."""
    return (f"inputs: the input column '{column}' has the name of a column that stages[{k}] ({stage_id}) writes, so "
            f"decide rules would read the input's value; rename it in the file (e.g. 'input_{column}')")


def check_gate(recipe: Recipe, columns: pa.Schema, score_columns: list[str], unread: bool) -> tuple[list[str], list[str]]:
    """Each gate rule's problems: its text (``rule_problems``), then bound against empty ``scores``, ``samples``
    and ``ledger`` views with the declared columns, in a sandbox, and checked to be a boolean."""
    con = sandboxed_cursor()
    scores = ["sample_id", *score_columns]
    con.register("scores", pa.schema([columns.field(c) for c in scores]).empty_table())
    con.register("samples", with_canonical_types(pa.schema([f for f in columns if f.name not in score_columns]))
                 .empty_table())
    con.register("ledger", LEDGER_SCHEMA.empty_table())
    errors, warnings = rule_problems(recipe.gate, "gate"), []
    for k, rule in enumerate(recipe.gate):
        where = f"gate[{k}] ({rule.name})"
        if any(e.startswith(f"gate[{k}].sql") for e in errors):
            continue
        try:
            sql = expand(rule.sql.strip())
            query = sql if _SELECT.match(sql) else rule_query(con, sql, "FROM scores")
            problem = boolean_problem(con, query, EXAMPLE)
            if problem:
                errors.append(f"{where}: {problem}")
        except RecipeError as exc:
            errors.append(f"{where}: {exc}")
        except duckdb.Error as exc:
            message = f"{where}: {sql_message(exc)}{did_you_mean(str(exc), scores)}"
            if re.search(r"Table with name (\w+)", str(exc)):
                warnings.append(f"{message} -- a view this check does not build; checked when the gate runs")
            elif unread and _SELECT.match(sql) and missing_column(str(exc)):  # `FROM samples`: pass-through columns
                warnings.append(f"{message} -- unless it comes from an input whose columns are not read here")
            else:
                errors.append(message)
    return errors, warnings
