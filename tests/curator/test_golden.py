"""Golden outputs: fixed recipes on tiny models must keep producing the same files.

Recorded before the redesign (issue 20) so that moving code provably changes no output. For each
recipe the record holds the dataset digest and, for every file under ``input/``, ``scores/``,
``ledger/``, ``added/`` and ``quarantine/``, its sha256, the sha256 of its rows without float columns, and
the float columns' values. A file whose bytes differ passes only if its rows are equal and its floats
agree to 1e-4 (float results differ in the last bits between processes and CPUs).

A deliberate output change regenerates the record and shows what changed in the diff:

    python -m tests.curator.test_golden --update
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

GOLDEN = Path(__file__).parents[1] / "data" / "golden.json"
OUTPUT_DIRS = ("input", "scores", "ledger", "added", "quarantine")


def _write(path: Path, rows: list[dict]) -> str:
    import pyarrow.csv as pacsv

    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    elif path.suffix == ".json":
        path.write_text(json.dumps(rows), encoding="utf-8")
    elif path.suffix == ".csv":
        pacsv.write_csv(pa.Table.from_pylist(rows), str(path))
    elif path.suffix == ".parquet":
        pq.write_table(pa.Table.from_pylist(rows), str(path))
    return path.name


def _formats_inputs(root: Path) -> list[dict]:
    """One file per input layout, with exact duplicates, a bad row and Unicode edge cases."""
    answers = ["First, preheat the oven.", "1. Open the file\n2. Read it", "café ＣＡＦÉ \u200b ok", "42"]
    files = {
        "alpaca.jsonl": [{"instruction": f"Task {i}", "input": "ctx" if i % 2 else "", "output": answers[i % 4]}
                         for i in range(6)] + [{"instruction": "Task 0", "input": "", "output": answers[0]}],
        "dolly.jsonl": [{"instruction": f"Explain {i}", "context": "", "response": answers[(i + 1) % 4],
                         "category": "open_qa"} for i in range(5)],
        "pr.csv": [{"prompt": f"Question {i}?", "response": answers[(i + 2) % 4]} for i in range(5)],
        "pc.parquet": [{"prompt": f"Complete {i}", "completion": answers[(i + 3) % 4]} for i in range(5)],
        "messages.jsonl": [{"messages": [{"role": "user", "content": f"Hi {i}"},
                                         {"role": "assistant", "content": answers[i % 4]}]} for i in range(4)]
        + [{"messages": "not a list"}],
        "sharegpt.json": [{"conversations": [{"from": "human", "value": f"Hey {i}"},
                                             {"from": "gpt", "value": answers[i % 4]}]} for i in range(4)],
        "text.jsonl": [{"text": f"Document {i}. " + "Some words here. " * (i + 1)} for i in range(5)]
        + [{"text": "\x00\x01 control \x7f chars"}],
    }
    return [{"path": _write(root / name, rows)} for name, rows in files.items()]


def _risk_inputs(root: Path) -> list[dict]:
    rows = [{"prompt": "How do I bake bread?", "response": "Mix flour, water, salt and yeast, then wait."},
            {"prompt": "List three colours.", "response": "1. Red\n2. Green\n3. Blue"},
            {"prompt": "What is 6 times 7?", "response": "42"},
            {"prompt": "Rewrite politely: give me that.", "response": "Could you please pass me that?"},
            {"prompt": "Tips for sleeping well?", "response": "Here is how to sleep better: 1. Keep a schedule. "
             "2. Avoid screens. 3. Keep the room dark."},
            {"prompt": "Convert 3 km to miles.", "response": "3 km is about 1.86 miles."}]
    return [{"path": _write(root / "risk.jsonl", rows)}]


def _hardness_inputs(root: Path) -> list[dict]:
    return [{"path": _write(root / "probes.jsonl", [{"prompt": f"question number {i} about things", "response": "r"}
                                                     for i in range(8)])}]


RECIPES = {
    "formats_quality_decide": (_formats_inputs, {"shards": 3}, [
        {"use": "normalize"}, {"use": "quality"}, {"use": "patterns"},
        {"use": "decide", "with": {"drop_if": ["is_duplicate"], "flag_if": ["char_len > 40"]}}]),
    "risk_sqsd": (_risk_inputs, {"shards": 2, "model": "TINY"}, [
        {"use": "normalize"},
        {"use": "risk.sqsd", "with": {"method": "mean_update", "batch_size": 4, "max_length": 64}}]),
    "risk_compliance": (_risk_inputs, {"shards": 2, "model": "TINY"}, [
        {"use": "normalize"}, {"use": "risk.compliance", "with": {"max_length": 64}}]),
    "risk_anchor_similarity": (_risk_inputs, {"shards": 2, "model": "TINY"}, [
        {"use": "normalize"}, {"use": "risk.anchor_similarity", "with": {"max_length": 64}}]),
    "hardness_rebalance": (_hardness_inputs, {"shards": 2, "model": "TINY"}, [
        {"use": "normalize"},
        {"use": "hardness", "with": {"k": 4, "block": 4, "max_new_tokens": 4,
                                     "judge": {"keyword": {"patterns_text": "[a-h]", "window": 20}}}},
        {"use": "rebalance", "with": {
            "variant": "hard_mixed", "max_new_tokens": 4, "framing_source": "builtin", "min_mean_logprob": None,
            "require_complete": False, "min_words": 0,  # a random tiny model: the checks relaxed, judged by pattern
            "target_judge": {"keyword": {"patterns_text": "[a-m]", "window": 20}},
            "benign_judge": {"keyword": {"patterns_text": "[n-z]", "window": 20}}}}]),
}


def _float_paths(table: pa.Table) -> list[str]:
    return [f.name for f in table.schema if pa.types.is_floating(f.type)]


def content(table: pa.Table) -> dict:
    """{"rows_sha256": sha256 of the rows with float columns blanked, "floats": {column: values}}."""
    floats = _float_paths(table)
    rest = table.drop_columns(floats)
    rows = json.dumps([rest.column_names, rest.to_pylist()], sort_keys=True, default=str).encode()
    return {"rows_sha256": hashlib.sha256(rows).hexdigest(),
            "floats": {c: table.column(c).to_pylist() for c in floats}}


def same_content(got: dict, want: dict, rel: float = 1e-4, abs_: float = 1e-6) -> bool:
    """Equal rows, and float columns equal within ``rel`` / ``abs_`` (float results differ in the last
    bits between processes and CPUs)."""
    if got["rows_sha256"] != want["rows_sha256"] or sorted(got["floats"]) != sorted(want["floats"]):
        return False
    for col, values in want["floats"].items():
        for a, b in zip(got["floats"][col], values, strict=True):
            if (a is None) != (b is None) or (a is not None and not math.isclose(a, b, rel_tol=rel, abs_tol=abs_)):
                return False
    return True


def run_outputs(run_dir: Path, digest: str) -> dict:
    """{"digest", "dataset", "files": {relative path: {"sha256", "rows_sha256", "floats"}}} of a finished run."""
    import datasets

    from curator.io import sha256_file

    files = {}
    for sub in OUTPUT_DIRS:
        for path in sorted((run_dir / sub).rglob("*.parquet")):
            rel = path.relative_to(run_dir).as_posix()
            files[rel] = {"sha256": sha256_file(path), **content(pq.read_table(str(path)))}
    ds = datasets.load_from_disk(str(run_dir / "dataset"))
    return {"digest": digest, "dataset": content(ds.data.table), "files": files}


def run_golden(name: str, root: Path, tiny_model_dir: Path) -> dict:
    import yaml

    from curator.pipeline import run

    make_inputs, top, stages = RECIPES[name]
    data = root / "data"
    inputs = make_inputs(data)
    top = {k: (str(tiny_model_dir) if v == "TINY" else v) for k, v in top.items()}
    recipe = {"curator": 1, "name": name, "inputs": inputs, **top, "seed": 0, "stages": stages}
    path = data / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    res = run(path, root / "run", quiet=True)
    return run_outputs(root / "run", res.digest)


@pytest.fixture(scope="module")
def golden_env(tmp_path_factory):
    from curator.ml.testing import save_tiny_model

    root = tmp_path_factory.mktemp("golden")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CURATOR_HOME", str(root / "home"))
        yield root, save_tiny_model(root / "tiny-model")


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_outputs_match_the_golden_record(name, golden_env, one_torch_thread):
    root, model = golden_env
    want = json.loads(GOLDEN.read_text("utf-8"))[name]
    got = run_golden(name, root / name, model)
    assert sorted(got["files"]) == sorted(want["files"]), "the run wrote a different set of files"
    changed = [f for f, h in want["files"].items()
               if got["files"][f]["sha256"] != h["sha256"] and not same_content(got["files"][f], h)]
    assert not changed, f"outputs changed: {changed}"
    if got["digest"] != want["digest"]:
        assert same_content(got["dataset"], want["dataset"]), "the dataset changed"


def update(names: list[str]) -> None:
    import tempfile

    import torch

    from curator.ml.testing import save_tiny_model

    torch.set_num_threads(1)
    record = json.loads(GOLDEN.read_text("utf-8")) if GOLDEN.exists() else {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        import os

        os.environ["CURATOR_HOME"] = str(root / "home")
        model = save_tiny_model(root / "tiny-model")
        for name in names or sorted(RECIPES):
            record[name] = run_golden(name, root / name, model)
            print(f"{name}: digest {record[name]['digest'][:16]}, {len(record[name]['files'])} files")
    GOLDEN.parent.mkdir(parents=True, exist_ok=True)
    GOLDEN.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n", "utf-8")


if __name__ == "__main__":
    if "--update" not in sys.argv:
        sys.exit("usage: python -m tests.curator.test_golden --update [recipe names]")
    update([a for a in sys.argv[1:] if a != "--update"])
