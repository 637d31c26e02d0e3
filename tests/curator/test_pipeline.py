"""Engine behaviour end to end on synthetic data: determinism, workers, resume, fingerprints."""

import json
import os
import subprocess
import sys
from pathlib import Path

import datasets
import pyarrow.parquet as pq
import pytest

from curator.manifest import VOLATILE_KEYS, verify
from curator.pipeline import run
from curator.plan import InputFile, build_plan
from curator.recipe import load_recipe
from curator.rundir import RunDir
from tests.support import ENGINE_STAGES, synthetic_rows, write_jsonl, write_recipe


@pytest.fixture()
def recipe(tmp_path):
    write_jsonl(tmp_path / "data.jsonl", synthetic_rows(400))
    return write_recipe(tmp_path, ["data.jsonl"], ENGINE_STAGES, shards=5)


def _stable(manifest: dict) -> dict:
    m = {k: v for k, v in manifest.items() if k not in VOLATILE_KEYS}
    return json.loads(json.dumps(m))


def test_run_outputs_and_accounting(recipe, tmp_path):
    res = run(recipe, tmp_path / "run", quiet=True)
    c = res.counts
    assert c["rows_in"] == 402
    assert c["dropped"] >= 1 + 1  # the exact duplicate (ingest) and the upper-cased near duplicate
    assert c["kept"] + c["dropped"] + c["flagged"] + c["quarantined"] == c["rows_in"]
    ds = datasets.load_from_disk(str(tmp_path / "run" / "dataset"))
    assert len(ds) == c["kept"] + c["flagged"]
    assert {"prompt", "response", "source", "row_no", "sample_id"} <= set(ds.column_names)
    assert not [n for n in ds.column_names if n.startswith("_")]
    ledger = pq.read_table(str(tmp_path / "run" / "ledger")).to_pylist()
    reasons = {r["reason"] for r in ledger if r["status"] == "dropped"}
    assert {"duplicate", "is_duplicate", "char_len > 900"} <= reasons
    assert verify(tmp_path / "run") == []


def test_same_recipe_same_digest_and_manifest(recipe, tmp_path):
    a = run(recipe, tmp_path / "a", quiet=True)
    b = run(recipe, tmp_path / "b", quiet=True)
    assert a.digest == b.digest
    assert _stable(a.manifest) == _stable(b.manifest)
    assert a.manifest["run_id"] != b.manifest["run_id"]


def test_workers_do_not_change_the_result(recipe, tmp_path, monkeypatch):
    from curator.executors import local

    monkeypatch.setattr(local, "POOL_MIN_BYTES", 0)  # two worker processes even for this small input
    one = run(recipe, tmp_path / "w1", quiet=True, workers=1)
    two = run(recipe, tmp_path / "w2", quiet=True, workers=2)
    assert any(k.startswith("scores/patterns/") for s in two.manifest["shards"] for k in s["files"])
    assert one.digest == two.digest
    for s1, s2 in zip(one.manifest["shards"], two.manifest["shards"]):
        assert s1["files"] == s2["files"]


def test_fingerprint_chain_changes_only_downstream(recipe, tmp_path):
    rec = load_recipe(recipe)
    changed = load_recipe(recipe.read_text().replace("0.8", "0.9"), recipe.parent)
    rd = RunDir(tmp_path / "x")
    files = [InputFile(recipe.parent / "data.jsonl", "h")]
    p1, p2 = build_plan(rec, rd, files), build_plan(changed, rd, files)
    assert p1.ingest.fingerprint == p2.ingest.fingerprint
    assert [a.fingerprint == b.fingerprint for a, b in zip(p1.stages, p2.stages)] == [True, True, False]
    p3 = build_plan(rec, rd, [InputFile(recipe.parent / "data.jsonl", "other-input-hash")])
    assert all(a.fingerprint != b.fingerprint for a, b in zip(p1.stages, p3.stages))


