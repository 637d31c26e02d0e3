"""Provenance manifest (DESIGN §6): build, validate against the shipped JSON Schema, write, verify.

Two identical runs give manifests equal except for ``run_id``, ``started_at``,
``finished_at``, ``seconds`` and ``timings`` (``VOLATILE_KEYS``). ``timings``: wall seconds of each stage's
phase by stage id, plus ``phase:ingest`` and ``phase:finalize`` (up to the manifest's own file hashes).
"""

from __future__ import annotations

import dataclasses
import json
import platform
import subprocess
import time
import uuid
from dataclasses import dataclass
from functools import cache
from importlib import metadata
from importlib.resources import files
from pathlib import Path

import jsonschema

from curator import __version__
from curator.errors import RunError, damaged_run
from curator.inputs import input_name
from curator.io import digest_of_files, read_parquet, sha256_path, write_json
from curator.ledger import LEDGER_STATUSES, counts, rows_accounted
from curator.sources import canonical_uri, source_origin
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
        "inputs": [_input_entry(i, spec) for i, spec in zip(inputs, recipe.inputs)],
        "stages": stages,
        "shards": shards,
        "totals": totals,
        "dataset": dataset,
        "gate": previous.get("gate") if previous.get("dataset", {}).get("digest") == dataset["digest"] else None,
        "timings": timings,
    }


def _input_entry(entry: dict, spec) -> dict:
    """An input as ingest recorded it, with its name, its URI as written and what its source says was read."""
    origin = source_origin(entry["uri"])
    return {**entry, "uri": canonical_uri(entry["uri"]), "name": input_name(spec), **({"origin": origin} if origin else {})}


def _read_existing(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


@cache
def _validator() -> jsonschema.protocols.Validator:
    """The manifest schema's validator, made once (``jsonschema.validate`` checks the schema itself on every
    call, ~25 ms of a tiny run)."""
    schema = _schema()
    return jsonschema.validators.validator_for(schema)(schema)


def validate_manifest(manifest: dict) -> None:
    error = jsonschema.exceptions.best_match(_validator().iter_errors(manifest))
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "(root)"
        raise RunError(f"manifest does not match its schema at {where}: {error.message}")


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
        raise damaged_run(run_dir, ValueError(f"manifest.json is not valid JSON: {exc}"), verify=False) from None


@dataclass(frozen=True)
class Verification:
    """What ``verify_run`` found: ``problems`` (a listed file missing or changed, broken accounting) fail;
    ``warnings`` (files the manifest does not list, such as the ``cache-*.arrow`` files ``datasets`` writes
    into ``dataset/`` when a loaded dataset is mapped) do not."""

    problems: list[str]
    warnings: list[str]


def _check_file(run_dir: Path, rel: str, expected: str) -> str | None:
    path = run_dir / rel
    if not path.is_file():
        return f"{rel}: missing"
    if sha256_path(path) != expected:
        return f"{rel}: sha256 differs from the manifest (the file changed after the run)"
    return None


def verify_run(run_dir: Path) -> Verification:
    """Re-hash exactly the files the manifest lists and re-check the accounting; list unlisted files as warnings."""
    run_dir = Path(run_dir)
    manifest = read_manifest(run_dir)
    problems = []
    try:
        validate_manifest(manifest)
    except RunError as exc:
        problems.append(str(exc))
    listed: dict[str, str] = {}
    for shard in manifest.get("shards", []):
        listed.update(shard["files"])
        rel = f"ledger/shard-{shard['shard']:05d}.parquet"
        ledger_path = run_dir / rel
        if ledger_path.exists() and rel in shard["files"] and _check_file(run_dir, rel, shard["files"][rel]) is None:
            c = counts(read_parquet(ledger_path))
            if rows_accounted(c) != shard["rows_in"]:
                problems.append(f"shard {shard['shard']}: ledger rows do not add up to {shard['rows_in']} input rows")
            if any(c[k] != shard.get(k) for k in (*LEDGER_STATUSES, "added")):
                problems.append(f"shard {shard['shard']}: ledger counts differ from the manifest")
    dataset = manifest.get("dataset", {})
    ds_rel = dataset.get("path", "dataset")
    files = dataset.get("files", {})
    listed.update({f"{ds_rel}/{name}": h for name, h in files.items()})
    if digest_of_files(sorted(files.items())) != dataset.get("digest"):
        problems.append(f"{ds_rel}/: the manifest's file list does not give its dataset digest (manifest edited?)")
    problems += [p for rel, h in sorted(listed.items()) if (p := _check_file(run_dir, rel, h))]
    warnings = [f"{rel}: not listed in the manifest (written after the run, e.g. a `datasets` cache file); not checked"
                for rel in _unlisted(run_dir, set(listed), ds_rel)]
    return Verification(problems, warnings)


def _unlisted(run_dir: Path, listed: set[str], ds_rel: str) -> list[str]:
    """Files under the directories whose files the manifest lists that it does not list."""
    found = []
    for top in ("input", "scores", "ledger", "added", "quarantine", ds_rel):
        for path in sorted((run_dir / top).rglob("*")) if (run_dir / top).is_dir() else []:
            rel = path.relative_to(run_dir).as_posix()
            if path.is_file() and rel not in listed:
                found.append(rel)
    return found


def verify(run_dir: Path) -> list[str]:
    """The problems ``verify_run`` finds (empty: every listed output matches the manifest)."""
    return verify_run(run_dir).problems
