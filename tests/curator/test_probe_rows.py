"""Probe rows: prompts without responses are accounted for as ``probe`` and never written to ``dataset/``."""

import json

import datasets
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from curator.errors import RunError
from curator.manifest import verify
from curator.pipeline import run
from tests.support import write_jsonl, write_recipe

SFT = [{"prompt": f"Question {i}?", "response": f"Answer number {i}."} for i in range(6)]
PROBES = [{"prompt": f"How do I do harmful thing {i}?"} for i in range(5)]


def _run(tmp_path, probe_file: str, **top):
    write_jsonl(tmp_path / "sft.jsonl", SFT)
    return run(write_recipe(tmp_path, ["sft.jsonl", probe_file], [{"use": "normalize"}, {"use": "quality"}],
                            shards=3, **top), tmp_path / "run", quiet=True)


@pytest.mark.parametrize("layout", ["jsonl", "csv", "messages"])
def test_a_prompts_only_file_is_read_as_probe_rows_kept_out_of_the_dataset(tmp_path, layout):
    if layout == "jsonl":
        write_jsonl(tmp_path / "probes.jsonl", PROBES)
    elif layout == "csv":
        pacsv.write_csv(pa.Table.from_pylist(PROBES), str(tmp_path / "probes.csv"))
    else:
        write_jsonl(tmp_path / "probes.jsonl", [{"messages": [{"role": "user", "content": p["prompt"]}]} for p in PROBES])
    res = _run(tmp_path, f"probes.{'csv' if layout == 'csv' else 'jsonl'}")
    c = res.counts
    assert (c["rows_in"], c["kept"], c["probe"], c["quarantined"]) == (11, 6, 5, 0)
    assert c["rows_in"] == c["kept"] + c["dropped"] + c["flagged"] + c["quarantined"] + c["probe"]
    assert all(s["rows_in"] == s["kept"] + s["dropped"] + s["flagged"] + s["quarantined"] + s["probe"]
               for s in res.manifest["shards"])
    ds = datasets.load_from_disk(str(tmp_path / "run" / "dataset"))
    assert sorted(ds["prompt"]) == sorted(r["prompt"] for r in SFT) and all(ds["response"])
    ledger = pq.read_table(str(tmp_path / "run" / "ledger")).to_pylist()
    probes = [r for r in ledger if r["status"] == "probe"]
    assert len(probes) == 5 and {r["reason"] for r in probes} == {"prompt without response"}
    assert verify(tmp_path / "run") == []
    stats = json.loads((tmp_path / "run" / "stats.json").read_text())
    assert stats["totals"]["probe"] == 5


def test_verify_catches_a_manifest_that_loses_probe_rows(tmp_path):
    """The accounting covers probes: a manifest whose shard forgets its probe rows no longer matches the ledger."""
    write_jsonl(tmp_path / "probes.jsonl", PROBES)
    _run(tmp_path, "probes.jsonl")
    path = tmp_path / "run" / "manifest.json"
    manifest = json.loads(path.read_text())
    shard = next(s for s in manifest["shards"] if s["probe"])
    shard["rows_in"] -= shard["probe"]
    shard["probe"] = 0
    path.write_text(json.dumps(manifest))
    problems = verify(tmp_path / "run")
    assert any("do not add up" in p for p in problems) and any("differ from the manifest" in p for p in problems)


def test_empty_responses_in_a_response_layout_are_still_quarantined(tmp_path):
    write_jsonl(tmp_path / "probes.jsonl", [{"prompt": "p", "response": ""}])
    res = _run(tmp_path, "probes.jsonl")
    assert res.counts["quarantined"] == 1 and res.counts["probe"] == 0


def test_a_schema_without_probe_counts_is_refused():
    from curator.manifest import validate_manifest

    with pytest.raises(RunError, match="probe"):
        validate_manifest({"manifest_version": 1, "run_id": "0" * 32, "started_at": "", "finished_at": "",
                           "curator": {"version": "x"}, "environment": {"python": "", "packages": {}, "device": ""},
                           "recipe": {"name": "r", "sha256": "0" * 64, "resolved": {}}, "executor": {"kind": "local",
                           "workers": 1}, "n_shards": 1, "inputs": [], "stages": [], "shards": [],
                           "totals": {k: 0 for k in ("rows_in", "kept", "dropped", "flagged", "quarantined", "added")},
                           "dataset": {"path": "dataset", "rows": 0, "digest": "0" * 64, "files": {}}})


@pytest.mark.parametrize("files", [["sft.jsonl"], ["sft.jsonl", "probes.jsonl"], ["probes.jsonl", "sft.jsonl"]])
def test_one_shard_mixing_answers_and_prompts_only_finds_every_probe(tmp_path, files):
    """Finalize reads a shard's responses only if ingest counted probes in it."""
    write_jsonl(tmp_path / "sft.jsonl", SFT)
    write_jsonl(tmp_path / "probes.jsonl", PROBES)
    res = run(write_recipe(tmp_path, files, [{"use": "quality"}], shards=1), tmp_path / "run", quiet=True)
    n_probes = len(PROBES) if "probes.jsonl" in files else 0
    assert (res.counts["kept"], res.counts["probe"]) == (len(SFT), n_probes)
    assert len(datasets.load_from_disk(str(tmp_path / "run" / "dataset"))) == len(SFT)
