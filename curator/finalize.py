"""End of a run: ledger and added shards, the cleaned dataset, stats, the invariant, the manifest.

Dataset order: kept (and flagged, unless ``output: {flagged: drop}``) input rows by shard then input position,
then added samples in the order their stages emitted them (so a rebalanced mix keeps its interleave). Probe rows
(prompts without responses) are never in the dataset. Its layout is the recipe's ``output:``
(``curator.export``), with the score columns it asks for joined from ``scores/``.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curator.database import cursor
from curator.errors import RunError
from curator.export import export
from curator.faults import fault_point
from curator.features import as_huggingface, carried, with_carried
from curator.ingest import Ingested
from curator.io import (
    READ_BATCH_ROWS,
    digest_of_files,
    parquet_chunks,
    read_parquet,
    sha256_file,
    sha256_path,
    write_json,
    write_parquet,
)
from curator.ledger import (
    LEDGER_SCHEMA,
    LEDGER_STATUSES,
    added_rows,
    counts,
    final_statuses,
    probe_mask,
    rows_accounted,
)
from curator.manifest import build_manifest, write_manifest
from curator.parallel import map_ordered
from curator.plan import Plan, PlannedStage
from curator.result import RunResult
from curator.run_files import file_sizes, remove_unlisted
from curator.rundir import RunDir, shard_name
from curator.samples import CANONICAL
from curator.stage import FLAG_COLUMN

LOG = logging.getLogger("curator.finalize")


def finalize(plan: Plan, ingested: Ingested, executor: dict, started: float, timings: dict[str, float]) -> RunResult:
    """Write ``ledger/``, ``added/``, ``dataset/``, ``stats.json`` and ``manifest.json`` (last) from the
    finished stages' files, removing the shard files an earlier run left that this one does not list
    (``curator.run_files.remove_unlisted``); raise ``RunError`` if the accounting invariant does not hold."""
    rundir, t0 = plan.rundir, time.time()
    scores = _score_stages(plan)
    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:  # Parquet, Arrow and hashing release the GIL
        done = list(pool.map(lambda shard: _finalize_shard(plan, ingested, shard), range(plan.recipe.shards)))
    shards = [entry for entry, _, _ in done]
    remove_unlisted(rundir.root, {rel for entry in shards for rel in entry["files"]})
    kept_masks = [(entry["shard"], mask) for entry, mask, _ in done if mask is not None]
    added_parts = [added for _, _, added in done if added is not None]
    parts = DatasetParts(plan, kept_masks, added_parts, scores)
    # the default layout streams; a training layout is built from the whole table (row-local, one pass)
    dataset = parts if plan.recipe.output.format in ("table", "arrow") else export(parts.whole(), plan.recipe.output)
    fault_point("before_publish")
    digest, dataset_files = publish_dataset(dataset, rundir.dataset, plan.final_fingerprint)
    stats = _stats(rundir, shards, plan)
    write_json(stats, rundir.stats)
    timings = {**timings, "phase:finalize": round(time.time() - t0, 3)}  # up to the manifest's file hashes
    manifest = build_manifest(plan, rundir, ingested.inputs, shards, executor, started, timings,
                              {"path": "dataset", "rows": dataset.num_rows, "digest": digest, "files": dataset_files})
    manifest["sizes"] = file_sizes(rundir.root, manifest)  # what readers of the run check first (run_files)
    totals = manifest["totals"]
    trainable = sum(totals[s] for s in plan.recipe.output.trainable()) + totals["added"]
    if dataset.num_rows != trainable:
        raise RunError(f"dataset has {dataset.num_rows} rows; the ledger says "
                       f"{'+'.join(plan.recipe.output.trainable())}+added = {trainable}")
    fault_point("before_manifest")
    write_manifest(manifest, rundir.manifest)
    return RunResult(rundir.root, manifest, digest)


def _score_stages(plan: Plan) -> dict[str, list[str]]:
    """Score stage id -> the columns ``output.scores`` asks for that it provides (every one is somewhere)."""
    found: dict[str, list[str]] = {}
    available: list[str] = []
    for ps in plan.stages:
        files = sorted(plan.rundir.scores(ps.id, 0).parent.glob("*.parquet")) if ps.kind == "score" else []
        names = [c for c in (pq.read_schema(files[0]).names if files else []) if c != "sample_id"]
        found[ps.id] = [c for c in plan.recipe.output.scores if c in names and c not in available]
        available += names
    missing = [c for c in plan.recipe.output.scores if c not in available]
    if missing:
        raise RunError(f"output.scores: no score stage of this run provides {missing}; score columns: {available}")
    return {k: v for k, v in found.items() if v}


def _score_schema(plan: Plan, stage_id: str, columns: list[str]) -> pa.Schema:
    """The types of ``columns`` in a score stage's files."""
    files = sorted(plan.rundir.scores(stage_id, 0).parent.glob("*.parquet"))
    schema = pq.read_schema(files[0])
    return pa.schema([schema.field(c) for c in columns])


