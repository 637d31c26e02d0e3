"""What a stage sees of a shard: its canonical samples with earlier stages' scores joined and earlier drops
removed, reading only the columns the stage asks for, streamed in bounded batches.

A score file holds one row per sample its stage saw, in that stage's view order (the input order minus
what earlier decide stages dropped), so it is joined by position as the input is read; a score file in
another order (a stage that reorders its rows) is joined by ``sample_id`` instead, loaded whole.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curator.errors import RunError
from curator.io import read_parquet
from curator.plan import Plan, PlannedStage

VIEW_BYTES = 16 << 20  # uncompressed input bytes read per batch


def attach(view: pa.Table, sidecar: pa.Table) -> pa.Table:
    """Append a score sidecar's columns to ``view`` by ``sample_id`` (order of ``view`` kept)."""
    cols = [c for c in sidecar.column_names if c != "sample_id" and c not in view.column_names]
    if sidecar.num_rows == view.num_rows and sidecar.column("sample_id").equals(view.column("sample_id")):
        for c in cols:
            view = view.append_column(c, sidecar.column(c))
        return view
    index = pc.index_in(view.column("sample_id"), value_set=sidecar.column("sample_id"))
    for c in cols:
        view = view.append_column(c, pc.take(sidecar.column(c), index))
    return view


def batch_rows(path: Path) -> int:
    """Rows of a Parquet file per ``VIEW_BYTES`` of its uncompressed data."""
    meta = pq.ParquetFile(path).metadata
    size = sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups))
    return max(1, meta.num_rows * VIEW_BYTES // max(1, size)) if meta.num_rows else 1


class _Rows:
    """Consecutive rows of a Parquet file (some columns), ``take(n)`` at a time."""

    def __init__(self, path: Path, columns: list[str], step: int):
        self.path = path
        pf = pq.ParquetFile(path)
        self._empty = pa.schema([pf.schema_arrow.field(c) for c in columns]).empty_table()
        self._batches = pf.iter_batches(batch_size=step, columns=columns)
        self._head: pa.Table | None = None

    def take(self, n: int) -> pa.Table:
        parts, have = [], 0
        while have < n:
            if self._head is None or self._head.num_rows == 0:
                batch = next(self._batches, None)
                if batch is None:
                    raise RunError(f"{self.path}: fewer rows than its stage saw; it will be redone on the next run")
                self._head = pa.Table.from_batches([batch])
            part = self._head.slice(0, n - have)
            self._head = self._head.slice(part.num_rows)
            parts.append(part)
            have += part.num_rows
        return pa.concat_tables(parts) if parts else self._empty


class ShardView:
    """``ps``'s view of shard ``shard`` (its input file must exist): ``schema`` and ``batches(n)``. Of the
    available columns only those ``view_columns`` (the stage's ``Stage.view_columns``) picks are read,
    plus ``sample_id`` and the input position."""

    def __init__(self, plan: Plan, ps: PlannedStage, shard: int, view_columns: Callable[[list[str]], list[str]]):
        rundir = plan.rundir
        self.path = rundir.input_shard(shard)
        self.earlier = [p for p in plan.stages if p.index < ps.index and p.kind in ("score", "decide")
                        and rundir.scores(p.id, shard).exists()]
        self.sides = {p.id: rundir.scores(p.id, shard) for p in self.earlier}
        names = list(pq.read_schema(self.path).names)
        available = list(names)
        for p in self.earlier:
            if p.kind == "score":
                available += [c for c in pq.read_schema(self.sides[p.id]).names if c not in available]
        wanted = {"sample_id", "_input_idx", "_input_row", *view_columns(available)}
        self.columns = {"": [c for c in names if c in wanted]}
        fields = [f for f in pq.read_schema(self.path) if f.name in wanted]
        for p in self.earlier:
            if p.kind == "score":
                side = pq.read_schema(self.sides[p.id])
                new = [f for f in side if f.name in wanted and f.name not in {g.name for g in fields}]
                self.columns[p.id] = ["sample_id", *(f.name for f in new)]
                fields += new
        self.schema = pa.schema(fields)

    def _dropped(self, p: PlannedStage) -> pa.Array:
        side = read_parquet(self.sides[p.id], ["sample_id", "status"]).select(["sample_id", "status"])
        return side.filter(pc.equal(side.column("status"), "dropped")).column("sample_id").combine_chunks()

    def tables(self) -> Iterator[pa.Table]:
        """The view in consecutive tables of bounded size (as the input file is read)."""
        step = batch_rows(self.path)
        dropped = {p.id: self._dropped(p) for p in self.earlier if p.kind == "decide"}
        readers = {p.id: _Rows(self.sides[p.id], self.columns[p.id], step) for p in self.earlier if p.kind == "score"}
        whole: dict[str, pa.Table] = {}
        for batch in pq.ParquetFile(self.path).iter_batches(batch_size=step, columns=self.columns[""]):
            base = pa.Table.from_batches([batch])
            ids = base.column("sample_id")
            alive, seen = np.ones(base.num_rows, np.bool_), {}
            for p in self.earlier:
                if p.kind == "decide" and len(dropped[p.id]):
                    alive = alive & ~pc.is_in(ids, value_set=dropped[p.id]).to_numpy(zero_copy_only=False)
                elif p.kind == "score":
                    seen[p.id] = alive
            view = base if alive.all() else base.filter(pa.array(alive))
            for pid, mask in seen.items():
                if pid not in whole:
                    side = readers[pid].take(int(mask.sum()))
                    if side.column("sample_id").equals(ids.filter(pa.array(mask))):
                        view = attach(view, side.filter(pa.array(alive[mask])))
                        continue
                    whole[pid] = read_parquet(self.sides[pid], self.columns[pid]).select(self.columns[pid])  # reordered rows
                view = attach(view, whole[pid])
            yield view

    def batches(self, rows: int) -> Iterator[pa.RecordBatch]:
        """The view in consecutive record batches of exactly ``rows`` rows (the last may be shorter)."""
        rest = self.schema.empty_table()
        for table in self.tables():
            table = pa.concat_tables([rest, table]).combine_chunks() if rest.num_rows else table.combine_chunks()
            full = table.num_rows - table.num_rows % rows
            yield from table.slice(0, full).to_batches(max_chunksize=rows)
            rest = table.slice(full)
        if rest.num_rows:
            yield from rest.to_batches(max_chunksize=rows)
