"""Gates: named DuckDB SQL rules over a run's views, turned into a JSON verdict and an exit code.

A rule's ``sql`` is a boolean expression evaluated as
``SELECT (<sql>) AS pass, <value> AS value FROM scores``, where ``<value>`` is the left operand of
the expression's first top-level comparison (``frac(is_duplicate) < 0.02`` reports the fraction).
A rule that names no column (``n_quarantined() = 0``) is evaluated once. A per-row rule
(``char_len < 10000``, no aggregate) must hold on every row of ``scores`` where it is not NULL (rows a score does
not cover, such as probe prompts, are skipped; NULL on every row fails); its value is the number of rows where it
does not hold. A rule may also be a full
``SELECT`` returning one row: the first column is pass/fail, an optional second column the value.
NULL counts as a failure (a gate never passes on missing data). Helpers, expanded first:
``frac(e)`` (the share of rows where ``e`` is true, among those where it is not NULL: a score's rows, not the
probes it did not score; NULL if none), ``quantile(col, q)``, ``n_rows()`` (input rows), ``n_kept()``, ``n_dropped()``,
``n_flagged()``, ``n_quarantined()``, ``n_added()``, ``n_dataset()`` (rows in dataset/),
``n_reason('duplicate')`` (ledger rows with that reason). Rules see only the run directory.
"""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import duckdb

from curator.database import rule_text_problem
from curator.errors import RecipeError
from curator.io import write_json
from curator.manifest import read_manifest, write_manifest
from curator.query import connect, sql_message
from curator.recipe import GateRule, load_yaml
from curator.rundir import RunLock
from curator.stage import build_params

_LEDGER = "(SELECT count(*) FROM ledger WHERE {})"
_NOT_ADDED = "coalesce(reason, '') <> 'added'"
HELPERS: dict[str, Any] = {
    "frac": lambda e: f"avg(CASE WHEN ({e}) THEN 1.0 WHEN NOT ({e}) THEN 0.0 END)",  # rows where e is NULL skipped
    "quantile": lambda col, q: f"quantile_cont({col}, {q})",
    "n_rows": lambda: _LEDGER.format(_NOT_ADDED),
    "n_kept": lambda: _LEDGER.format(f"status = 'kept' AND {_NOT_ADDED}"),
    "n_dropped": lambda: _LEDGER.format("status = 'dropped'"),
    "n_flagged": lambda: _LEDGER.format("status = 'flagged'"),
    "n_quarantined": lambda: _LEDGER.format("status = 'quarantined'"),
    "n_added": lambda: _LEDGER.format("reason = 'added'"),
    "n_dataset": lambda: _LEDGER.format("status IN ('kept', 'flagged')"),
    "n_reason": lambda r: _LEDGER.format(f"reason = {r}"),
}
_CALL = re.compile(r"(?<![\w.])(" + "|".join(HELPERS) + r")\s*\(", re.I)
_COMPARISON = re.compile(r"<=|>=|<>|!=|==|<|>|=")
_EMPTY_SCORES = "CREATE VIEW scores AS SELECT NULL::VARCHAR AS sample_id WHERE false"
EXAMPLE = "frac(char_len > 700) < 0.05"  # what a gate rule looks like, in messages


def _scan(sql: str, start: int) -> tuple[list[tuple[int, int]], int]:
    """From just after an opening '(' at ``start``: top-level arg spans and the closing index."""
    depth, quote, args, begin = 0, None, [], start
    for i in range(start, len(sql)):
        ch = sql[i]
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "(":
            depth += 1
        elif ch == ")" and depth:
            depth -= 1
        elif ch == ")" or (ch == "," and not depth):
            args.append((begin, i))
            begin = i + 1
            if ch == ")":
                return args, i
    raise RecipeError(f"unbalanced parentheses in {sql!r}")


def check_balanced(sql: str) -> None:
    """A ``RecipeError`` if ``sql``'s parentheses (outside string literals) do not balance."""
    flat = re.sub(r"'[^']*'|\"[^\"]*\"", "", sql)
    depth = 0
    for ch in flat:
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if depth < 0:
            break
    if depth:
        raise RecipeError(f"unbalanced parentheses in {sql!r}: {flat.count('(')} '(' and {flat.count(')')} ')'")


