"""``decide``: rules over score columns -> ledger verdicts (``dropped`` / ``flagged``).

A rule is a DuckDB SQL predicate over the columns seen so far, e.g. ``char_len > 20000`` or
``risk_sqsd > quantile(risk_sqsd, 0.95) AND source = 'web'``. ``quantile(col, q)`` is the
q-quantile of ``col`` over the whole data set. A rule that evaluates to NULL (a missing
score) does not fire. Drop rules are checked before flag rules; the first rule that fires
is recorded as the row's ``rule``. A rule must be a boolean, and it sees only the columns of the rows: it runs
in a DuckDB database that cannot read files or reach the network (``curator.database.sandboxed_cursor``).

Rules that read nothing of other rows but ``quantile`` (no window, subquery or table name) run shard by
shard in batches: the quantiles are computed first over the whole set (``summarise``).
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from curator.database import (
    RuleError,
    boolean_problem,
    did_you_mean,
    rule_text_problem,
    sandboxed_cursor,
    with_canonical_types,
)
from curator.errors import RecipeError
from curator.ledger import VERDICT_SCHEMA
from curator.query import sql_message
from curator.report_sections import threshold_section
from curator.stage import ReportSection, Resources, Stage

_SIMPLE = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(>=|>|<=|<)\s*(.+?)\s*$")
_QUANTILE = re.compile(r"\bquantile\s*\(\s*([A-Za-z_][A-Za-z0-9_]*)\s*,\s*([0-9]*\.?[0-9]+)\s*\)", re.I)


_WHOLE_SET = re.compile(r"\b(over|select|from|samples|qualify|window)\b", re.I)
_QUANTILES = "_curator_quantiles"
_EXAMPLE = "char_len > 700"


def _sql_text(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def expand_macros(sql: str) -> str:
    """``quantile(col, q)`` -> the whole-set quantile as a window aggregate."""
    return _QUANTILE.sub(r"(quantile_cont(\1, \2) OVER ())", sql)


def _macro_key(match: re.Match) -> tuple[str, str]:
    return match.group(1).lower(), match.group(2)


@dataclass(frozen=True)
class DecideParams:
    drop_if: tuple[str, ...] = ()
    flag_if: tuple[str, ...] = ()
    reason: str | None = None  # recorded instead of the rule text when set

    def validate(self) -> None:
        if not self.drop_if and not self.flag_if:
            raise ValueError("give at least one rule in drop_if or flag_if")
        for key, rule in self.keyed():
            problem = rule_text_problem(rule, _EXAMPLE)
            if problem:
                raise ValueError(f"{key} {rule!r}: {problem}")

    def keyed(self) -> list[tuple[str, str]]:
        """Every rule with its key in ``with:`` (``drop_if[0]``), drop rules first."""
        return [(f"{key}[{i}]", rule) for key in ("drop_if", "flag_if") for i, rule in enumerate(getattr(self, key))]


class DecideStage(Stage):
    name = "decide"
    kind = "decide"
    scope = "global"
    version = 1
    Params = DecideParams
    requires = ("sample_id",)

    def resources(self) -> Resources:
        return Resources(batch_size=1 << 40)  # quantiles need the whole set in one batch

    def _rules(self) -> list[tuple[str, str]]:
        return [("dropped", r) for r in self.params.drop_if] + [("flagged", r) for r in self.params.flag_if]

    def report_sections(self) -> tuple[ReportSection, ...]:
        """The threshold of every ``column <op> value`` rule, drawn on that column's histograms in the report
        (``quantile(col, q)`` evaluated over the run's samples, as the rule saw them)."""
        parts = []
        for status, rule in self._rules():
            m = _SIMPLE.match(rule)
            if m and not re.search(r"\b(and|or)\b", m.group(3), re.I):
                rhs = _QUANTILE.sub(r"quantile_cont(\1, \2)", m.group(3))
                parts.append(f"SELECT '{m.group(1)}' AS column, ({rhs})::DOUBLE AS threshold, "
                             f"'{status}: ' || {_sql_text(rule)} AS rule FROM scores JOIN samples USING (sample_id)")
        return (threshold_section("Decide: thresholds", " UNION ALL ".join(parts)),) if parts else ()

    def view_columns(self, available: list[str]) -> list[str]:
        """The columns a rule names (DuckDB identifiers are case-insensitive); all of them if a
        rule could reach columns without naming them (``COLUMNS(...)``, ``*``, the table name)."""
        text = " ".join(r for _, r in self._rules()).lower()
        if "columns(" in text.replace(" ", "") or "*)" in text.replace(" ", "") or "samples" in text:
            return available
        return [c for c in available if c.lower() in text]

    def summary_columns(self, available: list[str]) -> list[str] | None:
        """The columns inside ``quantile(...)``, if every rule is otherwise row-local; else None."""
        rules = [r for _, r in self._rules()]
        if any(_WHOLE_SET.search(_QUANTILE.sub("0", r)) for r in rules):
            return None
        self._macros = sorted({_macro_key(m) for r in rules for m in _QUANTILE.finditer(r)})
        self._quantiles = None
        return [c for c in available if c.lower() in {col for col, _ in self._macros}]

    def summarise(self, table: pa.Table) -> None:
        """Each ``quantile(col, q)`` over the whole set (the window aggregate's value, as DuckDB types it)."""
        con = sandboxed_cursor()
        con.register("samples", table)
        cols = ", ".join(f"quantile_cont({col}, {q}) AS q{i}" for i, (col, q) in enumerate(self._macros))
        self._quantiles = con.sql(f"SELECT {cols} FROM samples").to_arrow_table()

    def _expand(self, rule: str) -> str:
        if getattr(self, "_quantiles", None) is None:
            return expand_macros(rule)
        index = {key: i for i, key in enumerate(self._macros)}
        return _QUANTILE.sub(lambda m: f"(SELECT q{index[_macro_key(m)]} FROM {_QUANTILES})", rule)

    def check_inputs(self, schema: pa.Schema) -> None:
        """Every rule binds against ``schema``'s columns and is a boolean (a column typed null is of a type not
        known yet: the canonical ones have theirs; a rule over the others is checked again on the data)."""
        con = sandboxed_cursor()
        con.register("samples", with_canonical_types(schema).empty_table())
        for key, rule in self.params.keyed():
            _check_rule(con, key, rule, expand_macros(rule), schema.names)

    def _connection(self) -> duckdb.DuckDBPyConnection:
        """One sandboxed DuckDB connection per thread (shards are decided on threads), made once."""
        local = self.__dict__.setdefault("_local", threading.local())
        if not hasattr(local, "con"):
            local.con = sandboxed_cursor()
        return local.con

    def process_batch(self, batch: pa.RecordBatch | pa.Table) -> pa.Table:
        table = batch if isinstance(batch, pa.Table) else pa.Table.from_batches([batch])
        rules = self._rules()
        con = self._connection()
        con.register("samples", table)
        if getattr(self, "_quantiles", None) is not None:
            con.register(_QUANTILES, self._quantiles)
        cases = " ".join(f"WHEN coalesce(({self._expand(r)}), false) THEN {i}" for i, (_, r) in enumerate(rules))
        try:
            for key, rule in self.params.keyed():  # the data's own types: a column not typed before the run
                _check_rule(con, key, rule, self._expand(rule), table.column_names)
            fired = self._evaluate(con, f"SELECT sample_id, CASE {cases} END AS hit FROM samples")
        finally:
            con.unregister("samples")
        fired = fired.filter(pc.is_valid(fired.column("hit")))
        hit = fired.column("hit")
        rule_text = pa.array([r for _, r in rules], pa.string())
        reasons = pa.array([self.params.reason or r for _, r in rules], pa.string())
        return pa.table({"sample_id": fired.column("sample_id"),
                         "status": pc.take(pa.array([st for st, _ in rules], pa.string()), hit),
                         "reason": pc.take(reasons, hit), "rule": pc.take(rule_text, hit)}, schema=VERDICT_SCHEMA)

    def _evaluate(self, con: duckdb.DuckDBPyConnection, query: str) -> pa.Table:
        """``query``'s result; if it fails, a ``RuleError`` naming the first rule that fails on its own."""
        try:
            return con.sql(query).to_arrow_table()
        except duckdb.Error as exc:
            error = exc
        for key, rule in self.params.keyed():
            try:
                con.sql(f"SELECT count(*) FROM samples WHERE coalesce(({self._expand(rule)}), false)").fetchall()
            except duckdb.Error as exc:
                raise RuleError("decide", key, rule, f"failed on the data: {sql_message(exc)}") from None
        raise RecipeError(f"decide: the rules failed on the data together: {sql_message(error)}")


def _check_rule(con: duckdb.DuckDBPyConnection, key: str, rule: str, sql: str, columns: list[str]) -> None:
    """``RuleError`` naming the rule if ``sql`` (its expanded text) does not bind on ``samples`` or is not a
    boolean."""
    try:
        problem = boolean_problem(con, f"SELECT ({sql}) FROM samples", _EXAMPLE)
    except duckdb.Error as exc:
        problem = _sql_problem(exc, columns)
    if problem:
        raise RuleError("decide", key, rule, problem)


def _sql_problem(exc: duckdb.Error, columns: list[str]) -> str:
    """A binder or permission error of a rule, said for the recipe's author (internal ``_`` columns hidden)."""
    visible = [c for c in columns if not c.startswith("_")]
    if isinstance(exc, duckdb.PermissionException):
        return (f"{sql_message(exc)}; decide rules see only the columns of the rows: they cannot read files or "
                "reach the network")
    return f"{sql_message(exc)}{did_you_mean(str(exc), visible)}; columns available: {visible}"
