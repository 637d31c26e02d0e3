"""Render a result table as a terminal table, CSV, a JSON array, JSON Lines or Parquet. In CSV, a nested column
(list, struct or map: ``messages``) is written as JSON text. A file that cannot be written (``--out``) is a
usage error naming it."""

from __future__ import annotations

import contextlib
import io
import json
import sys
from collections.abc import Iterator

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from curator.errors import RecipeError


@contextlib.contextmanager
def _writing(out: str | None) -> Iterator[None]:
    """An ``OSError`` writing file ``out`` (None: stdout, left alone) becomes a ``RecipeError`` naming it."""
    try:
        yield
    except OSError as exc:
        if out is None:
            raise
        raise RecipeError(f"--out {out}: cannot write it ({exc.strerror or exc}); give a writable FILE") from None


def _nested(t: pa.DataType) -> bool:
    return pa.types.is_nested(t) or (pa.types.is_dictionary(t) and _nested(t.value_type))


def _csv_ready(table: pa.Table) -> pa.Table:
    """``table`` with what CSV cannot hold as text: a nested column as JSON, an interval as Python writes it
    (null stays null)."""
    for i, field in enumerate(table.schema):
        if _nested(field.type) or pa.types.is_interval(field.type):
            dump = (lambda v: json.dumps(v, default=str, ensure_ascii=False)) if _nested(field.type) else str
            text = [None if v is None else dump(v) for v in table.column(i).to_pylist()]
            table = table.set_column(i, field.name, pa.array(text, pa.string()))
    return table


def render_table(table: pa.Table, fmt: str, out: str | None) -> None:
    if fmt == "parquet":
        if not out:
            raise RecipeError("--format parquet needs --out FILE")
        with _writing(out):
            pq.write_table(table, out)
        return
    if fmt == "csv":
        buf = io.BytesIO()
        pacsv.write_csv(_csv_ready(table), buf)
        text = buf.getvalue().decode()
    elif fmt == "json":
        text = json.dumps(table.to_pylist(), default=str, ensure_ascii=False, indent=1) + "\n"
    elif fmt == "jsonl":
        text = "".join(json.dumps(row, default=str, ensure_ascii=False) + "\n" for row in table.to_pylist())
    else:
        _grid(table, out)
        return
    if out:
        with _writing(out), open(out, "w", encoding="utf-8") as fh:
            fh.write(text)
    else:
        sys.stdout.write(text)


def _grid(table: pa.Table, out: str | None) -> None:
    """The first 1000 rows as a terminal table (cells cut at 120 characters), and how many more there are."""
    from rich.console import Console  # start-up time
    from rich.table import Table  # start-up time

    grid = Table(*table.column_names)
    for row in table.to_pylist()[:1000]:
        grid.add_row(*("" if v is None else str(v)[:120] for v in row.values()))
    with _writing(out), open(out, "w", encoding="utf-8") if out else contextlib.nullcontext(sys.stdout) as fh:
        console = Console(file=fh, width=200)
        console.print(grid)
        if table.num_rows > 1000:
            console.print(f"... {table.num_rows - 1000} more rows (use --format csv --out FILE)")
