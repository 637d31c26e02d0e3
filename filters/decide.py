"""``decide``: rules over score columns -> ledger verdicts (``dropped`` / ``flagged``).

A rule is a DuckDB SQL predicate over the columns seen so far, e.g. ``char_len > 20000`` or
``risk_sqsd > quantile(risk_sqsd, 0.95) AND source = 'web'``. ``quantile(col, q)`` is the
q-quantile of ``col`` over the whole data set. A rule that evaluates to NULL (a missing
score) does not fire. Drop rules are checked before flag rules; the first rule that fires
is recorded as the row's ``rule``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import duckdb
import pyarrow as pa

from curator.errors import RecipeError
from curator.ledger import VERDICT_SCHEMA
from curator.stage import Resources, Stage

_QUANTILE = re.compile(r"\bquantile\s*\(\s*([A-Za-z_][A-Za-z0-9_]*)\s*,\s*([0-9]*\.?[0-9]+)\s*\)", re.I)


def expand_macros(sql: str) -> str:
    """``quantile(col, q)`` -> the whole-set quantile as a window aggregate."""
    return _QUANTILE.sub(r"(quantile_cont(\1, \2) OVER ())", sql)


@dataclass(frozen=True)
class DecideParams:
    drop_if: tuple[str, ...] = ()
    flag_if: tuple[str, ...] = ()
    reason: str | None = None  # recorded instead of the rule text when set

    def validate(self) -> None:
        if not self.drop_if and not self.flag_if:
            raise ValueError("give at least one rule in drop_if or flag_if")
        for rule in (*self.drop_if, *self.flag_if):
            if ";" in rule:
                raise ValueError(f"rule {rule!r}: one SQL expression per rule, no ';'")


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

    def check_inputs(self, schema: pa.Schema) -> None:
        empty = pa.table({n: pa.array([], pa.float64()) for n in schema.names})
        con = duckdb.connect()
        con.register("samples", empty)
        for status, rule in self._rules():
            try:
                con.execute(f"SELECT ({expand_macros(rule)}) FROM samples LIMIT 0")
            except duckdb.Error as exc:
                msg = str(exc).splitlines()[0]
                raise RecipeError(f"decide rule {rule!r} ({status}): {msg}; columns available: {schema.names}") from None

    def process_batch(self, batch: pa.RecordBatch | pa.Table) -> pa.Table:
        table = batch if isinstance(batch, pa.Table) else pa.Table.from_batches([batch])
        rules = self._rules()
        con = duckdb.connect()
        con.register("samples", table)
        checks = ", ".join(f"coalesce(({expand_macros(r)}), false) AS r{i}" for i, (_, r) in enumerate(rules))
        try:
            fired = con.sql(f"SELECT sample_id, {checks} FROM samples").to_arrow_table()
        except duckdb.Error as exc:
            raise RecipeError(f"decide: a rule failed on the data: {str(exc).splitlines()[0]}") from None
        ids, status, reason, rule = [], [], [], []
        flags = [fired.column(f"r{i}").to_pylist() for i in range(len(rules))]
        for row, sid in enumerate(fired.column("sample_id").to_pylist()):
            hit = next((i for i in range(len(rules)) if flags[i][row]), None)
            if hit is None:
                continue
            ids.append(sid)
            status.append(rules[hit][0])
            rule.append(rules[hit][1])
            reason.append(self.params.reason or rules[hit][1])
        return pa.table({"sample_id": ids, "status": status, "reason": reason, "rule": rule}, schema=VERDICT_SCHEMA)
