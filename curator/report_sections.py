"""Report sections stages declare (``Stage.report_sections``): histograms, top samples, warnings, thresholds, samples.

Each is a DuckDB query over the run's views (``scores``, ``samples``, ``ledger``, ``added``; see ``curator.query``);
``label`` starts the title (``"<label>: ..."``) and names the section's anchor in ``report.html``.
"""

from __future__ import annotations

from curator.stage import ReportSection

TOP_N = 10


def _q(column: str) -> str:
    return '"' + column.replace('"', '""') + '"'


def histogram_section(column: str, label: str, note: str = "") -> ReportSection:
    """The histogram of ``column`` over the samples that have a value."""
    c = _q(column)
    return ReportSection(f"{label}: distribution of {column}", f"SELECT {c}::DOUBLE AS {c} FROM scores WHERE {c} IS NOT NULL",
                         histogram=column, note=note)


def length_section(column: str, label: str) -> ReportSection:
    """The histogram of ``column`` split by tercile of sample length (prompt + response characters): does the
    score track length?"""
    c = _q(column)
    length = "length(coalesce(s.prompt, '')) + length(coalesce(s.response, ''))"
    sql = (f"SELECT sc.{c}::DOUBLE AS {c}, ['short', 'medium', 'long'][ntile(3) OVER (ORDER BY {length}, sample_id)] "
           f"AS length FROM scores sc JOIN samples s USING (sample_id) WHERE sc.{c} IS NOT NULL")
    return ReportSection(f"{label}: {column} by sample length", sql, histogram=column,
                         note="one curve per third of the samples by prompt + response characters")


def top_section(column: str, label: str, n: int = TOP_N) -> ReportSection:
    """The ``n`` samples with the highest ``column``, with source, ledger status, prompt and response."""
    c = _q(column)
    sql = (f"SELECT sc.{c} AS {c}, left(sc.sample_id, 12) AS sample_id, s.source, l.status, s.prompt, s.response "
           "FROM scores sc JOIN samples s USING (sample_id) LEFT JOIN ledger l ON l.sample_id = s.sample_id "
           f"AND l.input_idx = s._input_idx AND l.input_row = s._input_row WHERE sc.{c} IS NOT NULL "
           f"ORDER BY sc.{c} DESC, sc.sample_id LIMIT {n}")
    return ReportSection(f"{label}: the {n} samples with the highest {column}", sql)


def score_sections(columns: tuple[str, ...], top: str, length: str) -> tuple[ReportSection, ...]:
    """Per score column: its histogram by sample length (``length`` label) and its top samples (``top``)."""
    return tuple(s for c in columns for s in (length_section(c, length), top_section(c, top)))


def warning_section(title: str, sql: str) -> ReportSection:
    """Warnings for the report's box (and ``curator status`` / ``curator run``): ``sql`` returns a ``warning``
    column; each non-null row is one warning."""
    return ReportSection(title, sql)


def threshold_section(title: str, sql: str) -> ReportSection:
    """Decision thresholds drawn on the score histograms: ``sql`` returns ``column``, ``threshold`` and ``rule``."""
    return ReportSection(title, sql)


def sample_section(title: str, table: str, group: str, columns: tuple[str, ...], n: int = 5,
                   where: str = "true") -> ReportSection:
    """Up to ``n`` rows of ``table`` per value of ``group`` (lowest ``sample_id`` first), showing ``columns``."""
    cols = ", ".join(_q(c) for c in columns)
    sql = (f"SELECT {_q(group)}, {cols} FROM (SELECT *, row_number() OVER (PARTITION BY {_q(group)} ORDER BY sample_id) "
           f"AS _n FROM {table} WHERE {where}) WHERE _n <= {n} ORDER BY {_q(group)}, _n")
    return ReportSection(title, sql)
