"""``curator report``: one self-contained ``report.html`` for a finished run.

Reads only the run directory (manifest, ledger, scores, added, markers, declared artifacts) and imports no
stage code. The report's own sections cover what every run has (warnings, manifest, counts and times per stage,
the rows each rule dropped or flagged, score distributions without constant columns, added samples, gate); each stage
adds its own through ``Stage.report_sections()``, recorded in the manifest: a DuckDB query over the run's
views shown as a table, or as the histogram of the result's column ``histogram`` (one curve per value of the
result's other column, if it has one). A declared section's anchor is the slug of its title up to the first
``:``; a declared section whose result has a ``warning`` column feeds the warnings box, one with ``column`` and
``threshold`` columns draws lines on that column's histograms (``curator.report_sections``). Figures are
matplotlib (Agg) PNGs embedded as base64 ``data:`` URIs; there are no external assets, scripts or links.
Text from the data is HTML-escaped and truncated. Sections without data say so instead of vanishing.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import duckdb
import numpy as np

from curator.errors import RecipeError, RunError
from curator.io import atomic_path
from curator.ledger import LEDGER_STATUSES
from curator.manifest import read_manifest
from curator.query import connect, readable, sql_message
from curator.report_html import CSS, esc, figure, note, png, table
from curator.run_warnings import NUMERIC, constant_columns, run_warnings
from curator.stage import ReportSection

MAX_ROWS = 200_000  # rows read for distributions (an id-ordered, i.e. hash-random, subset)
MAX_SOURCES = 8  # per-source overlays beyond this are merged into "other"
OWN_ANCHORS = ("warnings", "manifest", "counts", "rules", "distributions", "mix", "gate")
RULE_ROWS = 10  # rows shown per decide rule


def _rows(con: duckdb.DuckDBPyConnection, sql: str) -> list[dict]:
    cur = con.execute(sql)
    names = [d[0] for d in cur.description]
    return [dict(zip(names, r)) for r in cur.fetchall()]


def _views(con: duckdb.DuckDBPyConnection) -> set[str]:
    return {r[0] for r in con.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()}


def _numeric_columns(con: duckdb.DuckDBPyConnection) -> list[str]:
    return [c for c, t, *_ in con.execute("DESCRIBE scores").fetchall()
            if (t in NUMERIC or t.startswith("DECIMAL")) and not c.startswith("_")]


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
    inputs = [{"name": i.get("name", ""), "uri": i["uri"], "format": i["format"], "rows": i["rows"],
               "sha256": i["sha256"][:16]}
              for i in m["inputs"]]
    return ("<h2 id='manifest'>Manifest summary</h2>" + table(facts, 400) + "<h3>Inputs</h3>" + table(inputs, 400))


def _compute_seconds(root: Path, fingerprint: str) -> float:
    """Seconds the stage's units spent, summed over units (from their done markers)."""
    total = 0.0
    for marker in (root / "markers" / fingerprint).glob("*.done"):
        try:
            total += float(json.loads(marker.read_text()).get("seconds") or 0.0)
        except (OSError, ValueError):
            continue
    return round(total, 3)


def section_counts(m: dict, con: duckdb.DuckDBPyConnection, root: Path) -> str:
    out = "<h2 id='counts'>Counts and times per stage</h2>" + table([m["totals"]])
    statuses = [s for s in LEDGER_STATUSES if s != "kept"]
    counted = ", ".join(f"count(*) FILTER (WHERE status = {_lit(s)}) AS {_q(s)}" for s in statuses)
    by_stage = {r["stage"]: r for r in _rows(con, f"SELECT stage, {counted}, count(*) FILTER (WHERE reason = 'added') "
                                                  "AS added FROM ledger WHERE stage IS NOT NULL GROUP BY stage")}
    zero = dict.fromkeys([*statuses, "added"], 0)
    stages = [{"stage": s["id"], "name": s["name"], "kind": s["kind"], "version": s["version"],
               **{k: v for k, v in by_stage.get(s["id"], zero).items() if k != "stage"},
               "compute seconds": _compute_seconds(root, s["fingerprint"]),
               "phase seconds": m.get("timings", {}).get(s["id"], "")} for s in m["stages"]]
    out += table(stages) + note("compute seconds: the stage's units summed (workers run them in parallel); phase "
                                "seconds: wall time of the phase, shared by consecutive per-shard stages")
    reasons = _rows(con, "SELECT status, stage, reason, count(*) AS n FROM ledger WHERE status <> 'kept' "
                         "GROUP BY ALL ORDER BY n DESC, status, stage, reason")
    return out + "<h3>Reasons</h3>" + (table(reasons) if reasons else note("nothing was dropped, flagged or quarantined"))


def section_rules(con: duckdb.DuckDBPyConnection) -> str:
    """Per (status, stage, rule): the rows it dropped or flagged, with their text."""
    out = "<h2 id='rules'>Rows each rule dropped or flagged</h2>"
    groups = _rows(con, "SELECT status, stage, coalesce(rule, reason) AS rule, count(*) AS n FROM ledger "
                        "WHERE status IN ('dropped', 'flagged') GROUP BY ALL ORDER BY stage, status, n DESC LIMIT 30")
    if not groups:
        return out + note("no row was dropped or flagged")
    for g in groups:
        rows = _rows(con, "SELECT left(l.sample_id, 12) AS sample_id, s.source, s.prompt, s.response FROM ledger l "
                          "LEFT JOIN samples s USING (sample_id) WHERE l.status = {} AND l.stage = {} AND "
                          "coalesce(l.rule, l.reason) = {} ORDER BY l.sample_id LIMIT {}".format(
                              _lit(g["status"]), _lit(g["stage"]), _lit(g["rule"]), RULE_ROWS))
        out += (f"<h3>{esc(g['status'])} by {esc(g['stage'])}: <code>{esc(g['rule'])}</code> ({g['n']} rows)</h3>"
                + table(rows, 300) + (note(f"first {RULE_ROWS} of {g['n']} by sample id") if g["n"] > RULE_ROWS else ""))
    return out


