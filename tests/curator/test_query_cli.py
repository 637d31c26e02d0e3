"""``curator query`` and ``curator report`` as a user meets them: runs of the same directory name get distinct
``run_id`` values, nested columns are JSON text in CSV, and empty SQL or an output file that cannot be written
is ``error: ...`` with exit 2, not a traceback."""

from __future__ import annotations

import csv
import io
import json

import pytest
from click.testing import CliRunner

from curator.cli import main
from curator.pipeline import run
from tests.support import write_jsonl, write_recipe

CONVERSATIONS = [[{"role": "user", "content": f"Question {i}?"}, {"role": "assistant", "content": f"Answer {i}, \"quoted\"."}]
                 for i in range(6)]


def _run(base, name: str, n: int):
    base.mkdir(parents=True)
    write_jsonl(base / "chat.jsonl", [{"messages": m} for m in CONVERSATIONS[:n]])
    recipe = write_recipe(base, ["chat.jsonl"], [{"use": "normalize"}, {"use": "quality"}], shards=2, name=name)
    return run(recipe, base / name, quiet=True).run_dir


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("query-cli")
    return {"a": _run(root / "a", "sft", 6), "b": _run(root / "b", "sft", 4), "other": _run(root / "c", "other", 5)}


def _query(*args):
    res = CliRunner().invoke(main, ["query", *map(str, args)])
    assert not isinstance(res.exception, Exception) or isinstance(res.exception, SystemExit), res.exception
    return res


def test_runs_of_the_same_name_get_distinct_run_ids(runs):
    res = _query(runs["a"], runs["b"], runs["other"], "SELECT run_id, count(*) AS n FROM ledger GROUP BY run_id "
                 "ORDER BY run_id", "--format", "json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.output) == [{"run_id": "a/sft", "n": 6}, {"run_id": "b/sft", "n": 4},
                                      {"run_id": "other", "n": 5}]


def test_a_run_directory_given_twice_is_a_usage_error(runs):
    res = _query(runs["a"], runs["a"], "SELECT count(*) FROM ledger")
    assert res.exit_code == 2 and "given more than once" in res.stderr


def test_csv_writes_nested_columns_as_json_text(runs):
    res = _query(runs["a"], "SELECT sample_id, messages FROM samples ORDER BY messages[1].content", "--format", "csv")
    assert res.exit_code == 0, res.output
    rows = list(csv.DictReader(io.StringIO(res.output)))
    assert [json.loads(r["messages"]) for r in rows] == CONVERSATIONS


@pytest.mark.parametrize("sql", ["", "   ", ";"])
def test_sql_without_a_query_is_a_usage_error(runs, sql):
    res = _query(runs["a"], sql)
    assert res.exit_code == 2 and res.stderr.startswith("error: "), res.output


@pytest.mark.parametrize("fmt", ["parquet", "csv", "table"])
def test_query_out_to_a_path_that_cannot_be_written_is_a_usage_error(runs, fmt, tmp_path):
    dest = tmp_path / "no-such-dir" / "x" if fmt == "table" else "/proc/curator-test.out"
    if fmt == "table":
        (tmp_path / "no-such-dir").write_text("a file, not a directory")
    res = _query(runs["a"], "SELECT 1 AS one", "--format", fmt, "--out", dest)
    assert res.exit_code == 2 and f"--out {dest}" in res.stderr, res.output


def test_report_out_to_a_path_that_cannot_be_written_is_a_usage_error(runs):
    res = CliRunner().invoke(main, ["report", str(runs["a"]), "--out", "/proc/curator-test.html"])
    assert res.exit_code == 2 and "/proc/curator-test.html" in res.stderr, res.output