def expand(sql: str) -> str:
    """Replace helper calls (``frac(...)``, ``n_quarantined()``, ...) with plain DuckDB SQL."""
    check_balanced(sql)
    out, pos = [], 0
    while m := _CALL.search(sql, pos):
        if sql[:m.start()].count("'") % 2:  # inside a string literal: leave it alone
            out.append(sql[pos:m.end()])
            pos = m.end()
            continue
        spans, end = _scan(sql, m.end())
        args = [expand(sql[a:b]).strip() for a, b in spans]
        args = [] if args == [""] else args
        name = m.group(1).lower()
        try:
            text = HELPERS[name](*args)
        except TypeError:
            raise RecipeError(f"{name}(): wrong number of arguments in {sql!r}") from None
        out += [sql[pos:m.start()], f"({text})"]
        pos = end + 1
    return "".join(out) + sql[pos:]


def _top_level(sql: str) -> str:
    """``sql`` with quoted and parenthesised parts blanked out (same length), for operator search."""
    chars, depth, quote = list(sql), 0, None
    for i, ch in enumerate(sql):
        if quote:
            quote = None if ch == quote else quote
            chars[i] = " "
        elif ch in "'\"":
            quote, chars[i] = ch, " "
        elif ch == "(":
            depth += 1
            chars[i] = " "
        elif ch == ")":
            depth -= 1
            chars[i] = " "
        elif depth:
            chars[i] = " "
    return "".join(chars)


def value_expr(sql: str) -> str:
    """The left operand of the first top-level comparison of ``sql`` (or ``sql`` itself)."""
    flat = _top_level(sql)
    conj = re.search(r"\b(and|or)\b", flat, re.I)
    first = flat[:conj.start()] if conj else flat
    cmp = _COMPARISON.search(first)
    left = sql[:cmp.start()].strip() if cmp else ""
    return left if left and not re.match(r"(?i)not\b", left) else sql


def load_rules(path: str | Path) -> list[GateRule]:
    """Rules from a YAML file: a list of ``{name, sql}`` (or a mapping with a ``gate:`` list)."""
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"{path}: rules file not found")
    raw = load_yaml(path.read_text(encoding="utf-8"), str(path))
    if isinstance(raw, dict) and "gate" in raw:
        raw = raw["gate"]
    return parse_rules(raw, str(path))


def parse_rules(raw: Any, where: str) -> list[GateRule]:
    if not isinstance(raw, list):
        raise RecipeError(f"{where}: expected a list of {{name, sql}} gate rules")
    rules = [build_params(GateRule, r if isinstance(r, dict) else {}, f"{where}[{k}]") for k, r in enumerate(raw)]
    problems = rule_problems(rules, where)
    if problems:
        raise RecipeError(problems[0])
    return rules


def rule_problems(rules: Sequence[GateRule], where: str) -> list[str]:
    """What is wrong with the rules before they are bound, each located (``gate[1].name: ...``): a name used
    twice, an empty rule, more than one statement."""
    names = [r.name for r in rules]
    problems = []
    for k, r in enumerate(rules):
        if names.count(r.name) > 1:
            problems.append(f"{where}[{k}].name: rule name '{r.name}' is used more than once; give each rule its own")
        text = rule_text_problem(r.sql, EXAMPLE)
        if text:
            problems.append(f"{where}[{k}].sql: {text}")
    return problems


def recipe_rules(run_dir: Path) -> list[GateRule]:
    """The ``gate:`` list of the run's own ``recipe.yaml``."""
    path = run_dir / "recipe.yaml"
    if not path.is_file():
        raise RecipeError(f"{run_dir}: no recipe.yaml; pass the rules with --rules FILE")
    raw = load_yaml(path.read_text(encoding="utf-8"), str(path))
    return parse_rules((raw or {}).get("gate") or [] if isinstance(raw, dict) else [], f"{path}: gate")


def _connect(run_dir: Path) -> duckdb.DuckDBPyConnection:
    """Views over the run (``curator.query``) in a database of their own, then file access confined to the
    run directory (settings of the whole database)."""
    con = connect(run_dir, own_database=True)
    if not con.execute("SELECT 1 FROM duckdb_views() WHERE view_name = 'scores'").fetchall():
        con.execute(_EMPTY_SCORES)
    con.execute(f"SET allowed_directories = ['{str(run_dir.resolve()).replace(chr(39), chr(39) * 2)}/']")
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")
    return con


def _plain(v: Any) -> Any:
    if isinstance(v, decimal.Decimal):
        return float(v)
    if isinstance(v, (datetime.date, datetime.datetime)):
        return v.isoformat()
    if isinstance(v, (int, float, str, bool)) or v is None:
        return v
    return json.loads(json.dumps(v, default=str))


