"""``curator validate``: a recipe's dry run, without reading data or loading models.

Each stage is checked (``Stage.check_inputs``: ``decide`` binds its rules in DuckDB) against the columns
available when it runs: the canonical columns, the columns of the inputs whose header is cheap to read (Parquet,
Arrow, JSONL's first lines, CSV/TSV headers, ``save_to_disk`` features, named sources that load locally) and
the columns earlier score stages declare. Gate rules are bound against empty views with those columns. A column
that is not found while some input's columns are unknown (URLs, ``dataset:``), and a package this machine lacks
(a stage's check that names ``pip install``), are warnings, not errors.
"""

from __future__ import annotations

import difflib
import json
import re
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from curator.database import cursor
from curator.errors import CuratorError, RecipeError
from curator.gate import expand, rule_query
from curator.ledger import LEDGER_SCHEMA
from curator.plan import declared_artifacts
from curator.query import sql_message
from curator.readers import detect_kind, input_lines
from curator.recipe import Recipe
from curator.registry import get_stage
from curator.rundir import RunDir
from curator.samples import CANONICAL
from curator.sources import load_source, source_scheme
from curator.stage import StageContext

_MISSING = re.compile(r'(?:column|name) "?([A-Za-z_][\w]*)"? (?:not found|does not exist)', re.I)


def _header(path: Path) -> list[str] | None:
    """The column names of a local input, when they can be read without reading the data."""
    try:
        if path.is_dir():
            info = json.loads((path / "dataset_info.json").read_text())
            return list(info.get("features", {}))
        kind = detect_kind(path)
        if kind == "parquet":
            return pq.read_schema(path).names
        if kind in ("jsonl", "csv", "tsv"):
            lines = [line.decode("utf-8", "replace") for _, line in zip(range(200), input_lines(path))]
        if kind == "jsonl":
            keys: dict[str, None] = {}
            for line in lines:
                row = json.loads(line) if line.strip() else {}
                keys.update(dict.fromkeys(row if isinstance(row, dict) else {}))
            return list(keys)
        if kind in ("csv", "tsv") and lines:
            sep = "," if kind == "csv" else "\t"
            return [c.strip().strip('"') for c in lines[0].rstrip("\r\n").split(sep)]
    except (OSError, ValueError, pa.ArrowInvalid, CuratorError):
        return None
    return None


def input_columns(recipe: Recipe) -> tuple[list[str], list[str]]:
    """(columns of the inputs that could be read cheaply, paths of the inputs whose columns are unknown)."""
    cols: dict[str, None] = {}
    unknown = []
    for spec, path in zip(recipe.inputs, recipe.input_paths()):
        if source_scheme(path) == "builtin":
            names = load_source(path).column_names
        else:
            names = None if source_scheme(path) else _header(path)
        if names is None:
            unknown.append(spec.path)
        else:
            cols.update(dict.fromkeys(names))
    return list(cols), unknown


def _hint(message: str, columns: list[str]) -> str:
    m = _MISSING.search(message)
    close = difflib.get_close_matches(m.group(1), columns, n=3) if m else []
    return f" (did you mean {', '.join(close)}?)" if close and "did you mean" not in message.lower() else ""


def dry_run(recipe: Recipe) -> tuple[list[str], list[str]]:
    """(errors, warnings) of checking every stage and gate rule of ``recipe`` against the declared columns."""
    errors, warnings = [], []
    columns, unknown = input_columns(recipe)
    names = list(dict.fromkeys([*CANONICAL, *columns]))
    rundir = RunDir(Path(".").resolve() / ".curator-validate")
    context = StageContext(run_dir=rundir.root, cache_dir=rundir.root / "cache", model=recipe.model,
                           recipe_dir=recipe.base_dir, artifacts=declared_artifacts(recipe, rundir), quiet=True)
    score_columns: list[str] = []
    for k, spec in enumerate(recipe.stages):
        cls = get_stage(spec.use, f"stages[{k}].use")
        if cls.kind == "ingest":
            continue
        stage = cls(spec.params, context)
        try:
            stage.check_inputs(pa.schema([(n, pa.null()) for n in names]))
        except CuratorError as exc:
            message = f"stages[{k}] ({spec.id}): {exc}{_hint(str(exc), names)}"
            if unknown and _MISSING.search(str(exc)):
                warnings.append(f"{message} -- unless it comes from {unknown}, whose columns are not read here")
            elif "pip install" in str(exc):  # a package this machine lacks: the recipe itself may be fine
                warnings.append(f"{message} -- a run on this machine would fail")
            else:
                errors.append(message)
        if cls.kind == "score":
            new = [c for c in stage.provided_columns() if c not in names]
            names += new
            score_columns += new
    gate_errors, gate_warnings = check_gate(recipe, names, score_columns, bool(unknown))
    return errors + gate_errors, warnings + gate_warnings


def check_gate(recipe: Recipe, names: list[str], score_columns: list[str], unknown: bool) -> tuple[list[str], list[str]]:
    """Bind each gate rule against empty ``scores``, ``samples`` and ``ledger`` views with the declared columns."""
    con = cursor()
    con.register("scores", pa.table({c: pa.array([], pa.null()) for c in ["sample_id", *score_columns]}))
    con.register("samples", pa.table({c: pa.array([], pa.null()) for c in names if c not in score_columns}))
    con.register("ledger", LEDGER_SCHEMA.empty_table())
    errors, warnings = [], []
    for k, rule in enumerate(recipe.gate):
        where = f"gate[{k}] ({rule.name})"
        try:
            sql = expand(rule.sql.strip())
            if re.match(r"(?is)(select|with)\b", sql):
                con.execute(f"SELECT * FROM ({sql}) LIMIT 0")
            else:
                rule_query(con, sql, "FROM scores")
        except RecipeError as exc:
            errors.append(f"{where}: {exc}")
        except duckdb.Error as exc:
            message = f"{where}: {sql_message(exc)}{_hint(str(exc), ['sample_id', *score_columns])}"
            optional = re.search(r"Table with name (\w+)", str(exc))
            (warnings if unknown and _MISSING.search(str(exc)) or optional else errors).append(
                message + (" -- a view this check does not build; checked when the gate runs" if optional else ""))
    return errors, warnings