def _with_scores(table: pa.Table, plan: Plan, shard: int, scores: dict[str, list[str]]) -> pa.Table:
    """``table`` with the ``scores`` columns of its samples (null where a stage has no row for one)."""
    for stage_id, columns in scores.items():
        path = plan.rundir.scores(stage_id, shard)
        part = read_parquet(path, ["sample_id", *columns]) if path.exists() else None
        at = pc.index_in(table.column("sample_id"), value_set=part.column("sample_id")) if part is not None else None
        for c in columns:
            table = table.append_column(c, part.column(c).take(at) if part is not None else pa.nulls(table.num_rows, pa.float64()))
    return table


def _finalize_shard(plan: Plan, ingested: Ingested, shard: int) -> tuple[dict, np.ndarray | None, pa.Table | None]:
    """One shard's ledger file and manifest entry, which of its samples are kept or flagged (a mask: the
    samples themselves are read again when the dataset is written, a batch at a time) and its added ones."""
    rundir = plan.rundir
    files, kept, added_table = {}, None, None
    path = rundir.input_shard(shard)
    probes = ingested.probes.get(str(shard)) if ingested.probes is not None else None
    samples, probe = _ledger_columns(path, probes) if path.exists() else (None, None)
    verdicts = [(ps.id, _verdicts(ps, rundir.scores(ps.id, shard))) for ps in plan.stages
                if ps.kind in ("score", "decide") and rundir.scores(ps.id, shard).exists()]
    parts = [read_parquet(rundir.ingest_ledger(shard))]
    if samples is not None:
        status = final_statuses(samples, verdicts, probe)
        parts.append(status)
        kept = pc.is_in(status.column("status"), value_set=pa.array(plan.recipe.output.trainable())).to_numpy()
    augment = [ps for ps in plan.stages if ps.kind == "augment"]
    added = [read_parquet(rundir.scores(ps.id, shard)) for ps in augment if rundir.scores(ps.id, shard).exists()]
    if added:
        added_table = pa.concat_tables(added, promote_options="permissive")
        files[f"added/{shard_name(shard)}.parquet"] = write_parquet(added_table, rundir.added(shard))
        parts.append(added_rows(added_table, added_table.column("added_by")))
    ledger = pa.concat_tables(parts).cast(LEDGER_SCHEMA)
    files[f"ledger/{shard_name(shard)}.parquet"] = write_parquet(ledger, rundir.ledger(shard))
    for rel in (f"input/{shard_name(shard)}.parquet", f"quarantine/{shard_name(shard)}.parquet",
                *(f"scores/{ps.id}/{shard_name(shard)}.parquet" for ps in plan.stages
                  if ps.kind in ("score", "decide", "augment"))):
        if (rundir.root / rel).exists():
            files[rel] = sha256_path(rundir.root / rel)
    c = counts(ledger)
    expected = ingested.rows_in(shard)
    got = rows_accounted(c)
    if got != expected:
        raise RunError(f"accounting invariant broken on {shard_name(shard)}: {expected} input rows but "
                       f"{got} ledger rows ({'+'.join(LEDGER_STATUSES)})")
    return {"shard": shard, "rows_in": expected, **c, "files": dict(sorted(files.items()))}, kept, added_table


def _ledger_columns(path: Path, probes: int | None) -> tuple[pa.Table, pa.Array]:
    """An input shard's ``sample_id`` and input position (chunked as ``read_parquet`` chunks them) and its
    probe mask, in one pass: the response text is held a chunk at a time, never for the whole shard, and
    not read at all when ingest counted no probe in the shard (``probes`` = 0; None: not counted)."""
    ids, read = ["sample_id", "_input_idx", "_input_row"], probes != 0
    keep, masks = [], []
    for chunk in parquet_chunks(path, ids + ["response"] if read else ids):
        keep.append(chunk.select(ids))
        masks.append(probe_mask(chunk.column("response")) if read else pa.array(np.zeros(chunk.num_rows, np.bool_)))
    return (pa.concat_tables(keep) if len(keep) > 1 else keep[0]), pa.concat_arrays(masks)