def rule_query(con: duckdb.DuckDBPyConnection, sql: str, source: str) -> str:
    """``SELECT pass, value <source>``; value NULL if the left operand alone does not bind."""
    for value in (value_expr(sql), "NULL"):
        query = f"SELECT ({sql}) AS pass, ({value}) AS value {source}"
        try:
            con.execute(f"SELECT 1 FROM ({query}) LIMIT 0")
            return query
        except duckdb.Error:
            if value == "NULL":
                raise
    raise AssertionError("unreachable")


def _evaluate_rule(con: duckdb.DuckDBPyConnection, rule: GateRule) -> dict:
    sql = expand(rule.sql.strip())
    if re.match(r"(?is)(select|with)\b", sql):
        rows = con.execute(sql).fetchall()
        if len(rows) != 1:
            raise RecipeError(f"returned {len(rows)} rows; a SELECT rule must return exactly one")
        ok, value = rows[0][0], rows[0][1] if len(rows[0]) > 1 else rows[0][0]
    else:
        try:  # no column references: a constant such as `n_quarantined() = 0`
            ok, value = con.execute(rule_query(con, sql, "")).fetchone()
        except duckdb.Error:
            inner = rule_query(con, sql, "FROM scores")
            n, first_ok, all_ok, value, failing = con.execute(  # bool_and skips NULLs: NULL if every row is
                f"SELECT count(*), first(pass), bool_and(pass), first(value), "
                f"count(*) FILTER (WHERE pass IS FALSE) FROM ({inner})").fetchone()
            ok, value = (first_ok, value) if n == 1 else (n == 0 or all_ok, failing)
    out = {"name": rule.name, "sql": rule.sql, "value": _plain(value), "passed": ok is True}
    if ok is None:
        out["note"] = "evaluated to NULL (no rows or missing scores); NULL counts as a failure"
    elif not isinstance(ok, bool):
        raise RecipeError(f"evaluated to {ok!r}, not a boolean; write a comparison such as `... < 0.05`")
    return out


class GateRuleError(RecipeError):
    """One or more rules could not be evaluated; ``verdict`` holds every rule with its ``error``."""

    def __init__(self, message: str, verdict: dict):
        super().__init__(message)
        self.verdict = verdict


def evaluate(run_dir: str | Path, rules: list[GateRule] | str | Path | None = None, *, record: bool = True) -> dict:
    """Evaluate ``rules`` (a list of ``GateRule``s or of ``{name, sql, ...}`` mappings, a rules-file path, or None
    for the run's recipe ``gate:``) on a
    finished run; return the verdict and, with ``record``, write it to ``gate.json`` and the
    manifest's ``"gate"``. Raises ``GateRuleError`` (exit 2) if a rule cannot be evaluated."""
    root = Path(run_dir).resolve()
    manifest = read_manifest(root)
    if rules is None:
        rules = recipe_rules(root)
    elif not isinstance(rules, list):
        rules = load_rules(rules)
    elif not all(isinstance(r, GateRule) for r in rules):  # mappings, as a rules file or a recipe's gate: holds
        rules = parse_rules([dataclasses.asdict(r) if isinstance(r, GateRule) else r for r in rules], "rules")
    if not rules:
        raise RecipeError(f"{root}: no gate rules; add a `gate:` list to the recipe or pass --rules FILE")
    con = _connect(root)
    results, problems = [], []
    for rule in rules:
        try:
            results.append(_evaluate_rule(con, rule))
        except (duckdb.Error, RecipeError) as exc:
            msg = sql_message(exc) if isinstance(exc, duckdb.Error) else str(exc)
            results.append({"name": rule.name, "sql": rule.sql, "value": None, "passed": False, "error": msg})
            problems.append(f"gate rule '{rule.name}' ({rule.sql}): {msg}")
    verdict = {"passed": all(r["passed"] for r in results), "rules": results, "run_dir": str(root),
               "dataset_digest": manifest["dataset"]["digest"],
               "evaluated_at": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}
    if problems:
        cols = [r[0] for r in con.execute("DESCRIBE scores").fetchall()]
        views = sorted(r[0] for r in con.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()
                       if not r[0].startswith("_"))
        raise GateRuleError("; ".join(problems) + f". Columns of `scores`: {cols}. Views: {views}. Helpers: "
                            f"{sorted(HELPERS)}", verdict)
    if record:
        with RunLock(root, wait_seconds=30):
            manifest = read_manifest(root)
            if manifest["dataset"]["digest"] != verdict["dataset_digest"]:
                raise RecipeError(f"{root}: the run changed while the gate was evaluated; run the gate again")
            manifest["gate"] = verdict
            write_manifest(manifest, root / "manifest.json")
            write_json(verdict, root / "gate.json")
    return verdict
