"""One input's rows as canonical samples, block by block: select (``limit`` / ``sample``), adapt to the
canonical schema, normalise (the plan's ingest stage), id, and set aside rows that cannot be used.

Deterministic and independent of how the input is cut into blocks: every row's fate depends on the row
alone, and quarantine rows come out in file-row order. A row's ``sample_id`` is its content's
(``samples.sample_ids``: exact copies share it; the shard reduce, ``ingest.shard_unit``, drops the later copies
or, with ``dedupe: false``, gives each its own id).
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
from curator.features import carried, with_carried
from curator.inputs import input_name
from curator.parallel import map_ordered
from curator.plan import InputPart
from curator.readers import (
    Block,
    Restart,
    part_blocks,
    read_blocks,
    row_positions,
    rows_end,
)
from curator.recipe import InputSpec
from curator.samples import adapt, as_read, preference_ids, resolve_format, sample_ids
from curator.stage import Stage

RAW_LIMIT = 65536  # characters of a quarantined row's raw text kept in quarantine/
QUARANTINE_SCHEMA = pa.schema([
    ("sample_id", pa.string()), ("input_idx", pa.int32()), ("input_row", pa.int64()),
    ("reason", pa.string()), ("raw", pa.string()), ("raw_truncated", pa.bool_()),
])


@dataclass(frozen=True)
class Canonical:
    """A block's canonical samples (``sample_id`` first, ``_input_idx`` and ``_input_row`` last, the input's
    features in the schema metadata: ``curator.features``; None when the block had no parsed rows) and its
    quarantine rows (``QUARANTINE_SCHEMA``)."""

    good: pa.Table | None
    quarantine: pa.Table


def _raw_id(raw: str) -> str:
    return hashlib.sha256(("quarantine\0" + raw).encode("utf-8", "surrogatepass")).hexdigest()


def _as_read(row: dict) -> dict:
    """A parsed row as the file held it: values the reader kept as tagged JSON text (a column of mixed types)
    back to their JSON values."""
    return {k: as_read(v) for k, v in row.items()}


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


def selected_rows(rows: list[int], sample: int, seed: int) -> pa.Array:
    """The file rows of ``rows`` (an input's first ``limit``: ``readers.row_positions``) kept by ``sample``
    (seeded, by file-row-hash rank)."""
    if sample >= len(rows):
        return pa.array(rows, pa.int64())
    rank = sorted(rows, key=lambda r: hashlib.sha256(f"{seed}:{r}".encode()).digest())
    return pa.array(sorted(rank[:sample]), pa.int64())


class InputCanonicaliser:
    """Turns blocks of input ``idx`` into ``Canonical`` blocks with the set-up ingest stage ``normalizer``."""

    def __init__(self, idx: int, path: Path, spec: InputSpec, normalizer: Stage, part: InputPart | None = None):
        self.idx, self.path, self.spec, self.normalizer, self.part = idx, path, spec, normalizer, part
        self.selected, self.end = None, None  # the file rows ``sample`` keeps; ``limit``: rows before ``end``
        if spec.sample is not None:
            self.selected = selected_rows(row_positions(path, spec.limit), spec.sample, spec.sample_seed)
        elif spec.limit is not None:
            self.end = rows_end(path, spec.limit)

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
        if self.end is not None:
            keep = pc.less(block.rows, self.end)
            return Block(block.table.filter(keep), block.rows.filter(keep), [b for b in block.bad if b.row < self.end])
        return block

    def canonical(self, block: Block, fmt: str) -> Canonical:
        block = self._select(block)
        table, quarantined = block.table, [(b.row, b.raw, b.reason) for b in block.bad]
        good = None
        if table.num_rows:
            if not table.column_names:
                raise InputError(f"{self.path}: no columns")
            fmt = resolve_format(table, fmt, str(self.path)) if fmt == "auto" else fmt
            label = self.spec.source or input_name(self.spec)  # what ``--input NAME=`` keeps, too
            canon = adapt(table, fmt, label, str(self.path), keep_column=self.spec.source is None)
            features = carried(canon.schema)  # the input's features, which the normaliser need not keep
            canon = self.normalizer.process_batch(canon)
            ids = sample_ids(canon)
            if fmt == "preference":  # a pair is its prompt, chosen and rejected answers
                ids = preference_ids(ids, canon.column("rejected").combine_chunks())
            canon = pa.table({"sample_id": ids, **{n: canon.column(n) for n in canon.column_names}})
            if features:
                canon = canon.replace_schema_metadata(with_carried(canon.schema, features).metadata)
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
