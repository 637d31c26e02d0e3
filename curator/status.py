"""``curator status``: what has finished in a run directory, read only from its files."""

from __future__ import annotations

import json
from pathlib import Path


def run_status(root: Path) -> dict:
    markers = root / "markers"
    units = {}
    if markers.exists():
        for fp_dir in sorted(p for p in markers.iterdir() if p.is_dir()):
            done = sorted(p.stem for p in fp_dir.glob("*.done"))
            failed = sorted(p.stem for p in fp_dir.glob("*.failed") if not p.with_suffix(".done").exists())
            units[fp_dir.name] = {"done": len(done), "failed": failed}
    manifest = root / "manifest.json"
    out = {"run_dir": str(root), "finished": manifest.exists(), "units": units}
    if manifest.exists():
        m = json.loads(manifest.read_text())
        out["totals"] = m["totals"]
        out["dataset_digest"] = m["dataset"]["digest"]
        out["stages"] = [{"id": s["id"], "fingerprint": s["fingerprint"],
                          **units.get(s["fingerprint"], {"done": 0, "failed": []})} for s in m["stages"]]
        out["gate"] = m.get("gate")
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
