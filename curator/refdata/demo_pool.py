"""The bundled benign instruction/response pool (``curator/refdata/data/demo_pool.jsonl``): 1,250 rows
written by project code (no text from other datasets), 250 per family (``source`` column):
``stdlib_docs``, ``arithmetic``, ``unit_conversion``, ``tips``, ``rewrite``; ``format`` tags each row
as prose, list, steps or math. Built by ``tools/build_demo_pool.py`` (see ``curator/refdata/README.md``).
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa

DEMO_POOL_PATH = Path(__file__).parent / "data" / "demo_pool.jsonl"
FAMILIES = ("stdlib_docs", "arithmetic", "unit_conversion", "tips", "rewrite")
SCHEMA = pa.schema([("prompt", pa.string()), ("response", pa.string()), ("source", pa.string()),
                    ("format", pa.string())])


def load_demo_pool(path: str | Path | None = None) -> pa.Table:
    """The bundled demo pool (``curator/data/demo_pool.jsonl``) or a JSONL written by ``write_jsonl``."""
    lines = Path(path or DEMO_POOL_PATH).read_text(encoding="utf-8").splitlines()
    return pa.Table.from_pylist([json.loads(ln) for ln in lines if ln.strip()], schema=SCHEMA)
