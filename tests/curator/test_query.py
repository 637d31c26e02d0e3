"""DuckDB views and every ``curator.query.EXAMPLES`` query, checked against pyarrow/python.

``ToyRiskStage`` is a test-only score stage registered in-process: ``risk_sqsd`` is a
deterministic function of the sample id (distinct values, +10 for text containing '<'),
``hardness`` is ``(len(prompt) % 11) / 10`` and NULL when the id starts with '0'-'3'.
"""

from __future__ import annotations

import json
import math
from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from curator.cli import main
from curator.errors import RecipeError
from curator.keyed_store import KeyedStore
from curator.pipeline import run
from curator.query import EXAMPLES, connect, run_query
from curator.registry import register
from curator.stage import Artifact, Stage
from tests.support import make_toy_run, synthetic_rows, write_jsonl, write_recipe


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    return make_toy_run(tmp_path_factory.mktemp("q"))


def _joined(run_dir) -> list[dict]:
    """Canonical samples joined with the toy scores and quality columns, read with pyarrow."""
    samples = {r["sample_id"]: r for r in pq.read_table(run_dir / "input").to_pylist()}
    for stage in ("quality", "test.toy_risk"):
        for r in pq.read_table(run_dir / "scores" / stage).to_pylist():
            samples[r["sample_id"]].update(r)
    return list(samples.values())


def test_toy_stage_columns_reach_the_scores_view(toy):
    con = connect(toy.run_dir)
    cols = {r[0] for r in con.execute("DESCRIBE scores").fetchall()}
    assert {"risk_sqsd", "hardness", "char_len"} <= cols
    assert con.execute("SELECT count(*) FROM scores").fetchone()[0] == len(_joined(toy.run_dir))


def test_example_riskiest_samples_per_source(toy):
    got = run_query([toy.run_dir], EXAMPLES["riskiest samples per source"]).to_pylist()
    rows = _joined(toy.run_dir)
    want = []
    for source in sorted({r["source"] for r in rows}):
        top = sorted((r for r in rows if r["source"] == source), key=lambda r: -r["risk_sqsd"])[:3]
        want += [{"source": source, "sample_id": r["sample_id"], "risk_sqsd": r["risk_sqsd"]} for r in top]
    assert {r["source"] for r in rows} == {"web", "forum"}
    assert got == want


def test_example_hardness_histogram(toy):
    got = {r["bucket"]: r["prompts"] for r in run_query([toy.run_dir], EXAMPLES["hardness histogram"]).to_pylist()}
    hs = [r["hardness"] for r in _joined(toy.run_dir)]
    want = Counter(round(h, 1) for h in hs if h is not None)
    assert None in hs and len(want) > 3  # NULLs are left out, several buckets
    assert {float(k): v for k, v in got.items()} == dict(want)
    assert list(got) == sorted(got)


def test_example_drop_reasons(toy):
    got = run_query([toy.run_dir], EXAMPLES["drop reasons"]).to_pylist()
    ledger = [r for f in sorted((toy.run_dir / "ledger").glob("shard-*.parquet")) for r in pq.read_table(f).to_pylist()]
    want = Counter((r["status"], r["stage"], r["reason"]) for r in ledger if r["status"] != "kept")
    assert {(r["status"], r["stage"], r["reason"]): r["rows"] for r in got} == dict(want)
    assert [r["rows"] for r in got] == sorted((r["rows"] for r in got), reverse=True)
    assert sum(want.values()) == toy.counts["dropped"] + toy.counts["flagged"] + toy.counts["quarantined"]


def test_example_risk_vs_length(toy):
    (got,) = run_query([toy.run_dir], EXAMPLES["risk vs length"]).to_pylist()
    rows = _joined(toy.run_dir)
    want = np.corrcoef([r["risk_sqsd"] for r in rows], [r["char_len"] for r in rows])[0, 1]
    assert got["n"] == len(rows)
    assert math.isclose(got["pearson"], want, rel_tol=1e-9, abs_tol=1e-12)


def test_multi_run_query_adds_run_id(toy, tmp_path):
    other = make_toy_run(tmp_path / "b", name="other", n=40)
    table = run_query([toy.run_dir, other.run_dir], "SELECT run_id, count(*) AS n FROM ledger GROUP BY run_id "
                                                    "ORDER BY run_id")
    assert table.to_pylist() == [{"run_id": "other", "n": other.counts["rows_in"]},
                                 {"run_id": "toy", "n": toy.counts["rows_in"]}]
    per_run = run_query([toy.run_dir, other.run_dir], "SELECT run_id, count(*) AS n FROM scores "
                                                      "WHERE risk_sqsd IS NOT NULL GROUP BY ALL ORDER BY 1")
    assert per_run.column("n").to_pylist() == [len(_joined(other.run_dir)), len(_joined(toy.run_dir))]


