"""End of a run: ledger and added shards, the cleaned dataset, stats, the invariant, the manifest.

Dataset order: kept/flagged input rows by shard then input position, then added samples in
the order their stages emitted them (so a rebalanced mix keeps its interleave). Probe rows (prompts
without responses) are never in the dataset. Its layout is the recipe's ``output:``
(``curator.export``), with the score columns it asks for joined from ``scores/``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curator.errors import RunError
from curator.export import export
from curator.faults import fault_point
from curator.ingest import Ingested
from curator.io import digest_of_files, read_parquet, sha256_file, sha256_path, write_json, write_parquet
from curator.ledger import LEDGER_SCHEMA, LEDGER_STATUSES, added_rows, counts, final_statuses, rows_accounted
from curator.manifest import build_manifest, write_manifest
from curator.plan import Plan, PlannedStage
from curator.result import RunResult
from curator.rundir import RunDir, shard_name
from curator.stage import FLAG_COLUMN


def finalize(plan: Plan, ingested: Ingested, executor: dict, started: float, timings: dict[str, float]) -> RunResult:
    """Write ``ledger/``, ``added/``, ``dataset/``, ``stats.json`` and ``manifest.json`` (last) from the
    finished stages' files; raise ``RunError`` if the accounting invariant does not hold."""
    rundir = plan.rundir
    scores = _score_stages(plan)
    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:  # Parquet, Arrow and hashing release the GIL
        done = list(pool.map(lambda shard: _finalize_shard(plan, ingested, shard, scores),
                             range(plan.recipe.shards)))
    shards = [entry for entry, _, _ in done]
    kept_parts = [kept for _, kept, _ in done if kept is not None]
    added_parts = [added for _, _, added in done if added is not None]
    dataset = export(_dataset_table(kept_parts, added_parts, plan), plan.recipe.output)
    fault_point("before_publish")
    digest, dataset_files = publish_dataset(dataset, rundir.dataset, plan.final_fingerprint)
    stats = _stats(rundir, shards, plan)
    write_json(stats, rundir.stats)
    manifest = build_manifest(plan, rundir, ingested.inputs, shards, executor, started, timings,
                              {"path": "dataset", "rows": dataset.num_rows, "digest": digest, "files": dataset_files})
    totals = manifest["totals"]
    if dataset.num_rows != totals["kept"] + totals["flagged"] + totals["added"]:
        raise RunError(f"dataset has {dataset.num_rows} rows; the ledger says kept+flagged+added = "
                       f"{totals['kept'] + totals['flagged'] + totals['added']}")
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


def _with_scores(table: pa.Table, plan: Plan, shard: int, scores: dict[str, list[str]]) -> pa.Table:
    """``table`` with the ``scores`` columns of its samples (null where a stage has no row for one)."""
    for stage_id, columns in scores.items():
        path = plan.rundir.scores(stage_id, shard)
        part = read_parquet(path, ["sample_id", *columns]) if path.exists() else None
        at = pc.index_in(table.column("sample_id"), value_set=part.column("sample_id")) if part is not None else None
        for c in columns:
            table = table.append_column(c, part.column(c).take(at) if part is not None else pa.nulls(table.num_rows, pa.float64()))
    return table


def _finalize_shard(plan: Plan, ingested: Ingested, shard: int, scores: dict[str, list[str]]
                    ) -> tuple[dict, pa.Table | None, pa.Table | None]:
    """One shard's ledger file and manifest entry, its kept/flagged samples (with the ``scores`` columns
    ``output`` asks for) and its added ones."""
    rundir = plan.rundir
    files, kept, added_table = {}, None, None
    samples = read_parquet(rundir.input_shard(shard)) if rundir.input_shard(shard).exists() else None
    verdicts = [(ps.id, _verdicts(ps, rundir.scores(ps.id, shard))) for ps in plan.stages
                if ps.kind in ("score", "decide") and rundir.scores(ps.id, shard).exists()]
    parts = [read_parquet(rundir.ingest_ledger(shard))]
    if samples is not None:
        status = final_statuses(samples, verdicts)
        parts.append(status)
        kept = samples.filter(pc.is_in(status.column("status"), value_set=pa.array(["kept", "flagged"])))
        kept = _with_scores(kept, plan, shard, scores)
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


def _dataset_table(kept: list[pa.Table], added: list[pa.Table], plan: Plan) -> pa.Table:
    tables = []
    if kept:
        tables.append(pa.concat_tables(kept, promote_options="permissive"))
    if added:
        order = {ps.id: ps.index for ps in plan.stages}
        extra = pa.concat_tables(added, promote_options="permissive")
        rank = pa.array([order[s] for s in extra.column("added_by").to_pylist()], pa.int64())
        extra = extra.append_column("_stage_rank", rank)
        extra = extra.take(pc.sort_indices(extra, [("_stage_rank", "ascending"), ("_order", "ascending")]))
        tables.append(extra)
    if not tables:
        return pa.table({"sample_id": pa.array([], pa.string())})
    table = pa.concat_tables(tables, promote_options="permissive")
    return table.drop_columns([c for c in table.column_names if c.startswith("_")])


def publish_dataset(table: pa.Table, dest: Path, fingerprint: str) -> tuple[str, dict[str, str]]:
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


def _save_to_disk(table: pa.Table, path: Path, fingerprint: str) -> None:
    """``Dataset.save_to_disk`` layout: ``datasets`` writes the metadata files (saving one row)
    and Arrow then writes all rows into its data file, as one stream in batches of 1000 like
    ``datasets`` (whose writer spends most of its time converting features per batch). Empty
    tables and features that embed external files (images, audio) go through ``datasets``."""
    import datasets  # start-up time: `datasets` takes seconds to import and only this step needs it
    from datasets import Dataset  # start-up time: datasets (~1 s)
    from datasets.features.features import require_storage_embed  # start-up time: datasets (~1 s)
    from datasets.table import InMemoryTable  # start-up time: datasets (~1 s)

    datasets.disable_progress_bars()
    full = Dataset(InMemoryTable(table), fingerprint=fingerprint)
    if table.num_rows == 0 or require_storage_embed(full.features):
        full.save_to_disk(str(path))
        return
    Dataset(InMemoryTable(table.slice(0, 1)), fingerprint=fingerprint).save_to_disk(str(path))
    (data_file,) = path.glob("data-*.arrow")
    schema = pa.ipc.open_stream(pa.memory_map(str(data_file))).schema
    with pa.ipc.new_stream(str(data_file), schema) as writer:
        for batch in table.cast(schema).to_batches(max_chunksize=1000):
            writer.write_batch(batch)


def _stats(rundir: RunDir, shards: list[dict], plan: Plan) -> dict:
    reasons: Counter = Counter()
    for shard in range(plan.recipe.shards):
        ledger = read_parquet(rundir.ledger(shard))
        ledger = ledger.filter(pc.invert(pc.equal(ledger.column("status"), "kept")))
        for st, stage, why in zip(*(ledger.column(c).to_pylist() for c in ("status", "stage", "reason"))):
            reasons[f"{st}|{stage}|{why}"] += 1
    return {
        "generated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "totals": {k: sum(s[k] for s in shards) for k in ("rows_in", *LEDGER_STATUSES, "added")},
        "reasons": [{"status": k.split("|")[0], "stage": k.split("|")[1], "reason": k.split("|")[2], "rows": v}
                    for k, v in sorted(reasons.items())],
    }
