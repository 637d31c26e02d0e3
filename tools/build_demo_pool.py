"""Build the demo pool committed as ``curator/refdata/data/demo_pool.jsonl`` (families in
``tools/demo_families.py``). Docstrings differ between Python versions, so the built file is committed;
``tests/curator/refdata/test_demo_pool.py`` checks that a rebuild reproduces it.

    python -m tools.build_demo_pool --out curator/refdata/data/demo_pool.jsonl
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
from pathlib import Path

import pyarrow as pa

from curator.errors import RecipeError
from curator.refdata.demo_pool import FAMILIES, SCHEMA
from tools.demo_families import family_makers


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
