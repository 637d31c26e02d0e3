import json
import re
import sys

import pyarrow as pa

from curator.refdata import demo_pool
from tools import build_demo_pool


def test_bundled_pool_size_families_and_schema():
    table = demo_pool.load_demo_pool()
    assert table.schema == demo_pool.SCHEMA
    assert table.num_rows >= 1000
    counts = {f: table["source"].to_pylist().count(f) for f in set(table["source"].to_pylist())}
    assert set(counts) == set(demo_pool.FAMILIES) and len(counts) >= 4
    assert min(counts.values()) >= 200
    assert {"list", "math", "prose", "steps"} <= set(table["format"].to_pylist())
    assert all(p.strip() and r.strip() for p, r in zip(table["prompt"].to_pylist(), table["response"].to_pylist()))
    pairs = list(zip(table["prompt"].to_pylist(), table["response"].to_pylist()))
    assert len(set(pairs)) == len(pairs)
    assert demo_pool.DEMO_POOL_PATH.stat().st_size < 2_000_000


def test_build_is_deterministic_and_seeded():
    a = build_demo_pool.build_demo_pool(n_per_family=20, seed=3)
    b = build_demo_pool.build_demo_pool(n_per_family=20, seed=3)
    c = build_demo_pool.build_demo_pool(n_per_family=20, seed=4)
    assert a.equals(b)
    assert not a.equals(c)
    assert a.num_rows == 20 * len(demo_pool.FAMILIES)


def test_bundled_pool_matches_builder_for_non_docstring_families():
    """Families that do not read docstrings must rebuild byte-identically on any Python version."""
    bundled = demo_pool.load_demo_pool()
    rebuilt = build_demo_pool.build_demo_pool(n_per_family=250, seed=0)
    for family in ("arithmetic", "unit_conversion", "tips"):
        mask = [s == family for s in bundled["source"].to_pylist()]
        mask2 = [s == family for s in rebuilt["source"].to_pylist()]
        assert bundled.filter(pa.array(mask)).equals(rebuilt.filter(pa.array(mask2)))
    if sys.version_info[:2] == (3, 11):  # the bundled file was built with Python 3.11
        assert bundled.equals(rebuilt)


def test_arithmetic_answers_are_correct():
    table = build_demo_pool.build_demo_pool(n_per_family=60, seed=1)
    for row in table.to_pylist():
        if row["source"] == "arithmetic" and "rectangular garden" in row["prompt"]:
            w, h = map(int, re.findall(r"(\d+) m", row["prompt"]))
            assert f"area {w * h} m²" in row["response"] and f"perimeter {2 * (w + h)} m" in row["response"]
        if row["source"] == "unit_conversion" and row["prompt"].startswith("Convert") and "Celsius to" in row["prompt"]:
            c = float(re.search(r"Convert ([\d.]+)", row["prompt"]).group(1))
            answer = float(re.search(r"≈ ([\d.]+) degrees Fahrenheit$", row["response"]).group(1))
            assert abs(answer - (c * 9 / 5 + 32)) < 0.006


def test_cli_writes_jsonl(tmp_path):
    out = tmp_path / "pool.jsonl"
    build_demo_pool.main(["--out", str(out), "--n-per-family", "5", "--seed", "0"])
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 5 * len(demo_pool.FAMILIES)
    assert demo_pool.load_demo_pool(out).equals(build_demo_pool.build_demo_pool(5, 0))
