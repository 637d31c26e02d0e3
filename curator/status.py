"""``curator status``: what has finished in a run directory, per stage name, read only from its files.

Stages are named by the finished run's manifest or, while a run is going, by ``cache/plan.json`` (the stages the
run has planned, with their units in total); either way each has the same keys (null when not known yet). A
finished run also shows its totals, gate verdict and warnings (``curator.run_warnings``).
"""

from __future__ import annotations

import json
from pathlib import Path

from curator.manifest import read_manifest
from curator.query import connect, readable
from curator.run_warnings import run_warnings


def _units(markers: Path, fingerprint: str) -> dict:
    fp_dir = markers / fingerprint
    done = sorted(p.stem for p in fp_dir.glob("*.done"))
    failed = sorted(p.stem for p in fp_dir.glob("*.failed") if not p.with_suffix(".done").exists())
    return {"done": len(done), "failed": failed}


def _entry(stage: dict, markers: Path, seconds: float | None) -> dict:
    """One stage's status, the same keys whether the run has finished or not: ``units`` in total (as planned;
    a finished run's are all done), ``done``, ``failed`` (unit names) and ``seconds`` (null while running)."""
    counts = _units(markers, stage["fingerprint"])
    return {"stage": stage["id"], "name": stage["name"], "kind": stage["kind"], "fingerprint": stage["fingerprint"],
            "units": stage.get("units", counts["done"]), **counts, "seconds": seconds}


def _planned(root: Path) -> list[dict]:
    """The stages an unfinished run has planned so far (``cache/plan.json``); none before it has hashed its inputs."""
    try:
        return json.loads((root / "cache" / "plan.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []


def run_status(root: str | Path) -> dict:
    """What ``curator status`` prints for run directory ``root``, as a dict."""
    root = Path(root)
    manifest_path = root / "manifest.json"
    markers = root / "markers"
    out: dict = {"run_dir": str(root), "finished": manifest_path.exists()}
    if not manifest_path.exists():
        out["stages"] = [_entry(s, markers, None) for s in _planned(root)]
        return out
    m = read_manifest(root)
    out["stages"] = [_entry(s, markers, m.get("timings", {}).get(s["id"])) for s in m["stages"]]
    out["totals"] = m["totals"]
    out["dataset_digest"] = m["dataset"]["digest"]
    out["gate"] = m.get("gate")
    with readable(root):
        out["warnings"] = run_warnings(connect(root), m, root)
    out["left_out"] = left_out(root, m)
    return out


# -- Why stages left items out: every declared artifact with `stage_fp` and `reason` columns (e.g. rebalance's
# -- `target_checks`), its rows of this run's stage counted per level, role and reason (null reason = kept).
def left_out(root: Path, manifest: dict) -> dict:
    """{stage id: {artifact: [{level, role, reason, n}, ...]}} for the finished run in ``root``."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    out: dict = {}
    for stage in manifest["stages"]:
        for art in stage.get("artifacts", []):
            path = root / art["path"]
            if Path(art["path"]).is_absolute() or ".." in Path(art["path"]).parts or not any(path.glob("*.parquet")):
                continue
            table = pq.read_table(path)
            keys = [c for c in ("level", "role", "reason") if c in table.column_names]
            if not {"stage_fp", "reason"} <= set(table.column_names):
                continue
            mine = table.filter(pc.equal(table.column("stage_fp"), stage["fingerprint"])).select(keys)
            rows = mine.group_by(keys, use_threads=False).aggregate([([], "count_all")]).to_pylist()
            out.setdefault(stage["id"], {})[art["name"]] = sorted(
                ({**{k: r[k] for k in keys}, "n": r["count_all"]} for r in rows),
                key=lambda r: tuple(str(r.get(k)) for k in keys))
    return out
