"""Render a result table as a terminal table, CSV, a JSON array, JSON Lines or Parquet."""

from __future__ import annotations

import io
import json
import sys

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from curator.errors import RecipeError


def render_table(table: pa.Table, fmt: str, out: str | None) -> None:
    if fmt == "parquet":
        if not out:
            raise RecipeError("--format parquet needs --out FILE")
        pq.write_table(table, out)
        return
    if fmt == "csv":
        buf = io.BytesIO()
        pacsv.write_csv(table, buf)
        text = buf.getvalue().decode()
    elif fmt == "json":
        text = json.dumps(table.to_pylist(), default=str, ensure_ascii=False, indent=1) + "\n"
    elif fmt == "jsonl":
        text = "".join(json.dumps(row, default=str, ensure_ascii=False) + "\n" for row in table.to_pylist())
    else:
        from rich.console import Console  # start-up time
        from rich.table import Table  # start-up time

        grid = Table(*table.column_names)
        for row in table.to_pylist()[:1000]:
            grid.add_row(*("" if v is None else str(v)[:120] for v in row.values()))
        console = Console(file=open(out, "w") if out else sys.stdout, width=200)
        console.print(grid)
        if table.num_rows > 1000:
            console.print(f"... {table.num_rows - 1000} more rows (use --format csv --out FILE)")
        return
    if out:
        with open(out, "w", encoding="utf-8") as fh:
            fh.write(text)
    else:
        sys.stdout.write(text)