def _declared_rows(con: duckdb.DuckDBPyConnection, m: dict, needs: set[str]) -> list[dict]:
    """Rows of the declared sections whose result has the columns ``needs`` (a failing query gives none)."""
    found = []
    for stage in m["stages"]:
        for raw in stage.get("report", []):
            try:
                cur = con.execute(raw["sql"])
                names = [d[0] for d in cur.description]
                if needs <= set(names):
                    found += [dict(zip(names, r)) for r in cur.fetchall()]
            except duckdb.Error:
                continue
    return found


def thresholds(con: duckdb.DuckDBPyConnection, m: dict) -> dict[str, list[tuple[float, str]]]:
    """column -> (threshold, label) from the sections stages declare with ``threshold_section``."""
    out: dict[str, list[tuple[float, str]]] = {}
    for r in _declared_rows(con, m, {"column", "threshold"}):
        if r["threshold"] is not None:
            out.setdefault(r["column"], []).append((float(r["threshold"]), str(r.get("rule") or r["threshold"])))
    return out


def _by_source(data: dict, col: str) -> list[tuple[str, np.ndarray]]:
    values, sources = data[col], data["source"]
    names = sorted(set(sources.tolist()), key=lambda s: (-int((sources == s).sum()), s))
    groups = [(s, values[sources == s]) for s in names[:MAX_SOURCES]]
    if len(names) > MAX_SOURCES:
        groups.append(("other", values[~np.isin(sources, names[:MAX_SOURCES])]))
    return groups


def section_warnings(con: duckdb.DuckDBPyConnection, m: dict, root: Path) -> str:
    items = run_warnings(con, m, root)
    body = "<ul>" + "".join(f"<li>{esc(w)}</li>" for w in items) + "</ul>" if items else note("none")
    return f"<div class='warnings'><h2 id='warnings'>Warnings ({len(items)})</h2>{body}</div>"


def section_distributions(con: duckdb.DuckDBPyConnection, cols: list[str], n_scores: int,
                          lines: dict[str, list[tuple[float, str]]], constant: dict[str, float]) -> str:
    out = "<h2 id='distributions'>Score distributions</h2>"
    if constant:
        out += note("not plotted, constant across the run: " + ", ".join(f"{c} = {v:g}" for c, v in constant.items()))
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
        for k, (value, label) in enumerate(lines.get(col, [])):
            for ax in (a, b):
                ax.axvline(value, color=f"C{3 + k}", linestyle="--", linewidth=1.2, label=f"{label} ({value:.4g})")
        if lines.get(col):
            a.legend(fontsize=7)
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
                if {"warning", "threshold"} & {d[0] for d in con.execute(f"SELECT * FROM ({sec.sql}) LIMIT 0").description}:
                    continue  # shown in the warnings box / drawn on the histograms
                body = _histogram(con, sec) if sec.histogram else table(_rows(con, sec.sql), 200)
            except duckdb.Error as exc:
                body = note(f"query failed: {sql_message(exc)}")
            out.append(head + body)
    return "".join(out)


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
    with readable(root):
        return _build_report(root)


def _build_report(root: Path) -> str:
    m = read_manifest(root)
    con = connect(root)
    has_scores = "scores" in _views(con)
    cols = _numeric_columns(con) if has_scores else []
    n_scores = con.execute("SELECT count(*) FROM scores").fetchone()[0] if has_scores else 0
    constant = constant_columns(con) if has_scores else {}
    body = [section_warnings(con, m, root), section_summary(m), section_counts(m, con, root), section_rules(con),
            section_distributions(con, [c for c in cols if c not in constant], n_scores, thresholds(con, m), constant),
            section_declared(con, m), section_mix(con), section_gate(m)]
    title = f"curator report: {m['recipe']['name']}"
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{esc(title)}</title>"
            f"<style>{CSS}</style></head><body><h1>{esc(title)}</h1><p>{esc(root.name)} · "
            f"{json.dumps(m['totals'])[1:-1].replace(chr(34), '')}</p>{''.join(body)}</body></html>")


def write_report(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write the report (default ``RUN_DIR/report.html``) atomically; return its path. A destination that cannot
    be written is a ``RecipeError`` naming it."""
    dest = Path(out) if out else Path(run_dir) / "report.html"
    text = build_report(run_dir)
    try:
        with atomic_path(dest) as tmp:
            tmp.write_text(text, encoding="utf-8")
    except (OSError, RunError) as exc:
        cause = exc.__cause__ if isinstance(exc, RunError) and exc.__cause__ else exc
        raise RecipeError(f"{dest}: cannot write the report there ({getattr(cause, 'strerror', None) or cause}); "
                          "give a writable --out FILE") from None
    return dest
