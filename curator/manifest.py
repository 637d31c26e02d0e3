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
import pyarrow as pa

from curator import __version__
from curator.errors import RunError, damaged_run
from curator.inputs import input_name
from curator.io import digest_of_files, read_parquet, sha256_file, sha256_path, write_json
from curator.ledger import LEDGER_STATUSES, counts, rows_accounted
from curator.run_files import OUTPUT_DIRS, unlisted
from curator.rundir import RunDir
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
    totals = {k: sum(s[k] for s in shards) for k in _COUNTS}
    ingest = plan.ingest
    stages = [{"id": ingest.cls.name, "name": ingest.cls.name, "version": ingest.cls.version, "kind": "ingest",
               "scope": "shard", "params": params_to_dict(ingest.params), "fingerprint": ingest.fingerprint,
               "inputs": {}}]
    for ps in plan.stages:
        stages.append({"id": ps.id, "name": ps.cls.name, "version": ps.cls.version, "kind": ps.kind,
                       "scope": ps.scope, "params": params_to_dict(ps.params), "fingerprint": ps.fingerprint,
                       "inputs": ps.inputs, "artifacts": [dataclasses.asdict(a) for a in ps.cls.artifacts],
                       "report": [dataclasses.asdict(s) for s in ps.report]})
    return {
        "manifest_version": MANIFEST_VERSION,
        "run_id": uuid.uuid4().hex,
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "seconds": round(time.time() - started, 3),
        "curator": {"version": __version__, "git_commit": _git_commit()},
        "environment": environment(recipe.device),
        "recipe": {"name": recipe.name, "sha256": recipe.sha256(), "file_sha256": sha256_file(rundir.recipe),
                   "resolved": recipe.resolved()},
        "executor": executor,
        "n_shards": recipe.shards,
        "inputs": [_input_entry(i, spec) for i, spec in zip(inputs, recipe.inputs)],
        "stages": stages,
        "shards": shards,
        "totals": totals,
        "dataset": dataset,
        "gate": _last_verdict(rundir.root, dataset["digest"]),
        "timings": timings,
    }


def _input_entry(entry: dict, spec) -> dict:
    """An input as ingest recorded it, with its name, its URI as written and what its source says was read."""
    origin = source_origin(entry["uri"])
    return {**entry, "uri": canonical_uri(entry["uri"]), "name": input_name(spec), **({"origin": origin} if origin else {})}


def _last_verdict(root: Path, digest: str) -> dict | None:
    """The last ``curator gate`` verdict recorded in run directory ``root`` (``gate.json``) if it was evaluated on
    a dataset with ``digest``: a rerun that gives the same dataset keeps it."""
    try:
        verdict = json.loads((root / "gate.json").read_text())
    except (OSError, ValueError):
        return None
    return verdict if isinstance(verdict, dict) and verdict.get("dataset_digest") == digest else None


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


_CHANGED = "sha256 differs from the manifest (the file changed after the run)"
_COUNTS = ("rows_in", *LEDGER_STATUSES, "added")


def _check_file(run_dir: Path, rel: str, expected: str) -> str | None:
    path = run_dir / rel
    if not path.is_file():
        return f"{rel}: missing"
    if sha256_path(path) != expected:
        return f"{rel}: {_CHANGED}"
    return None


def _blame_manifest(run_dir: Path, manifest: dict, found: dict[str, str]) -> list[str]:
    """The problems ``found`` (path -> problem), where a changed file that still has the sha256 its done marker
    recorded (an independent record: the manifest's is the one that changed) is reported as the manifest's."""
    changed = [rel for rel, problem in found.items() if problem.endswith(_CHANGED)]
    fingerprints = [stage.get("fingerprint", "") for stage in manifest.get("stages") or []]
    recorded = RunDir(run_dir).recorded_hashes(fingerprints) if changed else {}
    manifest_changed = {rel for rel in changed if rel in recorded and recorded[rel] == sha256_path(run_dir / rel)}
    return [f"manifest.json: its record of {rel} differs from the run's done marker, which the file matches (the "
            "manifest changed?)" if rel in manifest_changed else problem for rel, problem in found.items()]


