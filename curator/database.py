"""This process's in-memory DuckDB. Every use takes a ``cursor()``: a connection of its own, so what it
registers and its ``TEMP`` views stay private to it. A new database costs 15-30 ms, a cursor nothing.

Rules written in recipes (``decide`` rules, gate SQL) are checked here: one expression (``rule_text_problem``),
of type BOOLEAN (``boolean_problem``), bound in a database that cannot read files or reach the network
(``sandboxed_cursor``)."""

from __future__ import annotations

import difflib
import re
from functools import cache

import duckdb
import pyarrow as pa

from curator.errors import RecipeError

_MISSING = re.compile(r'(?:column|name) "?([A-Za-z_][\w]*)"? (?:not found|does not exist)', re.I)
UNKNOWN_TYPE = '"NULL"'  # DuckDB's type of an expression over columns whose type is not known yet


@cache
def _database() -> duckdb.DuckDBPyConnection:
    return duckdb.connect()


@cache
def _sandbox() -> duckdb.DuckDBPyConnection:
    return duckdb.connect(config={"enable_external_access": False, "python_enable_replacements": False,
                                  "lock_configuration": True})


def cursor() -> duckdb.DuckDBPyConnection:
    """A fresh connection to this process's in-memory database."""
    return _database().cursor()


def sandboxed_cursor() -> duckdb.DuckDBPyConnection:
    """A fresh connection to a database that sees only the tables registered on it: no files, no network,
    no Python variables, and its configuration is locked."""
    return _sandbox().cursor()


def with_canonical_types(schema: pa.Schema) -> pa.Schema:
    """``schema`` with the canonical columns' types (``curator.samples``) where it says null (not known yet)."""
    from curator.samples import CANONICAL_SCHEMA  # start-up time: the gate's path does not read inputs

    return pa.schema([CANONICAL_SCHEMA.field(f.name) if pa.types.is_null(f.type) and f.name in CANONICAL_SCHEMA.names
                      else f for f in schema])


def has_separator(sql: str) -> bool:
    """True if ``sql`` has a ';' outside string literals, quoted identifiers and comments."""
    tokens = duckdb.tokenize(sql)
    ends = [start for start, _ in tokens[1:]] + [len(sql)]
    return any(kind == duckdb.token_type.operator and ";" in sql[start:end]
               for (start, kind), end in zip(tokens, ends))


def rule_text_problem(sql: str, example: str) -> str | None:
    """What is wrong with the text of a rule before it is bound: empty, or more than one statement."""
    if not sql.strip():
        return f"the rule is empty; write one such as `{example}`"
    if has_separator(sql):
        return "one statement per rule, without ';' (a ';' inside quotes is fine)"
    return None


def boolean_problem(con: duckdb.DuckDBPyConnection, query: str, example: str) -> str | None:
    """What is wrong with the type of ``query``'s first column: any type but BOOLEAN (or one not known yet,
    from columns whose type is not known before the run). Binder errors are raised."""
    kind = str(con.sql(f"SELECT * FROM ({query}) LIMIT 0").types[0])
    if kind in ("BOOLEAN", UNKNOWN_TYPE):
        return None
    return f"its value has type {kind}, not BOOLEAN; write a comparison such as `{example}`"


def missing_column(message: str) -> str | None:
    """The column a DuckDB binder error says is not found, if it says so."""
    m = _MISSING.search(message)
    return m.group(1) if m else None


def did_you_mean(message: str, columns: list[str]) -> str:
    """`` (did you mean a, b?)`` for the column ``message`` says is missing, unless DuckDB already said it."""
    name = missing_column(message)
    close = difflib.get_close_matches(name, columns, n=3) if name else []
    return f" (did you mean {', '.join(close)}?)" if close and "did you mean" not in message.lower() else ""


class RuleError(RecipeError):
    """A rule of a stage parameter that cannot run; ``key`` is its place in the stage's ``with:``
    (``drop_if[0]``), ``at(where)`` the message with the recipe key in full (``stages[2].with.drop_if[0]``)."""

    def __init__(self, stage: str, key: str, rule: str, problem: str):
        self.stage, self.key, self.rule, self.problem = stage, key, rule, problem
        super().__init__(self.at(""))

    def __reduce__(self):  # raised in worker processes: rebuilt from its fields, not from the message
        return type(self), (self.stage, self.key, self.rule, self.problem)

    def at(self, where: str) -> str:
        key = f"{where}.{self.key}" if where else self.key
        return f"{self.stage} rule {self.rule!r} ({key}): {self.problem}"
