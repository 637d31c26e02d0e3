"""``curator status``: what has finished in a run directory, per stage name, read only from its files.

Stages are named by the finished run's manifest or, while a run is going, by ``cache/owners/`` (the fingerprint
each stage's outputs belong to, in the order of the run's ``recipe.yaml``); a finished run also shows its totals, gate verdict and warnings
(``curator.run_warnings``).
"""

from __future__ import annotations

from pathlib import Path

import yaml

from curator.manifest import read_manifest
from curator.query import connect, readable
from curator.run_warnings import run_warnings


def _units(markers: Path, fingerprint: str) -> dict:
    fp_dir = markers / fingerprint
    done = sorted(p.stem for p in fp_dir.glob("*.done"))
    failed = sorted(p.stem for p in fp_dir.glob("*.failed") if not p.with_suffix(".done").exists())
    return {"done": len(done), "failed": failed}


def _owners(root: Path) -> list[tuple[str, str]]:
    """(stage id, fingerprint) of an unfinished run, from ``cache/owners/`` (``ingest``, ``stage-<id>``)."""
    owners = root / "cache" / "owners"
    found = [(p.name.removeprefix("stage-"), p.read_text(encoding="utf-8").strip())
             for p in sorted(owners.iterdir())] if owners.is_dir() else []
    try:
        raw = yaml.safe_load((root / "recipe.yaml").read_text(encoding="utf-8"))["stages"]
        order = ["ingest", *(str(s.get("id") or s.get("use")) for s in raw)]
    except (OSError, yaml.YAMLError, TypeError, KeyError, AttributeError):
        order = ["ingest"]
    return sorted(found, key=lambda item: order.index(item[0]) if item[0] in order else len(order))


def run_status(root: Path) -> dict:
    manifest_path = root / "manifest.json"
    markers = root / "markers"
    out: dict = {"run_dir": str(root), "finished": manifest_path.exists()}
    if not manifest_path.exists():
        out["stages"] = [{"stage": sid, "fingerprint": fp, **_units(markers, fp)} for sid, fp in _owners(root)]
        return out
    m = read_manifest(root)
    out["stages"] = [{"stage": s["id"], "name": s["name"], "kind": s["kind"], "fingerprint": s["fingerprint"],
                      **_units(markers, s["fingerprint"]), "seconds": m.get("timings", {}).get(s["id"])}
                     for s in m["stages"]]
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
