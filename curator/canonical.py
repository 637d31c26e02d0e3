"""One input's rows as canonical samples, block by block: select (``limit`` / ``sample``), adapt to the
canonical schema, normalise (the plan's ingest stage), id, and set aside rows that cannot be used.

Deterministic and independent of how the input is cut into blocks: every row's fate depends on the row
alone, and quarantine rows come out in file-row order.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from curator.errors import InputError
from curator.parallel import map_ordered
from curator.plan import InputPart
from curator.readers import MIXED_TAG, Block, Restart, input_stem, part_blocks, read_blocks
from curator.recipe import InputSpec
from curator.samples import adapt, resolve_format, sample_ids
from curator.stage import Stage

RAW_LIMIT = 65536  # characters of a quarantined row's raw text kept in quarantine/
QUARANTINE_SCHEMA = pa.schema([
    ("sample_id", pa.string()), ("input_idx", pa.int32()), ("input_row", pa.int64()),
    ("reason", pa.string()), ("raw", pa.string()), ("raw_truncated", pa.bool_()),
])


@dataclass(frozen=True)
class Canonical:
    """A block's canonical samples (``sample_id`` first, ``_input_idx`` and ``_input_row`` last; None when
    the block had no parsed rows) and its quarantine rows (``QUARANTINE_SCHEMA``)."""

    good: pa.Table | None
    quarantine: pa.Table


def _raw_id(raw: str) -> str:
    return hashlib.sha256(("quarantine\0" + raw).encode("utf-8", "surrogatepass")).hexdigest()


def _as_read(row: dict) -> dict:
    """A parsed row as the file held it: values the reader kept as tagged JSON text (a column of mixed types)
    back to their JSON values."""
    return {k: json.loads(v.split(":", 2)[2]) if isinstance(v, str) and v.startswith(MIXED_TAG) else v
            for k, v in row.items()}


def quarantine_rows(idx: int, rows: list[tuple[int, str, str]]) -> pa.Table:
    """Quarantine rows from (input_row, raw text, reason)."""
    return pa.table({
        "sample_id": [_raw_id(raw) for _, raw, _ in rows],
        "input_idx": pa.array([idx] * len(rows), pa.int32()),
        "input_row": pa.array([r for r, _, _ in rows], pa.int64()),
        "reason": [why for _, _, why in rows],
        "raw": [raw[:RAW_LIMIT] for _, raw, _ in rows],
        "raw_truncated": [len(raw) > RAW_LIMIT for _, raw, _ in rows],
    }, schema=QUARANTINE_SCHEMA)


def selected_rows(n_rows: int, limit: int | None, sample: int | None, seed: int) -> pa.Array | None:
    """File rows kept by ``limit`` (the first rows) then ``sample`` (seeded, by row-hash rank); None = all."""
    if limit is None and sample is None:
        return None
    rows = range(min(n_rows, limit) if limit is not None else n_rows)
    if sample is None or sample >= len(rows):
        return pa.array(rows, pa.int64())
    rank = sorted(rows, key=lambda r: hashlib.sha256(f"{seed}:{r}".encode()).digest())
    return pa.array(sorted(rank[:sample]), pa.int64())


def _row_count(path: Path) -> int:
    """Rows of an input as ``selected_rows`` counts them (unparseable rows included)."""
    parsed, bad, last = 0, 0, 0
    for block in read_blocks(path):
        if isinstance(block, Restart):
            parsed, bad, last = 0, 0, 0
            continue
        parsed, bad = parsed + block.table.num_rows, bad + len(block.bad)
        last = max([last, *(b.row + 1 for b in block.bad), (pc.max(block.rows).as_py() + 1) if len(block.rows) else 0])
    return max(parsed + bad, last)


class InputCanonicaliser:
    """Turns blocks of input ``idx`` into ``Canonical`` blocks with the set-up ingest stage ``normalizer``."""

    def __init__(self, idx: int, path: Path, spec: InputSpec, normalizer: Stage, part: InputPart | None = None):
        self.idx, self.path, self.spec, self.normalizer, self.part = idx, path, spec, normalizer, part
        self.selected = None
        if spec.sample is not None:
            self.selected = selected_rows(_row_count(path), spec.limit, spec.sample, spec.sample_seed)

    def blocks(self) -> Iterator[Canonical | Restart]:
        """The input's blocks (or its part's: rows numbered from 0 within it) in file order
        (``Restart``: drop what came before, the file is read again)."""
        part = self.part
        blocks = part_blocks(self.path, part.index, part.of, part.schema) if part else read_blocks(self.path)
        return map_ordered(lambda b: b if isinstance(b, Restart) else self.canonical(*b), self._with_format(blocks))

    def _with_format(self, blocks: Iterator[Block | Restart]) -> Iterator[tuple[Block, str] | Restart]:
        """Each block with the layout the input is read in: its ``format``, or for ``auto`` what its first
        block with rows resolves to (a part gets its file's from the driver), so every row of a file is read
        alike however the file is cut into blocks."""
        fmt = self.part.format if self.part and self.part.format else None
        for block in blocks:
            if isinstance(block, Restart):
                fmt = None
                yield block
                continue
            if fmt is None and block.table.num_rows and block.table.column_names:
                fmt = resolve_format(block.table, self.spec.format, str(self.path))
            yield block, fmt or self.spec.format

    def _select(self, block: Block) -> Block:
        if self.selected is not None:
            keep = pc.is_in(block.rows, value_set=self.selected)
            chosen = set(self.selected.to_pylist()) if block.bad else set()
            return Block(block.table.filter(keep), block.rows.filter(keep), [b for b in block.bad if b.row in chosen])
        if self.spec.limit is not None:
            keep = pc.less(block.rows, self.spec.limit)
            return Block(block.table.filter(keep), block.rows.filter(keep),
                         [b for b in block.bad if b.row < self.spec.limit])
        return block

    def canonical(self, block: Block, fmt: str) -> Canonical:
        block = self._select(block)
        table, quarantined = block.table, [(b.row, b.raw, b.reason) for b in block.bad]
        good = None
        if table.num_rows:
            if not table.column_names:
                raise InputError(f"{self.path}: no columns")
            canon = adapt(table, fmt, self.spec.source or input_stem(self.path), str(self.path))
            canon = self.normalizer.process_batch(canon)
            canon = pa.table({"sample_id": sample_ids(canon), **{n: canon.column(n) for n in canon.column_names}})
            canon = canon.append_column("_input_idx", pa.repeat(pa.scalar(self.idx, pa.int32()), canon.num_rows))
            canon = canon.append_column("_input_row", block.rows.cast(pa.int64()))
            bad_mask = pc.is_valid(canon.column("_bad_reason"))
            if pc.any(bad_mask).as_py():
                bad_rows = canon.filter(bad_mask)
                originals = table.filter(bad_mask).to_pylist()
                quarantined += [
                    (r, json.dumps(_as_read(o), ensure_ascii=False, default=str), why)
                    for r, o, why in zip(bad_rows.column("_input_row").to_pylist(), originals,
                                         bad_rows.column("_bad_reason").to_pylist())
                ]
                canon = canon.filter(pc.invert(bad_mask))
            good = canon.drop_columns(["_bad_reason"])
        quarantined.sort()
        return Canonical(good, quarantine_rows(self.idx, quarantined))
