"""What a stage sees of a shard: its canonical samples with earlier stages' scores joined and
earlier drops removed, reading only the columns the stage asks for."""

from __future__ import annotations

from collections.abc import Callable

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curator.io import read_parquet
from curator.plan import Plan, PlannedStage


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


def shard_view(plan: Plan, ps: PlannedStage, shard: int, view_columns: Callable[[list[str]], list[str]]) -> pa.Table:
    """Samples of ``shard`` (its input file must exist) as ``ps`` sees them; of the available
    columns only those ``view_columns`` (the stage's ``Stage.view_columns``) picks are loaded, plus
    ``sample_id`` and the input position."""
    rundir = plan.rundir
    path = rundir.input_shard(shard)
    earlier = [p for p in plan.stages if p.index < ps.index and p.kind in ("score", "decide")
               and rundir.scores(p.id, shard).exists()]
    available = list(pq.read_schema(path).names)
    for p in earlier:
        if p.kind == "score":
            available += [c for c in pq.read_schema(rundir.scores(p.id, shard)).names if c not in available]
    wanted = {"sample_id", "_input_idx", "_input_row", *view_columns(available)}
    view = read_parquet(path, wanted)
    for p in earlier:
        side_path = rundir.scores(p.id, shard)
        if p.kind == "score":
            view = attach(view, read_parquet(side_path, wanted))
        else:
            side = read_parquet(side_path, ["sample_id", "status"])
            dropped = side.filter(pc.equal(side.column("status"), "dropped")).column("sample_id")
            view = view.filter(pc.invert(pc.is_in(view.column("sample_id"), value_set=dropped)))
    return view