def test_plan_is_built_once_per_run_and_pickles(recipe, tmp_path, monkeypatch):
    """Units get the plan; none rebuilds it (stage fingerprints are computed once per run, not per unit)."""
    import pickle

    from curator import pipeline
    from curator.stage import Stage

    calls = {"plan_ingest": 0, "plan_stages": 0, "fingerprint_inputs": []}
    for name in ("plan_ingest", "plan_stages"):
        real = getattr(pipeline, name)
        monkeypatch.setattr(pipeline, name, lambda *a, _r=real, _n=name, **k: calls.__setitem__(_n, calls[_n] + 1)
                            or _r(*a, **k))
    monkeypatch.setattr(Stage, "fingerprint_inputs", lambda self: calls["fingerprint_inputs"].append(self.name) or {})
    run(recipe, tmp_path / "run", quiet=True)
    assert (calls["plan_ingest"], calls["plan_stages"]) == (1, 1)
    assert sorted(calls["fingerprint_inputs"]) == ["decide", "patterns", "quality"]  # 5 shards, still once each
    plan = build_plan(load_recipe(recipe), RunDir(tmp_path / "run"), [InputFile(recipe.parent / "data.jsonl", "h")])
    assert pickle.loads(pickle.dumps(plan)) == plan
    assert [(p.desc, [u.kind for u in p.units], p.final and p.final.kind) for p in plan.phases()] == [
        ("stages patterns", ["shard"] * 5, None), ("stage quality (per shard)", ["map"] * 5, "global"),
        ("stage decide (per shard)", [], "global")]


def test_ingest_stage_must_come_first(recipe, tmp_path):
    from curator.errors import RecipeError

    moved = write_recipe(tmp_path, ["data.jsonl"], [{"use": "quality"}, {"use": "normalize"}], shards=2)
    with pytest.raises(RecipeError, match=r"stages: `normalize` must be the first stage \(it runs at ingest\)"):
        run(moved, tmp_path / "run", quiet=True)
    # not listed: the registry's one ingest stage runs with default params
    plan = build_plan(load_recipe(write_recipe(tmp_path, ["data.jsonl"], [{"use": "quality"}], shards=2)),
                      RunDir(tmp_path / "p"), [])
    assert (plan.ingest.cls.kind, plan.ingest.params, [ps.id for ps in plan.stages]) == (
        "ingest", plan.ingest.cls.Params(), ["quality"])


def test_switching_params_back_and_forth_in_one_run_dir_never_reuses_stale_outputs(recipe, tmp_path):
    """A -> B -> A in the same run directory: A's old done markers must not vouch for B's files."""
    changed = recipe.parent / "changed.yaml"
    changed.write_text(recipe.read_text().replace("0.8", "0.3"), encoding="utf-8")
    ref_a, ref_b = run(recipe, tmp_path / "ref_a", quiet=True), run(changed, tmp_path / "ref_b", quiet=True)
    assert ref_a.counts != ref_b.counts
    out = tmp_path / "shared"
    for path, ref in ((recipe, ref_a), (changed, ref_b), (recipe, ref_a), (changed, ref_b)):
        res = run(path, out, quiet=True)
        assert (res.counts, res.digest) == (ref.counts, ref.digest)
        assert pq.read_table(str(out / "ledger")).equals(pq.read_table(str(ref.run_dir / "ledger")))
        assert verify(out) == []
    # an unchanged rerun still skips every finished unit
    done = {p: p.stat().st_mtime_ns for p in (out / "markers").rglob("*.done")}
    assert run(changed, out, quiet=True).counts == ref_b.counts
    assert {p: p.stat().st_mtime_ns for p in (out / "markers").rglob("*.done")} == done


def _run_cli(recipe: Path, out: Path, env_extra: dict) -> subprocess.CompletedProcess:
    env = {**os.environ, **env_extra}
    return subprocess.run([sys.executable, "-m", "curator.cli", "run", str(recipe), "-o", str(out), "-q"],
                          env=env, capture_output=True, text=True, cwd=recipe.parent)


def test_resume_after_kill_is_identical_and_skips_finished_work(recipe, tmp_path):
    ref = run(recipe, tmp_path / "ref", quiet=True)
    out = tmp_path / "killed"
    first = _run_cli(recipe, out, {"CURATOR_FAULT": "unit_done:2"})
    assert first.returncode == -9  # SIGKILL after ingest and one stage
    assert not (out / "manifest.json").exists()
    done_before = {p: p.stat().st_mtime_ns for p in (out / "markers").rglob("*.done")}
    assert len(done_before) == 2
    second = _run_cli(recipe, out, {})
    assert second.returncode == 0, second.stderr
    assert json.loads(second.stdout)["digest"] == ref.digest
    for p, mtime in done_before.items():
        assert p.stat().st_mtime_ns == mtime  # finished units were not redone
    assert verify(out) == []


def test_verify_catches_tampering(recipe, tmp_path):
    run(recipe, tmp_path / "run", quiet=True)
    ledger = tmp_path / "run" / "ledger" / "shard-00001.parquet"
    table = pq.read_table(ledger)
    pq.write_table(table.slice(1), ledger)
    problems = verify(tmp_path / "run")
    assert any("ledger/shard-00001.parquet" in p for p in problems)
    res = subprocess.run([sys.executable, "-m", "curator.cli", "verify", str(tmp_path / "run")],
                         capture_output=True, text=True)
    assert res.returncode == 1 and "mismatch" in res.stderr


