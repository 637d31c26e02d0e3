"""What a finished run should make its user look twice at, read only from the run directory; shown by
``curator run`` (stderr), ``curator status`` and the report's warnings box.

- an input at least half of whose rows were quarantined (with the most frequent reason);
- probe rows (no response: in the ledger as ``probe``, not in ``dataset/``) that no stage used as probes;
- a score stage that scored no row (every column it wrote is null), naming its ``sources:`` / ``where:``
  parameters and the run's sources when it has them -- the usual cause is a selection that matches nothing;
- a float score column (a risk or hardness score) that is constant across the run (it tells no sample apart);
- failed gate rules of the recorded verdict;
- rows of the sections stages declare with a ``warning`` column (``curator.report_sections.warning_section``).
"""

from __future__ import annotations

import json

import duckdb

from curator.query import sql_message

NUMERIC = ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "FLOAT", "DOUBLE", "UTINYINT", "USMALLINT",
           "UINTEGER", "UBIGINT")


def _views(con: duckdb.DuckDBPyConnection) -> set[str]:
    return {r[0] for r in con.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()}


def _q(col: str) -> str:
    return '"' + col.replace('"', '""') + '"'


def missing_responses(con: duckdb.DuckDBPyConnection, views: set[str]) -> list[str]:
    """Probe rows (ledger status ``probe``: no response) that no stage probed the model with (a hardness
    score marks a used probe). Reads the ledger's status column first, so a run without probes pays nothing."""
    if "ledger" not in views or not con.execute("SELECT count(*) FROM ledger WHERE status = 'probe'").fetchone()[0]:
        return []
    probed = ("AND sample_id NOT IN (SELECT sample_id FROM scores WHERE hardness IS NOT NULL)"
              if "scores" in views and "hardness" in {r[0] for r in con.execute("DESCRIBE scores").fetchall()}
              else "")
    rows = con.execute("SELECT source, count(*) FROM samples WHERE sample_id IN "
                       f"(SELECT sample_id FROM ledger WHERE status = 'probe' {probed}) GROUP BY source "
                       "ORDER BY 2 DESC, 1").fetchall()
    if not rows:
        return []
    total = sum(n for _, n in rows)
    by_source = ", ".join(f"{s} {n}" for s, n in rows[:5])
    return [f"{total} sample{'s have' if total > 1 else ' has'} no response ({by_source}) and no stage used them as "
            "probes: they are in the ledger as 'probe', not in dataset/; add responses to train on them, or a "
            "hardness stage to measure the model on them"]


def unscored_stages(con: duckdb.DuckDBPyConnection, manifest: dict, root) -> list[str]:
    out = []
    sources = [r[0] for r in con.execute("SELECT DISTINCT source FROM samples ORDER BY 1").fetchall()]
    for stage in manifest["stages"]:
        folder = root / "scores" / stage["id"]
        if stage["kind"] != "score" or not any(folder.glob("*.parquet")):
            continue
        glob = str(folder / "*.parquet").replace("'", "''")
        cols = [c for c, *_ in con.execute(f"DESCRIBE SELECT * FROM read_parquet('{glob}', union_by_name=true)")
                .fetchall() if c not in ("sample_id", "flag_reason")]
        if not cols:
            continue
        n, scored = con.execute(f"SELECT count(*), count(*) FILTER (WHERE {' OR '.join(f'{_q(c)} IS NOT NULL' for c in cols)}) "
                                f"FROM read_parquet('{glob}', union_by_name=true)").fetchone()
        if n and not scored:
            params = stage.get("params", {})
            why = [f"{k}: {json.dumps(params[k])}" for k in ("sources", "where") if params.get(k)]
            out.append(f"stage {stage['id']} scored none of the {n} rows it saw"
                       + (f": its {' / '.join(why)} matches no row (the run's sources: {sources})" if why else ""))
    return out


def constant_columns(con: duckdb.DuckDBPyConnection, types: tuple[str, ...] = NUMERIC) -> dict[str, float]:
    """Score columns of ``types`` with at least two values, all equal: column -> that value."""
    cols = [c for c, t, *_ in con.execute("DESCRIBE scores").fetchall()
            if (t in types or t.startswith("DECIMAL")) and not c.startswith("_")]
    if not cols:
        return {}
    parts = ", ".join(f"count({_q(c)}), min({_q(c)})::DOUBLE, max({_q(c)})::DOUBLE" for c in cols)
    row = con.execute(f"SELECT {parts} FROM scores").fetchone()
    return {c: row[3 * i + 1] for i, c in enumerate(cols) if row[3 * i] > 1 and row[3 * i + 1] == row[3 * i + 2]}


def gate_failures(manifest: dict) -> list[str]:
    gate = manifest.get("gate") or {}
    return [f"gate rule {r['name']} failed: {r['sql']} (value {r.get('value')})"
            for r in gate.get("rules", []) if not r["passed"]]


def declared(con: duckdb.DuckDBPyConnection, manifest: dict) -> list[str]:
    out = []
    for stage in manifest["stages"]:
        for sec in stage.get("report", []):
            try:
                cur = con.execute(f"SELECT * FROM ({sec['sql']}) LIMIT 0")
                if "warning" not in [d[0] for d in cur.description]:
                    continue
                out += [f"{stage['id']}: {w}" for (w,) in con.execute(
                    f"SELECT warning FROM ({sec['sql']}) WHERE warning IS NOT NULL").fetchall()]
            except duckdb.Error as exc:
                if "warning" in sec["sql"]:
                    out.append(f"{stage['id']}: a warning query failed: {sql_message(exc)}")
    return out


def mostly_quarantined(con: duckdb.DuckDBPyConnection, manifest: dict, views: set[str]) -> list[str]:
    """Inputs at least half of whose rows were quarantined, with the most frequent reason: such a file is usually
    not in the layout or format it was read as."""
    if "quarantine" not in views:
        return []
    out = []
    for idx, n, reason in con.execute("SELECT input_idx, count(*), mode(reason) FROM quarantine "
                                      "WHERE input_idx IS NOT NULL GROUP BY 1 ORDER BY 1").fetchall():
        rows = manifest["inputs"][idx].get("rows") if 0 <= idx < len(manifest["inputs"]) else None
        if rows and 2 * n >= rows:
            out.append(f"{manifest['inputs'][idx]['uri']}: {n} of its {rows} rows were quarantined (most often: "
                       f"{reason}); see them with: SELECT input_row, reason FROM quarantine")
    return out


def run_warnings(con: duckdb.DuckDBPyConnection, manifest: dict, root) -> list[str]:
    """Every warning above for the finished run at ``root`` (``con``: ``curator.query.connect(root)``)."""
    views = _views(con)
    out = mostly_quarantined(con, manifest, views)
    out += missing_responses(con, views) if "samples" in views else []
    if "samples" in views:
        out += unscored_stages(con, manifest, root)
    if "scores" in views:
        out += [f"column {c} is constant ({v:g}) across the run: it tells no sample apart"
                for c, v in constant_columns(con, ("FLOAT", "DOUBLE")).items()]
    return out + declared(con, manifest) + gate_failures(manifest)