def _recipe_problems(run_dir: Path, manifest: dict) -> list[str]:
    """``recipe.yaml`` is the recipe the run ran: the sha256 the manifest recorded (an older curator recorded none)."""
    want = (manifest.get("recipe") or {}).get("file_sha256")
    path = run_dir / "recipe.yaml"
    if want is None:
        return []
    if not path.is_file():
        return ["recipe.yaml: missing"]
    if sha256_file(path) != want:
        return ["recipe.yaml: not the recipe this run ran (its sha256 differs from the manifest's "
                "recipe.file_sha256): it was replaced or edited after the run; restore it, or run the recipe again "
                "on this run directory"]
    return []


def _total_problems(manifest: dict) -> list[str]:
    """The manifest's totals, dataset rows and input rows against its per-shard counts (which ``verify_run``
    checks against the ledger files)."""
    shards, totals = manifest.get("shards") or [], manifest.get("totals") or {}
    sums = {k: sum(s.get(k, 0) for s in shards) for k in _COUNTS}
    found = [f"manifest.json: totals.{k} is {totals.get(k)}, its shards add up to {n} (the manifest changed?)"
             for k, n in sums.items() if totals.get(k) != n]
    output = ((manifest.get("recipe") or {}).get("resolved") or {}).get("output") or {}
    statuses = ("kept", "flagged") if output.get("flagged", "keep") == "keep" else ("kept",)
    trainable, rows = sum(sums[k] for k in statuses) + sums["added"], (manifest.get("dataset") or {}).get("rows")
    if rows != trainable:
        found.append(f"manifest.json: dataset.rows is {rows}, its shards' {' + '.join(statuses)} + added rows are "
                     f"{trainable} (the manifest changed?)")
    read = sum(i.get("rows", 0) for i in manifest.get("inputs") or [])
    if read != sums["rows_in"]:
        found.append(f"manifest.json: its inputs' rows add up to {read}, its shards' rows_in to {sums['rows_in']} "
                     "(the manifest changed?)")
    return found


def _dataset_row_problems(run_dir: Path, dataset: dict, found: dict[str, str]) -> list[str]:
    """The dataset's Arrow files hold the ``rows`` the manifest records (checked once they all match the manifest:
    no problem ``found`` names one)."""
    ds_rel, names = dataset.get("path", "dataset"), sorted(dataset.get("files") or {})
    if not names or any(rel.startswith(f"{ds_rel}/") for rel in found):
        return []
    readers = [pa.ipc.open_stream(pa.memory_map(str(run_dir / ds_rel / n))) for n in names if n.endswith(".arrow")]
    rows = sum(batch.num_rows for reader in readers for batch in reader)
    return [] if rows == dataset.get("rows") else [f"{ds_rel}/: holds {rows} rows, the manifest's dataset.rows is "
                                                   f"{dataset.get('rows')} (the manifest changed?)"]


def verify_run(run_dir: Path) -> Verification:
    """Re-hash exactly the files the manifest lists and ``recipe.yaml``, re-check the accounting (each ledger file
    against its shard's counts, those against the totals, the dataset's and the inputs' rows) and tell a changed
    manifest from a changed file where a done marker recorded it; list unlisted files as warnings."""
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
    found = {rel: p for rel, h in sorted(listed.items()) if (p := _check_file(run_dir, rel, h))}
    problems += _blame_manifest(run_dir, manifest, found) + _recipe_problems(run_dir, manifest)
    problems += _total_problems(manifest) + _dataset_row_problems(run_dir, dataset, found)
    warnings = [f"{rel}: not listed in the manifest (written after the run, e.g. a `datasets` cache file); not checked"
                for rel in unlisted(run_dir, set(listed), (*OUTPUT_DIRS, ds_rel))]
    return Verification(problems, warnings)


def verify(run_dir: Path) -> list[str]:
    """The problems ``verify_run`` finds (empty: every listed output matches the manifest)."""
    return verify_run(run_dir).problems