def _verdicts(ps: PlannedStage, path: Path) -> pa.Table:
    """A decide stage's verdicts, or a score stage's ``flag_reason`` rows as ``flagged`` verdicts
    (a model stage that could not score a row flags it instead of failing the run)."""
    if ps.kind == "decide":
        return read_parquet(path)
    table = read_parquet(path, ["sample_id", FLAG_COLUMN])
    if FLAG_COLUMN not in table.column_names:
        return pa.table({"sample_id": pa.array([], pa.string()), "status": pa.array([], pa.string()),
                         "reason": pa.array([], pa.string()), "rule": pa.array([], pa.string())})
    flagged = table.filter(pc.is_valid(table.column(FLAG_COLUMN)))
    n = flagged.num_rows
    return pa.table({"sample_id": flagged.column("sample_id"), "status": pa.array(["flagged"] * n, pa.string()),
                     "reason": flagged.column(FLAG_COLUMN).cast(pa.string()), "rule": pa.nulls(n, pa.string())})


class DatasetParts:
    """The dataset, in order, without holding it: each shard's kept/flagged samples (read from its input
    shard a batch at a time, as ``read_parquet`` would chunk them) and then the added samples (by stage,
    then the order their stage emitted them), all in one schema (the permissive union of the parts',
    ``_``-prefixed columns dropped). ``batches(schema)`` gives the Arrow record batches of at most 1000 rows
    that ``concat_tables(parts).cast(schema).to_batches(1000)`` gives."""

    def __init__(self, plan: Plan, kept: list[tuple[int, np.ndarray]], added: list[pa.Table],
                 scores: dict[str, list[str]] | None = None):
        self.plan, self.rundir = plan, plan.rundir
        self.kept, self.scores = kept, scores or {}
        self.extra = None
        if added:
            order = {ps.id: ps.index for ps in plan.stages}
            extra = pa.concat_tables(added, promote_options="permissive")
            rank = pa.array([order[s] for s in extra.column("added_by").to_pylist()], pa.int64())
            extra = extra.append_column("_stage_rank", rank)
            self.extra = extra.take(pc.sort_indices(extra, [("_stage_rank", "ascending"), ("_order", "ascending")]))
        schemas = [pq.ParquetFile(self.rundir.input_shard(shard)).schema_arrow for shard, _ in kept]
        self.renamed = input_renames(schemas, self.extra.column_names if self.extra is not None else [])
        for name, new in self.renamed.items():
            LOG.warning("dataset/: the input column '%s' is written as '%s': the rows an augment stage added have a "
                        "column '%s' of their own", name, new, name)
        schemas = [_renamed(schema, self.renamed) for schema in schemas]
        schemas += [_score_schema(plan, stage_id, columns) for stage_id, columns in self.scores.items() if kept]
        if self.extra is not None:
            schemas.append(self.extra.schema)
        if schemas:
            empty = [pa.Table.from_batches([], schema=sch) for sch in schemas]
            self.schema = pa.concat_tables(empty, promote_options="permissive").schema
        else:
            self.schema = pa.schema([("sample_id", pa.string())])
        self.schema = pa.schema([f for f in self.schema if not f.name.startswith("_")], metadata=self.schema.metadata)
        self.num_rows = sum(int(mask.sum()) for _, mask in kept) + (self.extra.num_rows if self.extra is not None else 0)

    def _promote(self, table: pa.Table) -> pa.Table:
        have = set(table.column_names)
        cols = []
        for f in self.schema:
            if f.name not in have:
                cols.append(pa.chunked_array([pa.nulls(table.num_rows, f.type)]))
            else:
                col = table.column(f.name)
                cols.append(col if col.type == f.type else col.cast(f.type))
        return pa.Table.from_arrays(cols, schema=self.schema)

    def tables(self) -> Iterator[pa.Table]:
        """The parts in order, each in ``self.schema``; kept samples a Parquet batch at a time. Row groups are
        read and filtered on threads ahead of the consumer (``map_ordered``: a few row groups in memory)."""
        jobs = [(shard, mask, group) for shard, mask in self.kept
                for group in range(max(1, pq.ParquetFile(self.rundir.input_shard(shard)).num_row_groups))]
        for tables in map_ordered(lambda job: self._kept_in_group(*job), jobs):
            yield from tables
        if self.extra is not None:
            yield self._promote(self.extra.drop_columns([c for c in self.extra.column_names if c.startswith("_")]))

    def _kept_in_group(self, shard: int, mask: np.ndarray, group: int) -> list[pa.Table]:
        """Row group ``group`` of shard ``shard``'s input as ``curator.io.parquet_chunks`` cuts it, its kept rows (``mask``
        covers the whole shard) with their score columns, in ``self.schema``."""
        path = self.rundir.input_shard(shard)
        pf = pq.ParquetFile(path)
        columns = [n for n in pf.schema_arrow.names if self.renamed.get(n, n) in set(self.schema.names)]
        if len(mask) == 0:  # an empty file reads as one empty chunk, which is a (0-row) batch of its own
            return [self._promote(_renamed(read_parquet(path, columns), self.renamed))]
        start = sum(pf.metadata.row_group(i).num_rows for i in range(group))
        out = []
        for batch in pf.read_row_group(group, columns=columns).to_batches(max_chunksize=READ_BATCH_ROWS):
            part = _renamed(pa.Table.from_batches([batch]), self.renamed).filter(
                pa.array(mask[start:start + batch.num_rows]))
            start += batch.num_rows
            out.append(self._promote(_with_scores(part, self.plan, shard, self.scores) if self.scores else part))
        return out

    def first_row(self) -> pa.Table:
        for table in self.tables():
            if table.num_rows:
                return table.slice(0, 1)
        return self.schema.empty_table()

    def whole(self) -> pa.Table:
        """All rows at once (an empty data set, or features ``datasets`` must embed)."""
        if not self.kept and self.extra is None:
            return pa.table({"sample_id": pa.array([], pa.string())})
        tables = list(self.tables())
        return pa.concat_tables(tables) if tables else pa.Table.from_batches([], schema=self.schema)

    def batches(self, schema: pa.Schema) -> Iterator[pa.RecordBatch]:
        """What ``Table.to_batches(max_chunksize=1000)`` gives for all the parts concatenated: a slice at every
        chunk boundary of any column, zero-row batches for empty chunks (but none after the last row)."""
        pending: list[pa.RecordBatch] = []
        for table in self.tables():
            for batch in _chunk_slices(table.cast(schema), 1000):
                if batch.num_rows:
                    yield from pending
                    pending = []
                    yield batch
                else:
                    pending.append(batch)


