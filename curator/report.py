"""``curator report``: one self-contained ``report.html`` for a finished run.

Reads only the run directory (manifest, ledger, scores, added). Figures are matplotlib (Agg)
PNGs embedded as base64 ``data:`` URIs; there are no external assets, scripts or links. Text
from the data is HTML-escaped and truncated. Sections without data say so instead of vanishing.
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

import duckdb
import numpy as np

from curator.io import atomic_path
from curator.manifest import read_manifest
from curator.query import connect

MAX_ROWS = 200_000  # rows read for distributions (an id-ordered, i.e. hash-random, subset)
MAX_POINTS = 20_000  # points per scatter
MAX_SOURCES = 8  # per-source overlays beyond this are merged into "other"
TOP_N = 10
CSS = """body{font:14px/1.45 system-ui,sans-serif;max-width:980px;margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.6em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:.6em 0;font-size:13px}td,th{border:1px solid #ddd;padding:3px 7px;
text-align:left;vertical-align:top}th{background:#f4f4f4}td.n{text-align:right;font-variant-numeric:tabular-nums}
img{max-width:100%;display:block;margin:.5em 0}.note{color:#777;font-style:italic}
.pass{color:#176b22;font-weight:600}.fail{color:#b3261e;font-weight:600}code{font-size:12px}"""


def esc(value: object, limit: int = 0) -> str:
    text = "" if value is None else str(value)
    if limit and len(text) > limit:
        text = text[:limit] + "…"
    return html.escape(text, quote=True)


def _cell(v: object, limit: int) -> str:
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return f'<td class="n">{esc(f"{v:.4g}" if isinstance(v, float) else v)}</td>'
    return f"<td>{esc(v, limit)}</td>"


def table(rows: list[dict], limit: int = 160) -> str:
    """An HTML table of ``rows`` (dicts with the same keys), every cell escaped."""
    if not rows:
        return note("no rows")
    head = "".join(f"<th>{esc(k)}</th>" for k in rows[0])
    body = "".join("<tr>" + "".join(_cell(v, limit) for v in r.values()) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def note(text: str) -> str:
    return f'<p class="note">{esc(text)}</p>'


def png(fig) -> str:
    """Render a matplotlib Figure as an embedded PNG ``<img>``."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight", metadata={"Software": None})
    return f'<img alt="figure" src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}">'


def _figure(ncols: int = 1, height: float = 3.0):
    from matplotlib.figure import Figure  # Agg canvas; no pyplot, no global backend state

    fig = Figure(figsize=(min(12.0, 4.2 * ncols), height))
    return fig, fig.subplots(1, ncols, squeeze=False)[0]


def _rows(con: duckdb.DuckDBPyConnection, sql: str) -> list[dict]:
    cur = con.execute(sql)
    names = [d[0] for d in cur.description]
    return [dict(zip(names, r)) for r in cur.fetchall()]


def _views(con: duckdb.DuckDBPyConnection) -> set[str]:
    return {r[0] for r in con.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()}


def _numeric_columns(con: duckdb.DuckDBPyConnection) -> list[str]:
    kinds = ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "FLOAT", "DOUBLE", "UTINYINT", "USMALLINT",
             "UINTEGER", "UBIGINT")
    return [c for c, t, *_ in con.execute("DESCRIBE scores").fetchall()
            if (t in kinds or t.startswith("DECIMAL")) and not c.startswith("_")]


def _q(col: str) -> str:
    return '"' + col.replace('"', '""') + '"'


def _lit(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


# -- sections -------------------------------------------------------------------------------------
def section_summary(m: dict) -> str:
    rec, env = m["recipe"], m["environment"]
    facts = [{"field": "recipe", "value": rec["name"]}, {"field": "recipe sha256", "value": rec["sha256"]},
             {"field": "run id", "value": m["run_id"]}, {"field": "started / finished",
                                                         "value": f"{m['started_at']} / {m['finished_at']}"},
             {"field": "curator", "value": f"{m['curator']['version']} (git {m['curator'].get('git_commit')})"},
             {"field": "python / device", "value": f"{env['python']} / {env['device']}"},
             {"field": "packages", "value": ", ".join(f"{k} {v}" for k, v in env["packages"].items() if v)},
             {"field": "executor", "value": f"{m['executor']['kind']} x{m['executor']['workers']}"},
             {"field": "shards", "value": m["n_shards"]}, {"field": "dataset digest", "value": m["dataset"]["digest"]},
             {"field": "dataset rows", "value": m["dataset"]["rows"]}]
    inputs = [{"uri": i["uri"], "format": i["format"], "rows": i["rows"], "sha256": i["sha256"][:16]}
              for i in m["inputs"]]
    return ("<h2 id='manifest'>Manifest summary</h2>" + table(facts, 400) + "<h3>Inputs</h3>" + table(inputs, 400))


def section_counts(m: dict, con: duckdb.DuckDBPyConnection) -> str:
    out = "<h2 id='counts'>Counts per stage and drop reasons</h2>" + table([m["totals"]])
    by_stage = {r["stage"]: r for r in _rows(con, (
        "SELECT stage, count(*) FILTER (WHERE status = 'dropped') AS dropped, count(*) FILTER (WHERE status = "
        "'flagged') AS flagged, count(*) FILTER (WHERE status = 'quarantined') AS quarantined, count(*) FILTER "
        "(WHERE reason = 'added') AS added FROM ledger WHERE stage IS NOT NULL GROUP BY stage"))}
    zero = {"dropped": 0, "flagged": 0, "quarantined": 0, "added": 0}
    stages = [{"stage": s["id"], "name": s["name"], "kind": s["kind"], "version": s["version"],
               **{k: v for k, v in by_stage.get(s["id"], zero).items() if k != "stage"},
               "seconds": m.get("timings", {}).get(s["id"], "")} for s in m["stages"]]
    out += table(stages)
    reasons = _rows(con, "SELECT status, stage, reason, count(*) AS n FROM ledger WHERE status <> 'kept' "
                         "GROUP BY ALL ORDER BY n DESC, status, stage, reason")
    return out + "<h3>Reasons</h3>" + (table(reasons) if reasons else note("nothing was dropped, flagged or quarantined"))


def _by_source(data: dict, col: str) -> list[tuple[str, np.ndarray]]:
    values, sources = data[col], data["source"]
    names = sorted(set(sources.tolist()), key=lambda s: (-int((sources == s).sum()), s))
    groups = [(s, values[sources == s]) for s in names[:MAX_SOURCES]]
    if len(names) > MAX_SOURCES:
        groups.append(("other", values[~np.isin(sources, names[:MAX_SOURCES])]))
    return groups


def section_distributions(con: duckdb.DuckDBPyConnection, cols: list[str], n_scores: int) -> str:
    out = "<h2 id='distributions'>Score distributions</h2>"
    flags = [c for c, t, *_ in con.execute("DESCRIBE scores").fetchall() if t == "BOOLEAN"] if n_scores else []
    if flags:
        out += "<h3>Flags (fraction true)</h3>" + table(_rows(con, " UNION ALL ".join(
            f"SELECT {_lit(c)} AS column, count({_q(c)}) AS n, avg({_q(c)}::DOUBLE) AS fraction_true FROM scores"
            for c in flags)))
    if not cols:
        return out + note("no numeric score columns in this run")
    sel = ", ".join(f"sc.{_q(c)}::DOUBLE AS {_q(c)}" for c in cols)
    data = con.execute(f"SELECT {sel}, coalesce(s.source, '(none)') AS source FROM scores sc JOIN samples s USING (sample_id) "
                       f"ORDER BY sample_id LIMIT {MAX_ROWS}").fetchnumpy()
    data = {k: np.asarray(v.filled(np.nan) if np.ma.isMaskedArray(v) else v) for k, v in data.items()}
    if n_scores > MAX_ROWS:
        out += note(f"figures use {MAX_ROWS} of {n_scores} samples (lowest sample ids, a hash-random subset)")
    stats = _rows(con, " UNION ALL ".join(
        f"SELECT {_lit(c)} AS column, count({_q(c)}) AS n, avg({_q(c)}) AS mean, min({_q(c)}) AS min, "
        f"quantile_cont({_q(c)}, 0.5) AS p50, quantile_cont({_q(c)}, 0.95) AS p95, max({_q(c)}) AS max FROM scores"
        for c in cols))
    out += table(stats)
    for col in cols:
        finite = data[col][np.isfinite(data[col])]
        if not finite.size:
            out += f"<h3>{esc(col)}</h3>" + note("no values")
            continue
        fig, (a, b) = _figure(2)
        bins = np.histogram_bin_edges(finite, bins=30)
        a.hist(finite, bins=bins, color="#4c72b0")
        a.set_title(f"{col} (all, n={finite.size})", fontsize=9)
        for name, vals in _by_source(data, col):
            vals = vals[np.isfinite(vals)]
            b.hist(vals, bins=bins, histtype="step", label=f"{name} (n={vals.size})")
        b.set_title(f"{col} by source", fontsize=9)
        b.legend(fontsize=7)
        out += f"<h3>{esc(col)}</h3>" + png(fig)
    return out


def section_risk_length(con: duckdb.DuckDBPyConnection, cols: list[str]) -> str:
    out = "<h2 id='risk-length'>Risk vs length</h2>"
    risk = [c for c in cols if c.startswith("risk_")][:3]
    if not risk:
        return out + note("no risk_* column in this run (add a risk stage such as risk.sqsd); skipped")
    length = ("sc.char_len" if "char_len" in cols
              else "length(coalesce(s.prompt, '')) + length(coalesce(s.response, ''))")
    sel = ", ".join(f"sc.{_q(c)}::DOUBLE AS {_q(c)}" for c in risk)
    data = con.execute(f"SELECT ({length})::DOUBLE AS length, {sel} FROM scores sc JOIN samples s "
                       f"USING (sample_id) ORDER BY sample_id LIMIT {MAX_POINTS}").fetchnumpy()
    fig, axes = _figure(len(risk))
    for ax, col in zip(axes, risk):
        ax.scatter(np.asarray(data["length"]), np.asarray(data[col]), s=4, alpha=0.5)
        ax.set_xlabel("characters")
        ax.set_ylabel(col)
    return out + png(fig)


def section_hardness(con: duckdb.DuckDBPyConnection, cols: list[str]) -> str:
    out = "<h2 id='hardness'>Hardness</h2>"
    if "hardness" not in cols:
        return out + note("no hardness column in this run (add the hardness stage); skipped")
    values = np.asarray(con.execute("SELECT hardness::DOUBLE AS h FROM scores WHERE hardness IS NOT NULL")
                        .fetchnumpy()["h"], dtype=float)
    if not values.size:
        return out + note("hardness is NULL for every sample")
    fig, (ax,) = _figure(1)
    ax.hist(values, bins=np.linspace(0, 1, 11), color="#c44e52", edgecolor="white")
    ax.set_xlabel("hardness (harmful rollouts / k)")
    ax.set_ylabel("prompts")
    return out + png(fig)


def _top(con: duckdb.DuckDBPyConnection, col: str, title: str, anchor: str) -> str:
    rows = _rows(con, f"SELECT sc.{_q(col)} AS {_q(col)}, left(sc.sample_id, 12) AS sample_id, s.source, "
                      f"l.status, s.prompt, s.response FROM scores sc JOIN samples s USING (sample_id) LEFT JOIN ledger l "
                      f"ON l.sample_id = s.sample_id AND l.input_idx = s._input_idx AND l.input_row = s._input_row WHERE sc.{_q(col)} IS NOT NULL "
                      f"ORDER BY sc.{_q(col)} DESC, sc.sample_id LIMIT {TOP_N}")
    return f"<h2 id='{anchor}'>{esc(title)}</h2>" + (table(rows, 200) if rows else note(f"no {col} values"))


def section_tops(con: duckdb.DuckDBPyConnection, cols: list[str]) -> str:
    risk = "risk_sqsd" if "risk_sqsd" in cols else next((c for c in cols if c.startswith("risk_")), None)
    out = (_top(con, risk, f"Top-risk samples ({risk})", "top-risk") if risk else
           "<h2 id='top-risk'>Top-risk samples</h2>" + note("no risk_* column in this run"))
    return out + (_top(con, "hardness", "Hardest samples", "hardest") if "hardness" in cols else
                  "<h2 id='hardest'>Hardest samples</h2>" + note("no hardness column in this run"))


def section_mix(con: duckdb.DuckDBPyConnection) -> str:
    out = "<h2 id='mix'>Rebalanced mix</h2>"
    if "added" not in _views(con):
        return out + note("no added samples (no augment stage such as rebalance ran)")
    have = {r[0] for r in con.execute("DESCRIBE added").fetchall()}
    keys = [k for k in ("added_by", "generator", "template_id") if k in have]
    rows = _rows(con, f"SELECT {', '.join(keys)}, count(*) AS n FROM added GROUP BY ALL "
                      f"ORDER BY n DESC, {', '.join(keys)}")
    return out + table(rows)


def section_gate(m: dict) -> str:
    out = "<h2 id='gate'>Gate verdicts</h2>"
    gate = m.get("gate")
    if not gate:
        return out + note("no gate verdict recorded for this dataset (run `curator gate RUN_DIR`)")
    word = '<span class="pass">PASSED</span>' if gate["passed"] else '<span class="fail">FAILED</span>'
    rows = [{"rule": r["name"], "sql": r["sql"], "value": r.get("value"),
             "result": "pass" if r["passed"] else "FAIL"} for r in gate["rules"]]
    return out + f"<p>{word} at {esc(gate.get('evaluated_at'))}</p>" + table(rows, 300)


def build_report(run_dir: str | Path) -> str:
    """The report's HTML for a finished run (no external references)."""
    root = Path(run_dir).resolve()
    m = read_manifest(root)
    con = connect(root)
    has_scores = "scores" in _views(con)
    cols = _numeric_columns(con) if has_scores else []
    n_scores = con.execute("SELECT count(*) FROM scores").fetchone()[0] if has_scores else 0
    body = [section_summary(m), section_counts(m, con), section_distributions(con, cols, n_scores),
            section_risk_length(con, cols), section_hardness(con, cols), section_tops(con, cols),
            section_mix(con), section_gate(m)]
    title = f"curator report: {m['recipe']['name']}"
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{esc(title)}</title>"
            f"<style>{CSS}</style></head><body><h1>{esc(title)}</h1><p>{esc(root.name)} · "
            f"{json.dumps(m['totals'])[1:-1].replace(chr(34), '')}</p>{''.join(body)}</body></html>")


def write_report(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write the report (default ``RUN_DIR/report.html``) atomically; return its path."""
    dest = Path(out) if out else Path(run_dir) / "report.html"
    text = build_report(run_dir)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(dest) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return dest
