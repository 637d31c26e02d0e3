"""``curator report``: one self-contained ``report.html`` for a finished run.

Reads only the run directory (manifest, ledger, scores, added, declared artifacts). The report's own
sections cover what every run has (manifest, counts, score distributions, added samples, gate); each stage
adds its own through ``Stage.report_sections()``, recorded in the manifest: a DuckDB query over the run's
views shown as a table, or as the histogram of the result's column ``histogram`` (one curve per value of the
result's other column, if it has one). A declared section's anchor is the slug of its title up to the first
``:``. Installed score stages that did not run are named with the columns they would add. Figures are
matplotlib (Agg) PNGs embedded as base64 ``data:`` URIs; there are no external assets, scripts or links.
Text from the data is HTML-escaped and truncated. Sections without data say so instead of vanishing.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import duckdb
import numpy as np

from curator.errors import RecipeError
from curator.io import atomic_path
from curator.manifest import read_manifest
from curator.query import connect
from curator.registry import get_stage, stage_names
from curator.report_html import CSS, esc, figure, note, png, table
from curator.stage import ReportSection

MAX_ROWS = 200_000  # rows read for distributions (an id-ordered, i.e. hash-random, subset)
MAX_SOURCES = 8  # per-source overlays beyond this are merged into "other"
OWN_ANCHORS = ("manifest", "counts", "distributions", "mix", "not-in-run", "gate")
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
        fig, (a, b) = figure(2)
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


def _anchor(title: str, used: set[str]) -> str:
    base = re.sub(r"[^a-z0-9]+", "-", title.split(":")[0].lower()).strip("-") or "section"
    anchor, k = base, 1
    while anchor in used:
        k += 1
        anchor = f"{base}-{k}"
    used.add(anchor)
    return anchor


def _histogram(con: duckdb.DuckDBPyConnection, sec: ReportSection) -> str:
    cur = con.execute(f"SELECT * FROM ({sec.sql}) LIMIT {MAX_ROWS}")
    names = [d[0] for d in cur.description]
    if sec.histogram not in names:
        return note(f"the query has no column {sec.histogram!r} to draw")
    rows = cur.fetchall()
    col, group = names.index(sec.histogram), next((i for i, n in enumerate(names) if n != sec.histogram), None)
    values = np.array([np.nan if r[col] is None else float(r[col]) for r in rows])
    finite = np.isfinite(values)
    if not finite.any():
        return note("no values")
    fig, (ax,) = figure(1)
    bins = np.histogram_bin_edges(values[finite], bins=30)
    ax.hist(values[finite], bins=bins, color="#4c72b0", alpha=0.35 if group is not None else 1.0, label="all")
    if group is not None:
        keys = np.array([str(r[group]) for r in rows])
        for key in sorted(set(keys[finite].tolist())):
            part = values[finite & (keys == key)]
            ax.hist(part, bins=bins, histtype="step", label=f"{names[group]} {key} (n={part.size})")
        ax.legend(fontsize=7)
    ax.set_xlabel(sec.histogram)
    ax.set_ylabel("samples")
    return png(fig)


def section_declared(con: duckdb.DuckDBPyConnection, m: dict) -> str:
    """Every section the run's stages declare, in stage order."""
    used, out = set(OWN_ANCHORS), []
    for stage in m["stages"]:
        for raw in stage.get("report", []):
            sec = ReportSection(**raw)
            text = "; ".join(t for t in (sec.note, f"from stage {stage['id']}") if t)
            head = f"<h2 id='{_anchor(sec.title, used)}'>{esc(sec.title)}</h2>" + note(text)
            try:
                body = _histogram(con, sec) if sec.histogram else table(_rows(con, sec.sql), 200)
            except duckdb.Error as exc:
                body = note(f"query failed: {str(exc).splitlines()[0]}")
            out.append(head + body)
    return "".join(out)


def section_not_in_run(m: dict, columns: set[str]) -> str:
    """Installed score-stage families (the part of a stage name before the first '.') none of whose stages ran
    and none of whose columns the run has: what this report lacks, and which stages would add it."""
    ran = {s["name"] for s in m["stages"]}
    families: dict[str, tuple[set[str], list[str]]] = {}
    for name in stage_names():
        try:
            cls = get_stage(name)
        except (RecipeError, ImportError):
            continue
        if cls.kind == "score":
            cols, names = families.setdefault(name.split(".")[0], (set(), []))
            cols.update(cls.provides)
            names.append(name)
    hints = []
    for family, (cols, names) in sorted(families.items()):
        if ran & set(names) or cols & columns or not cols:
            continue
        label = (f"{family} column" if family in cols else f"{family}_* column"
                 if all(c.startswith(family + "_") for c in cols) else ", ".join(sorted(cols)) + " columns")
        hints.append(f"no {label} in this run (added by {', '.join(sorted(names))})")
    if not hints:
        return ""
    return "<h2 id='not-in-run'>Not in this run</h2>" + "".join(note(h) for h in hints)


def section_mix(con: duckdb.DuckDBPyConnection) -> str:
    out = "<h2 id='mix'>Added samples</h2>"
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
    all_cols = {r[0] for r in con.execute("DESCRIBE scores").fetchall()} if has_scores else set()
    body = [section_summary(m), section_counts(m, con), section_distributions(con, cols, n_scores),
            section_declared(con, m), section_not_in_run(m, all_cols), section_mix(con), section_gate(m)]
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