def input_renames(schemas: list[pa.Schema], added_columns: list[str]) -> dict[str, str]:
    """The inputs' pass-through columns that added rows also have (an augment stage's provenance: ``parent_id``,
    ``seed``, ...) -> the name the input's values take in the dataset: ``input_<name>`` (more ``input_`` if taken),
    so neither side's values are read as the other's."""
    passed = {n for schema in schemas for n in schema.names if n not in CANONICAL and not n.startswith("_")}
    taken, out = passed | set(added_columns), {}
    for name in sorted(passed & set(added_columns)):
        new = f"input_{name}"
        while new in taken:
            new = f"input_{new}"
        taken.add(new)
        out[name] = new
    return out


def _renamed(value: pa.Schema | pa.Table, names: dict[str, str]) -> pa.Schema | pa.Table:
    """``value`` with its columns renamed by ``names`` (the others kept)."""
    if not names:
        return value
    if isinstance(value, pa.Schema):
        schema = pa.schema([f.with_name(names.get(f.name, f.name)) for f in value], metadata=value.metadata)
        features = carried(value)  # the inputs' declared features follow their columns
        return with_carried(schema, {names.get(k, k): v for k, v in features.items()}) if features else schema
    return value.rename_columns([names.get(n, n) for n in value.column_names])


def _chunk_slices(table: pa.Table, max_rows: int) -> Iterator[pa.RecordBatch]:
    """Arrow's ``TableBatchReader`` over ``table``, read to the last chunk of every column (not stopping at
    the last row, so empty chunks after it give batches too)."""
    columns = [table.column(i) for i in range(table.num_columns)]
    number, offset = [0] * len(columns), [0] * len(columns)
    while columns and all(number[i] < col.num_chunks for i, col in enumerate(columns)):
        size = min([max_rows] + [len(col.chunk(number[i])) - offset[i] for i, col in enumerate(columns)])
        yield pa.RecordBatch.from_arrays([col.chunk(number[i]).slice(offset[i], size) for i, col in enumerate(columns)],
                                         schema=table.schema)
        for i, col in enumerate(columns):
            offset[i] += size
            if offset[i] == len(col.chunk(number[i])):
                number[i], offset[i] = number[i] + 1, 0


