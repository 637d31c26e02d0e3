"""Deterministic benign instruction/response pool built by project code (no text from other datasets).

Families (``source`` column): ``stdlib_docs`` (Python standard-library questions answered from the
running interpreter's docstrings), ``arithmetic`` and ``unit_conversion`` (word problems with computed,
worked answers), ``tips`` (bulleted tips and numbered how-tos composed from parts written for this
project) and ``rewrite`` (passive voice, sentence <-> bullet list, one-line docstring summaries).
``format`` tags each row as prose, list, steps or math. Docstrings differ between Python versions,
so the built pool is committed as ``curator/data/demo_pool.jsonl``; rebuild it with
``python -m curator.demo_pool --out curator/data/demo_pool.jsonl``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
from pathlib import Path

import pyarrow as pa

from curator.demo_families import family_makers
from curator.errors import RecipeError

DEMO_POOL_PATH = Path(__file__).parent / "data" / "demo_pool.jsonl"
FAMILIES = ("stdlib_docs", "arithmetic", "unit_conversion", "tips", "rewrite")
SCHEMA = pa.schema([("prompt", pa.string()), ("response", pa.string()), ("source", pa.string()),
                    ("format", pa.string())])


def _rng(seed: int, family: str) -> random.Random:
    return random.Random(int.from_bytes(hashlib.sha256(f"{seed}\x00{family}".encode()).digest()[:8], "big"))


def build_demo_pool(n_per_family: int = 250, seed: int = 0) -> pa.Table:
    """``n_per_family`` distinct (prompt, response) rows per family, deterministic for (seed, Python version)."""
    if n_per_family < 1:
        raise RecipeError(f"n_per_family must be >= 1, got {n_per_family}")
    makers = family_makers()
    rows = []
    for family in FAMILIES:
        rng, seen = _rng(seed, family), set()
        for _ in range(50 * n_per_family):
            prompt, response, fmt = makers[family](rng)
            if (prompt, response) not in seen:
                seen.add((prompt, response))
                rows.append({"prompt": prompt, "response": response, "source": family, "format": fmt})
                if len(seen) == n_per_family:
                    break
        else:
            raise RecipeError(f"demo family {family!r} cannot produce {n_per_family} distinct samples")
    return pa.Table.from_pylist(rows, schema=SCHEMA)


def write_jsonl(table: pa.Table, path: str | Path) -> None:
    """One JSON object per line, keys in schema order, UTF-8."""
    with open(path, "w", encoding="utf-8") as fh:
        for row in table.to_pylist():
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")


def load_demo_pool(path: str | Path | None = None) -> pa.Table:
    """The bundled demo pool (``curator/data/demo_pool.jsonl``) or a JSONL written by ``write_jsonl``."""
    lines = Path(path or DEMO_POOL_PATH).read_text(encoding="utf-8").splitlines()
    return pa.Table.from_pylist([json.loads(ln) for ln in lines if ln.strip()], schema=SCHEMA)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--n-per-family", type=int, default=250)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    table = build_demo_pool(args.n_per_family, args.seed)
    write_jsonl(table, args.out)
    print(f"wrote {table.num_rows} rows to {args.out} ({args.out.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