def test_score_stage_flag_reason_becomes_a_flagged_ledger_row(tmp_path):
    from dataclasses import dataclass

    import pyarrow as pa
    import pyarrow.compute as pc

    from curator.registry import register
    from curator.stage import Stage

    @dataclass(frozen=True)
    class P:
        pass

    @register
    class OddScorer(Stage):
        name = "test.odd"
        Params = P
        provides = ("odd_score",)

        def process_batch(self, batch):
            n = pc.utf8_length(batch.column("response"))
            odd = pc.equal(pc.bit_wise_and(n, 1), 1)
            return pa.table({"sample_id": batch.column("sample_id"),
                             "odd_score": pc.if_else(odd, pa.scalar(None, pa.float64()), pc.cast(n, pa.float64())),
                             "flag_reason": pc.if_else(odd, pa.scalar("non-finite score"), pa.scalar(None, pa.string()))})

    write_jsonl(tmp_path / "d.jsonl", [{"prompt": "p", "response": "x" * i} for i in range(1, 11)])
    recipe = write_recipe(tmp_path, ["d.jsonl"], [{"use": "normalize"}, {"use": "test.odd"}], shards=2)
    res = run(recipe, tmp_path / "run", quiet=True)
    assert res.counts["flagged"] == 5 and res.counts["kept"] == 5
    ledger = pq.read_table(str(tmp_path / "run" / "ledger")).to_pylist()
    assert {(r["status"], r["stage"], r["reason"]) for r in ledger if r["status"] == "flagged"} == {
        ("flagged", "test.odd", "non-finite score")}


def test_patterns_stage_counts_matches_and_rejects_bad_regex(tmp_path):
    from curator.errors import RecipeError

    write_jsonl(tmp_path / "d.jsonl", [{"prompt": "mail me at a.b@ex.com or c@d.org", "response": "see https://x.y/z"}])
    res = run(write_recipe(tmp_path, ["d.jsonl"], [{"use": "normalize"}, {"use": "patterns"}], shards=1),
              tmp_path / "run", quiet=True)
    row = pq.read_table(str(tmp_path / "run" / "scores" / "patterns")).to_pylist()[0]
    assert (row["pat_email"], row["pat_url"], row["pat_phone"]) == (2, 1, 0) and res.counts["kept"] == 1
    with pytest.raises(RecipeError, match=r"stages\[1\]\.with: patterns\.bad: invalid regular expression"):
        load_recipe(write_recipe(tmp_path, ["d.jsonl"], [{"use": "normalize"},
                                                        {"use": "patterns", "with": {"patterns": {"bad": "("}}}]))


def test_missing_columns_fail_before_any_stage_fingerprint_or_model(tmp_path, monkeypatch):
    from curator.errors import RecipeError
    from curator.stage import Stage

    called = []
    monkeypatch.setattr(Stage, "fingerprint_inputs", lambda self: called.append(self.name) or {})
    write_jsonl(tmp_path / "d.jsonl", synthetic_rows(10))
    recipe = write_recipe(tmp_path, ["d.jsonl"], [{"use": "normalize"},
                                                  {"use": "decide", "with": {"drop_if": ["risk_sqsd > 1"]}}], shards=1)
    with pytest.raises(RecipeError, match=r"stages\[1\] \(decide\): decide rule 'risk_sqsd > 1'"):
        run(recipe, tmp_path / "run", quiet=True)
    assert called == []


def test_an_input_written_to_during_the_run_stops_it_and_the_next_run_reads_it_whole(tmp_path, monkeypatch):
    """The manifest's input hashes describe what the run read: a file appended to while it is read is an error."""
    from curator import pipeline
    from curator.errors import InputError

    rows = synthetic_rows(20)
    write_jsonl(tmp_path / "data.jsonl", rows)
    rec = write_recipe(tmp_path, ["data.jsonl"], ENGINE_STAGES, shards=2)
    real = pipeline.run_ingest

    def appending(plan, exe):  # a producer still writing the file
        done = real(plan, exe)
        with open(tmp_path / "data.jsonl", "a") as fh:
            fh.write(json.dumps({"prompt": "late", "response": "row"}) + "\n")
        return done

    monkeypatch.setattr(pipeline, "run_ingest", appending)
    with pytest.raises(InputError, match="data.jsonl: changed while this run read it"):
        run(rec, tmp_path / "run", quiet=True)
    monkeypatch.setattr(pipeline, "run_ingest", real)
    res = run(rec, tmp_path / "run", quiet=True)
    assert res.counts["rows_in"] == len(rows) + 1 and verify(tmp_path / "run") == []
