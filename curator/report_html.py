"""HTML building blocks of ``report.html``: escaping, tables, notes and embedded matplotlib PNGs."""

from __future__ import annotations

import base64
import html
import io

CSS = """body{font:14px/1.45 system-ui,sans-serif;max-width:980px;margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.6em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:.6em 0;font-size:13px}td,th{border:1px solid #ddd;padding:3px 7px;
text-align:left;vertical-align:top}th{background:#f4f4f4}td.n{text-align:right;font-variant-numeric:tabular-nums}
img{max-width:100%;display:block;margin:.5em 0}.note{color:#777;font-style:italic}
.warnings{border:1px solid #e0a040;background:#fff6e8;padding:0 1em;margin:1em 0}
.warnings h2{border:none;margin-top:.6em}.pass{color:#176b22;font-weight:600}.fail{color:#b3261e;font-weight:600}code{font-size:12px}"""


def esc(value: object, limit: int = 0) -> str:
    """``value`` as HTML-escaped text, cut to ``limit`` characters (0: no limit)."""
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
    """A grey italic paragraph (what a section lacks, where its data comes from)."""
    return f'<p class="note">{esc(text)}</p>'


def png(fig) -> str:
    """Render a matplotlib Figure as an embedded PNG ``<img>``."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight", metadata={"Software": None})
    return f'<img alt="figure" src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}">'


def figure(ncols: int = 1, height: float = 3.0):
    """A matplotlib Figure and its ``ncols`` axes side by side."""
    from matplotlib.figure import Figure  # start-up time: matplotlib (Agg canvas, no pyplot state)

    fig = Figure(figsize=(min(12.0, 4.2 * ncols), height))
    return fig, fig.subplots(1, ncols, squeeze=False)[0]