def publish_dataset(table: pa.Table | DatasetParts, dest: Path, fingerprint: str) -> tuple[str, dict[str, str]]:
    """Write a ``datasets.load_from_disk``-compatible directory atomically; return (digest, file hashes)."""
    tmp = Path(tempfile.mkdtemp(prefix=".dataset.", dir=dest.parent))
    try:
        staged = tmp / "d"
        _save_to_disk(table, staged, fingerprint)
        fault_point("write:dataset")
        if dest.exists():
            os.replace(dest, tmp / "old")
        fault_point("write:dataset-swap")
        os.replace(staged, dest)
    except OSError as exc:
        raise RunError(f"could not publish {dest}: {exc}") from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    # _save_to_disk writes a flat directory: hash each file once and derive sha256_path's digest from them
    files = {p.name: sha256_file(p) for p in sorted(dest.iterdir())}
    return digest_of_files(list(files.items())), files


def _save_to_disk(table: pa.Table | DatasetParts, path: Path, fingerprint: str, *, use_datasets: bool = False) -> None:
    """``Dataset.save_to_disk`` layout, all rows in one Arrow stream in batches of 1000 like ``datasets``
    (whose writer spends most of its time converting features per batch), a part at a time. The metadata
    files come from ``curator.hf_layout`` for plain Arrow types (importing ``datasets`` takes about a second
    of a small run); otherwise ``datasets`` writes them (saving one row) and Arrow the rows. Empty tables and
    features that embed external files (images, audio) go through ``datasets`` entirely. Either way the
    features the inputs declared (``curator.features``) are declared where the columns' types still store them."""
    from curator.hf_layout import DATA_FILE, layout, write_metadata

    described = None if use_datasets or table.num_rows == 0 else layout(table.schema, carried(table.schema))
    if described is not None:
        schema, features = described
        path.mkdir(parents=True)
        write_metadata(path, features, fingerprint)
        data_file = path / DATA_FILE
    else:
        import datasets  # start-up time: `datasets` takes seconds to import and only this step needs it
        from datasets import Dataset  # start-up time: datasets (~1 s)
        from datasets.features.features import require_storage_embed  # start-up time: datasets (~1 s)
        from datasets.table import InMemoryTable  # start-up time: datasets (~1 s)

        datasets.disable_progress_bars()
        first = table.slice(0, 1) if isinstance(table, pa.Table) else table.first_row()
        head = Dataset(InMemoryTable(as_huggingface(first)), fingerprint=fingerprint)
        if table.num_rows == 0 or require_storage_embed(head.features):
            whole = as_huggingface(table if isinstance(table, pa.Table) else table.whole())
            # one (empty) data file for no rows: `datasets` writes none, and then cannot load the directory
            Dataset(InMemoryTable(whole), fingerprint=fingerprint).save_to_disk(
                str(path), num_shards=1 if whole.num_rows == 0 else None)
            return
        head.save_to_disk(str(path))
        (data_file,) = path.glob("data-*.arrow")
        schema = pa.ipc.open_stream(pa.memory_map(str(data_file))).schema
    batches = table.cast(schema).to_batches(max_chunksize=1000) if isinstance(table, pa.Table) else table.batches(schema)
    with pa.ipc.new_stream(str(data_file), schema) as writer:
        for batch in batches:
            writer.write_batch(batch)


def _stats(rundir: RunDir, shards: list[dict], plan: Plan) -> dict:
    """Totals, and the rows of each (status, stage, reason) that is not ``kept`` (a missing value written as
    "None"), ordered by "status|stage|reason"."""
    keys = ["status", "stage", "reason"]
    ledger = pa.concat_tables([read_parquet(rundir.ledger(shard), keys) for shard in range(plan.recipe.shards)])
    con = cursor()  # (Arrow's group_by would import pyarrow.dataset)
    con.register("ledger", ledger)
    groups = con.execute("SELECT status, stage, reason, count(*) FROM ledger WHERE status <> 'kept' GROUP BY ALL")
    reasons = sorted(({k: str(v) for k, v in zip(keys, g)} | {"rows": g[3]} for g in groups.fetchall()),
                     key=lambda r: "|".join(r[k] for k in keys))
    return {
        "generated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "totals": {k: sum(s[k] for s in shards) for k in ("rows_in", *LEDGER_STATUSES, "added")},
        "reasons": reasons,
    }
