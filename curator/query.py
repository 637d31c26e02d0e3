"""DuckDB views over run directories: ``samples``, ``scores``, ``ledger``, ``quarantine``, ``added``,
``dataset``, ``manifest_stages``, ``manifest_inputs``, ``manifest_shards``, plus one view per artifact the
run's stages declare (``Stage.artifacts``, e.g. ``rollouts`` and ``verdicts`` of ``hardness``).

``connect(run_dir)`` returns a connection with those views; ``connect([a, b])`` unions
several runs and adds a ``run_id`` column to every view (``run_ids``: the directory name, or the shortest trailing
path that tells directories of the same name apart). A finished run's listed files are checked first
(``curator.run_files``): one missing or of another size than the run wrote is a ``DamagedRunError``.
``scores`` joins every score stage's columns on ``sample_id`` (one row per canonical sample).
Artifacts are read from the manifest's per-stage ``artifacts``; an unfinished run (no manifest yet) takes
the stages its ``recipe.yaml`` names and their declarations from the stage registry (a stage the registry
does not know, or an unreadable recipe, declares nothing). Views without files are left out.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.ipc as ipc
import yaml

from curator.database import cursor
from curator.errors import DamagedRunError, RecipeError, damaged_run
from curator.manifest import read_manifest
from curator.registry import get_stage
from curator.run_files import check_intact

EXAMPLES = {
    "riskiest samples per source": (
        "SELECT source, sample_id, risk_sqsd FROM (SELECT s.source, s.sample_id, sc.risk_sqsd, "
        "row_number() OVER (PARTITION BY s.source ORDER BY sc.risk_sqsd DESC, s.sample_id) AS r FROM samples s "
        "JOIN scores sc USING (sample_id)) WHERE r <= 3 ORDER BY source, risk_sqsd DESC"),
    "hardness histogram": (
        "SELECT round(hardness, 1) AS bucket, count(*) AS prompts FROM scores "
        "WHERE hardness IS NOT NULL GROUP BY bucket ORDER BY bucket"),
    "drop reasons": (
        "SELECT status, stage, reason, count(*) AS rows FROM ledger WHERE status <> 'kept' "
        "GROUP BY status, stage, reason ORDER BY rows DESC, status, stage, reason"),
    "risk vs length": (
        "SELECT corr(risk_sqsd, char_len) AS pearson, count(*) AS n FROM scores"),
}


def _sql_path(path: Path) -> str:
    """``path`` for a single-quoted SQL literal."""
    return str(path).replace("'", "''")


def _parquet_glob(root: Path, pattern: str) -> str | None:
    return _sql_path(root / pattern) if any(root.glob(pattern)) else None


def _manifest(root: Path) -> dict | None:
    return read_manifest(root) if (root / "manifest.json").exists() else None


@contextmanager
def readable(root: Path) -> Iterator[None]:
    """Errors reading the files of run directory ``root`` (DuckDB's and Arrow's) become ``DamagedRunError``."""
    try:
        yield
    except (duckdb.IOException, duckdb.InvalidInputException, pa.ArrowInvalid, OSError) as exc:
        raise damaged_run(root, exc) from None


def _score_stages(root: Path) -> list[str]:
    """Score-stage ids from the manifest (or, for an unfinished run, every scores/ folder)."""
    manifest = _manifest(root)
    if manifest:
        return [s["id"] for s in manifest["stages"] if s["kind"] == "score" and (root / "scores" / s["id"]).exists()]
    return sorted(p.name for p in (root / "scores").glob("*") if p.is_dir()) if (root / "scores").exists() else []


def _recipe_artifacts(root: Path) -> list[dict]:
    """Artifacts declared by the stage classes an unfinished run's ``recipe.yaml`` names."""
    try:
        uses = [s["use"] for s in yaml.safe_load((root / "recipe.yaml").read_text(encoding="utf-8"))["stages"]]
    except (OSError, yaml.YAMLError, TypeError, KeyError):
        return []
    found = []
    for use in uses:
        try:
            found += [{"name": a.name, "path": a.path} for a in get_stage(str(use)).artifacts]
        except RecipeError:
            continue
    return found


