"""What a finished run will train on, in a few lines: the safety mix's size and a few of its rows.

``mix_summary(run_dir)`` reads the run's views (``curator.query``): how the ``hardness`` scores spread,
how many rows ``rebalance`` added per role, the first ``n`` added rows in mix order (the order a trainer
sees them), and, when a stage recorded why a mix is smaller than asked (``target_checks``), that reason.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import duckdb

from curator.query import connect

WIDTH = 100


def _views(con: duckdb.DuckDBPyConnection) -> set[str]:
    return {r[0] for r in con.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()}


def _columns(con: duckdb.DuckDBPyConnection, view: str) -> set[str]:
    return {r[0] for r in con.execute(f"DESCRIBE {view}").fetchall()}


def _clip(text: str | None, limit: int) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _hardness_line(con: duckdb.DuckDBPyConnection) -> str | None:
    if "scores" not in _views(con) or "hardness" not in _columns(con, "scores"):
        return None
    n, inside, zero, one = con.execute(
        "SELECT count(hardness), count(*) FILTER (WHERE hardness > 0 AND hardness < 1), "
        "count(*) FILTER (WHERE hardness = 0), count(*) FILTER (WHERE hardness = 1) FROM scores").fetchone()
    probes = con.execute("SELECT count(*) FROM ledger WHERE status = 'probe'").fetchone()[0]
    return (f"Hardness of {n} safety prompts (share of the model's sampled answers judged harmful): {inside} between "
            f"0 and 1, {zero} at 0 (always refused), {one} at 1 (never refused). {probes} prompt-only rows were "
            "probes: in the ledger as 'probe', not in dataset/.")


def _row(r: dict) -> str:
    head = f"  [{r['rebalance_role']}" + (f", hardness {r['hardness']:.2f}]" if r["hardness"] is not None else "]")
    user = textwrap.indent(textwrap.fill("USER: " + _clip(r["prompt"], 300), WIDTH - 4), "    ")
    bot = textwrap.indent(textwrap.fill("ASSISTANT: " + _clip(r["response"], 500), WIDTH - 4), "    ")
    return f"{head}\n{user}\n{bot}"


def mix_summary(run_dir: str | Path, n: int = 3) -> str:
    """A few lines on the run's safety mix (empty when the run has neither hardness scores nor added rows)."""
    con = connect(Path(run_dir))
    lines = [h] if (h := _hardness_line(con)) else []
    views = _views(con)
    if "added" in views and "rebalance_role" in _columns(con, "added"):
        rows = con.execute("SELECT prompt, response, rebalance_role, hardness, generator FROM added "
                           "WHERE rebalance_role IS NOT NULL ORDER BY added_by, _order").fetchall()
        rows = [dict(zip(("prompt", "response", "rebalance_role", "hardness", "generator"), r)) for r in rows]
        roles = [r["rebalance_role"] for r in rows]
        answers = {r["generator"] for r in rows if r["rebalance_role"] == "benign"}
        whose = "the source's reference answer" if answers == {"reference"} else "the model's own helpful answer"
        lines.append(f"Safety mix added by rebalance: {len(rows)} rows ({roles.count('harmful')} harmful prompts "
                     f"with the model's own checked refusal, {roles.count('benign')} benign prompts with "
                     f"{whose}, checked), in training order. The first ones:")
        lines += [_row(r) for r in rows[:n]]
    if "target_checks" in views and "manifest_stages" in views:
        lines += [f"Note: {why}" for (why,) in con.execute(
            "SELECT reason FROM target_checks WHERE level = 'mix' AND reason IS NOT NULL AND stage_fp IN "
            "(SELECT fingerprint FROM manifest_stages) ORDER BY role DESC").fetchall()]
    return "\n".join(lines)
