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
    return out