def _artifact_dirs(root: Path) -> dict[str, str]:
    """Declared artifact name -> directory relative to the run (confined to the run directory)."""
    manifest = _manifest(root)
    declared = ([a for s in manifest["stages"] for a in s.get("artifacts", [])] if manifest
                else _recipe_artifacts(root))
    return {a["name"]: a["path"] for a in declared
            if not Path(a["path"]).is_absolute() and ".." not in Path(a["path"]).parts}


def _views(root: Path, con: duckdb.DuckDBPyConnection) -> dict[str, str]:
    """SQL per view for one run directory (views that have no files are left out)."""
    views = {}
    patterns = [("samples", "input/*.parquet"), ("ledger", "ledger/shard-*.parquet"),
                ("quarantine", "quarantine/*.parquet"), ("added", "added/*.parquet")]
    patterns += [(name, f"{path}/*.parquet") for name, path in sorted(_artifact_dirs(root).items())]
    for name, pattern in patterns:
        glob = _parquet_glob(root, pattern)
        if glob and name not in views:
            views[name] = f"SELECT * FROM read_parquet('{glob}', union_by_name=true)"
    if "samples" in views:
        sql = "SELECT sample_id FROM read_parquet('{}', union_by_name=true)".format(_sql_path(root / "input/*.parquet"))
        seen: set[str] = {"sample_id"}
        for k, stage in enumerate(_score_stages(root)):
            glob = _sql_path(root / "scores" / stage / "*.parquet")
            cols = con.sql(f"DESCRIBE SELECT * FROM read_parquet('{glob}', union_by_name=true)").fetchall()
            new = [c[0] for c in cols if c[0] not in seen]
            seen.update(new)
            if new:
                sel = ", ".join(f's{k}."{c}"' for c in new)
                sql = (f"SELECT base.*, {sel} FROM ({sql}) base LEFT JOIN read_parquet('{glob}', union_by_name=true) "
                       f"s{k} USING (sample_id)")
        views["scores"] = sql
    return views


def _dataset_table(root: Path) -> pa.Table | None:
    """The rows of ``dataset/`` (the Arrow files its ``state.json`` lists); None without it. A file of it that
    cannot be read is a ``DamagedRunError`` naming the file."""
    state = root / "dataset" / "state.json"
    if not state.exists():
        return None
    try:
        files = [root / "dataset" / f["filename"] for f in json.loads(state.read_text(encoding="utf-8"))["_data_files"]]
    except (OSError, ValueError) as exc:
        raise _unreadable(root, state, exc) from None
    except (KeyError, TypeError):
        raise _unreadable(root, state, "not a `datasets` state file (no _data_files list)") from None
    tables = []
    for f in files:
        try:
            tables.append(ipc.open_stream(pa.memory_map(str(f))).read_all())
        except (pa.ArrowInvalid, OSError) as exc:
            raise _unreadable(root, f, exc) from None
    return pa.concat_tables(tables) if tables else None


def _unreadable(root: Path, path: Path, reason: object) -> DamagedRunError:
    name = path.relative_to(root).as_posix() if path.is_relative_to(root) else path
    return damaged_run(root, ValueError(f"{name}: {reason}"))


def _manifest_tables(root: Path) -> dict[str, pa.Table]:
    m = _manifest(root)
    if not m:
        return {}
    stages = [{k: (json.dumps(v) if isinstance(v, dict) else v) for k, v in s.items()} for s in m["stages"]]
    shards = [{k: v for k, v in s.items() if k != "files"} for s in m["shards"]]
    return {"manifest_stages": pa.Table.from_pylist(stages), "manifest_inputs": pa.Table.from_pylist(m["inputs"]),
            "manifest_shards": pa.Table.from_pylist(shards)}