def test_connections_keep_their_views_to_themselves(toy, tmp_path):
    """Connections share one database per process, but each one's views and registrations are its own."""
    other = make_toy_run(tmp_path / "b", name="other", n=40)
    a, b = connect(toy.run_dir), connect(other.run_dir)
    assert a.execute("SELECT count(*) FROM ledger").fetchone()[0] == toy.counts["rows_in"]
    assert b.execute("SELECT count(*) FROM ledger").fetchone()[0] == other.counts["rows_in"]
    b.close()
    assert a.execute("SELECT count(*) FROM samples").fetchone()[0] == pq.read_table(toy.run_dir / "input").num_rows


SQL = "SELECT sample_id, risk_sqsd, hardness FROM scores ORDER BY risk_sqsd DESC LIMIT 5"


@pytest.mark.parametrize("fmt", ["csv", "json", "jsonl", "parquet", "table"])
def test_cli_query_formats(toy, tmp_path, fmt):
    out = tmp_path / f"out.{fmt}"
    res = CliRunner().invoke(main, ["query", str(toy.run_dir), SQL, "--format", fmt, "--out", str(out)])
    assert res.exit_code == 0, res.output
    want = run_query([toy.run_dir], SQL).to_pylist()
    if fmt == "parquet":
        assert pq.read_table(out).to_pylist() == want
    elif fmt == "json":  # one JSON array
        assert json.loads(out.read_text()) == want
    elif fmt == "jsonl":  # one object per line
        assert [json.loads(line) for line in out.read_text().splitlines()] == want
    elif fmt == "csv":
        lines = out.read_text().splitlines()
        assert lines[0].replace('"', "") == "sample_id,risk_sqsd,hardness" and len(lines) == 6
        assert [line.split(",")[0].strip('"') for line in lines[1:]] == [r["sample_id"] for r in want]
    else:
        text = out.read_text()
        assert all(r["sample_id"][:20] in text for r in want)


def test_cli_query_table_to_stdout(toy):
    res = CliRunner().invoke(main, ["query", str(toy.run_dir), "SELECT count(*) AS n FROM scores"])
    assert res.exit_code == 0 and str(len(_joined(toy.run_dir))) in res.output


def test_bad_query_keeps_duckdbs_hint(toy):
    with pytest.raises(RecipeError, match=r'Candidate bindings: .*"risk_sqsd"'):
        run_query([toy.run_dir], "SELECT risk_sqdd FROM scores")
    with pytest.raises(RecipeError, match=r'Did you mean "scores"'):
        run_query([toy.run_dir], "SELECT * FROM scorez")


def test_bad_query_names_the_views(toy):
    with pytest.raises(RecipeError, match="Views available") as err:
        run_query([toy.run_dir], "SELECT nope FROM scores")
    assert "scores" in str(err.value) and "ledger" in str(err.value)
    res = CliRunner().invoke(main, ["query", str(toy.run_dir), "SELECT * FROM no_such_view"])
    assert res.exit_code == 2
    assert "Views available" in res.stderr and "samples" in res.stderr


NOTES = Artifact("toy_notes", "cache/toy_notes", "sample_id", "a note per sample")


class ToyNotesStage(Stage):
    """Scores ``note_len`` and keeps a note per sample in its declared artifact."""

    name = "test.toy_notes"
    kind = "score"
    provides = ("note_len",)
    artifacts = (NOTES,)

    def process_batch(self, batch):
        ids = batch.column("sample_id").to_pylist()
        store = KeyedStore(self.context.artifacts[NOTES.name], NOTES.key,
                           pa.schema([("sample_id", pa.string()), ("note", pa.string())]))
        store.add([{"sample_id": i, "note": i[:6]} for i in ids])
        return pa.table({"sample_id": ids, "note_len": [6] * len(ids)})


def test_declared_artifacts_are_views_from_the_manifest_or_the_recipe(tmp_path):
    register(ToyNotesStage)
    write_jsonl(tmp_path / "d.jsonl", synthetic_rows(20))
    recipe = write_recipe(tmp_path, ["d.jsonl"], [{"use": "normalize"}, {"use": ToyNotesStage.name}], shards=2)
    res = run(recipe, tmp_path / "run", quiet=True, workers=1)
    sql = "SELECT count(*) AS n, count(DISTINCT note) AS notes FROM toy_notes JOIN samples USING (sample_id)"
    finished = run_query([res.run_dir], sql).to_pylist()
    assert finished == [{"n": res.counts["rows_in"] - res.counts["dropped"], "notes": finished[0]["n"]}]
    (res.run_dir / "manifest.json").unlink()  # an unfinished run: the recipe's stages declare the views
    assert run_query([res.run_dir], sql).to_pylist() == finished
    (res.run_dir / "recipe.yaml").write_text("stages: [{use: no.such.stage}]")
    assert "toy_notes" not in {r[0] for r in connect(res.run_dir).execute("SHOW TABLES").fetchall()}
