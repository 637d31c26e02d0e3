"""Provenance manifest (DESIGN §6): build, validate against the shipped JSON Schema, write, verify.

Two identical runs give manifests equal except for ``run_id``, ``started_at``,
``finished_at``, ``seconds`` and ``timings`` (``VOLATILE_KEYS``).
"""

from __future__ import annotations

import dataclasses
import json
import platform
import subprocess
import time
import uuid
from importlib import metadata
from importlib.resources import files
from pathlib import Path

import jsonschema

from curator import __version__
from curator.errors import RunError
from curator.io import read_parquet, sha256_path, write_json
from curator.ledger import LEDGER_STATUSES, counts, rows_accounted
from curator.stage import params_to_dict

MANIFEST_VERSION = 1
VOLATILE_KEYS = ("run_id", "started_at", "finished_at", "seconds", "timings")
_PACKAGES = ("torch", "transformers", "datasets", "pyarrow", "duckdb", "ray")


def _schema() -> dict:
    return json.loads((files("curator") / "schemas" / "manifest.schema.json").read_text())


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                             text=True, timeout=5)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def environment(device: str) -> dict:
    versions = {}
    for pkg in _PACKAGES:
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    return {"python": platform.python_version(), "platform": platform.platform(terse=True),
            "device": device, "packages": versions}


def build_manifest(plan, rundir, inputs: list[dict], shards: list[dict], executor: dict, started: float,
                   timings: dict[str, float], dataset: dict) -> dict:
    recipe = plan.recipe
    totals = {k: sum(s[k] for s in shards) for k in ("rows_in", *LEDGER_STATUSES, "added")}
    ingest = plan.ingest
    stages = [{"id": ingest.cls.name, "name": ingest.cls.name, "version": ingest.cls.version, "kind": "ingest",
               "scope": "shard", "params": params_to_dict(ingest.params), "fingerprint": ingest.fingerprint,
               "inputs": {}}]
    for ps in plan.stages:
        stages.append({"id": ps.id, "name": ps.cls.name, "version": ps.cls.version, "kind": ps.kind,
                       "scope": ps.scope, "params": params_to_dict(ps.params), "fingerprint": ps.fingerprint,
                       "inputs": ps.inputs, "artifacts": [dataclasses.asdict(a) for a in ps.cls.artifacts],
                       "report": [dataclasses.asdict(s) for s in ps.report]})
    previous = _read_existing(rundir.manifest)
    return {
        "manifest_version": MANIFEST_VERSION,
        "run_id": uuid.uuid4().hex,
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "seconds": round(time.time() - started, 3),
        "curator": {"version": __version__, "git_commit": _git_commit()},
        "environment": environment(recipe.device),
        "recipe": {"name": recipe.name, "sha256": recipe.sha256(), "resolved": recipe.resolved()},
        "executor": executor,
        "n_shards": recipe.shards,
        "inputs": inputs,
        "stages": stages,
        "shards": shards,
        "totals": totals,
        "dataset": dataset,
        "gate": previous.get("gate") if previous.get("dataset", {}).get("digest") == dataset["digest"] else None,
        "timings": timings,
    }


def _read_existing(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def validate_manifest(manifest: dict) -> None:
    try:
        jsonschema.validate(manifest, _schema())
    except jsonschema.ValidationError as exc:
        where = "/".join(str(p) for p in exc.absolute_path) or "(root)"
        raise RunError(f"manifest does not match its schema at {where}: {exc.message}") from None


def write_manifest(manifest: dict, path: Path) -> None:
    validate_manifest(manifest)
    write_json(manifest, path)


def read_manifest(run_dir: Path) -> dict:
    path = Path(run_dir) / "manifest.json"
    if not path.exists():
        raise RunError(f"{run_dir}: no manifest.json; the run has not finished (see `curator status {run_dir}`)")
    try:
        return json.loads(path.read_text())
    except ValueError as exc:
        raise RunError(f"{path}: not valid JSON ({exc})") from None


def verify(run_dir: Path) -> list[str]:
    """Re-hash every output listed in the manifest and re-check the accounting; return problems."""
    run_dir = Path(run_dir)
    manifest = read_manifest(run_dir)
    problems = []
    try:
        validate_manifest(manifest)
    except RunError as exc:
        problems.append(str(exc))
    for shard in manifest.get("shards", []):
        for rel, expected in shard["files"].items():
            path = run_dir / rel
            if not path.exists():
                problems.append(f"{rel}: missing")
            elif sha256_path(path) != expected:
                problems.append(f"{rel}: sha256 differs from the manifest (file changed after the run)")
        ledger_path = run_dir / "ledger" / f"shard-{shard['shard']:05d}.parquet"
        if ledger_path.exists():
            c = counts(read_parquet(ledger_path))
            if rows_accounted(c) != shard["rows_in"]:
                problems.append(f"shard {shard['shard']}: ledger rows do not add up to {shard['rows_in']} input rows")
            if any(c[k] != shard.get(k) for k in (*LEDGER_STATUSES, "added")):
                problems.append(f"shard {shard['shard']}: ledger counts differ from the manifest")
    dataset = manifest.get("dataset", {})
    ds_path = run_dir / dataset.get("path", "dataset")
    if not ds_path.exists():
        problems.append("dataset/: missing")
    else:
        for name, expected in dataset.get("files", {}).items():
            if not (ds_path / name).exists() or sha256_path(ds_path / name) != expected:
                problems.append(f"dataset/{name}: missing or changed after the run")
        if sha256_path(ds_path) != dataset.get("digest"):
            problems.append("dataset/: digest differs from the manifest")
    return problems