def run_ids(dirs: list[Path]) -> list[str]:
    """The ``run_id`` of each directory: its name, or where names collide the shortest trailing part of its path
    that no other directory shares (``a/sft``, ``b/sft``). A directory given twice is a usage error."""
    paths = [d.resolve() for d in dirs]
    for d, p in zip(dirs, paths):
        if paths.count(p) > 1:
            raise RecipeError(f"{d}: run directory given more than once; give each run directory once")
    ids = []
    for p in paths:
        k = 1
        while sum(q.parts[-k:] == p.parts[-k:] for q in paths) > 1:
            k += 1
        ids.append(Path(*p.parts[-k:]).as_posix())
    return ids


def connect(run_dirs: str | Path | list[str | Path] | tuple[str | Path, ...], *, own_database: bool = False) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with the views above (``TEMP`` views: private to it) over one run directory or
    several: a cursor of this process's database (``curator.database``), or, with ``own_database``, a new
    database, for settings that apply to a whole database (the gate's sandbox)."""
    dirs = [Path(d) for d in (run_dirs if isinstance(run_dirs, (list, tuple)) else [run_dirs])]
    for d in dirs:
        if not (d / "input").exists() and not (d / "manifest.json").exists():
            raise RecipeError(f"{d}: not a curator run directory (no input/ or manifest.json)")
    ids = run_ids(dirs)
    con = duckdb.connect() if own_database else cursor()
    per_view: dict[str, list[str]] = {}
    for i, d in enumerate(dirs):
        tag = "'{}' AS run_id, ".format(ids[i].replace("'", "''")) if len(dirs) > 1 else ""
        with readable(d):
            manifest = _manifest(d)
            if manifest:
                check_intact(d, manifest)
            views = _views(d.resolve(), con)
            tables = _manifest_tables(d)
            ds = _dataset_table(d)
        for name, sql in views.items():
            per_view.setdefault(name, []).append(f"SELECT {tag}* FROM ({sql})")
        if ds is not None:
            tables["dataset"] = ds
        for name, table in tables.items():
            con.register(f"_t{i}_{name}", table)
            per_view.setdefault(name, []).append(f"SELECT {tag}* FROM _t{i}_{name}")
    try:
        for name, parts in per_view.items():
            con.execute(f"CREATE TEMP VIEW {name} AS " + " UNION ALL BY NAME ".join(parts))
    except (duckdb.IOException, duckdb.InvalidInputException) as exc:  # binding a view reads its files' footers
        raise damaged_run(next((d for d in dirs if str(d.resolve()) in str(exc)), dirs[0]), exc) from None
    return con


def sql_message(exc: duckdb.Error) -> str:
    """DuckDB's error on one line with its hints (``Did you mean "scores"?``, candidate bindings); the echoed
    query and its caret are left out."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return " ".join(ln for ln in lines if not ln.startswith("LINE ") and set(ln) != {"^"})


def run_query(run_dirs: list[str | Path], sql: str) -> pa.Table:
    """The result of ``sql`` over the views of ``run_dirs``; SQL that is empty or returns no result (a statement
    that is not a query) is a ``RecipeError``, and so is a DuckDB error (with its hints and the views)."""
    if not sql.strip():
        raise RecipeError('the SQL is empty; give a query such as "SELECT status, count(*) FROM ledger GROUP BY status"')
    con = connect(run_dirs if len(run_dirs) > 1 else run_dirs[0])
    try:
        relation = con.sql(sql)
        if relation is None:
            raise RecipeError(f"{sql!r} returns no result; give a query (SELECT ...) over the views")
        return relation.to_arrow_table()
    except duckdb.Error as exc:
        damaged = [d for d in run_dirs if str(Path(d).resolve()) in str(exc)]  # a file of a run directory
        if damaged:
            raise damaged_run(damaged[0], exc) from None
        views = [r[0] for r in con.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()
                 if not r[0].startswith("_")]
        raise RecipeError(f"query failed: {sql_message(exc)}. Views available: {sorted(views)}") from None
