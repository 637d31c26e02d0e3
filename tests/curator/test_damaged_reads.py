"""Reading a finished run whose files changed after the run (a listed file deleted, cut short, grown, or rewritten
with other rows) is a usage error, exit 2, naming the file, `curator verify` and the fix, for every command that
reads a run; before, a missing score shard or a valid Parquet file with fewer rows was read as if intact (a gate
that fails on the run passed once a score shard was deleted). Running the recipe again repairs the run."""

from __future__ import annotations

import json
import shutil

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from curator import RunResult
from curator.cli import main
from curator.errors import DamagedRunError
from curator.pipeline import run
from tests.support import ENGINE_STAGES, synthetic_rows, write_jsonl, write_recipe

# Fails on the intact run (most rows are longer than 100 characters); passed when a score shard was missing.
RULES = '- {name: few_long, sql: "frac(char_len > 100) < 0.3"}\n'


def delete(path):
    path.unlink()


def truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def append(path):
    with open(path, "ab") as fh:
        fh.write(b"junk")


def fewer_rows(path):
    pq.write_table(pq.read_table(path).slice(0, 3), path)


DAMAGE = [("scores/quality/shard-00001.parquet", delete), ("scores/quality/shard-00002.parquet", fewer_rows),
          ("input/shard-00000.parquet", truncate), ("ledger/shard-00003.parquet", append),
          ("dataset/data-00000-of-00001.arrow", delete)]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    d = tmp_path_factory.mktemp("damaged-reads")
    write_jsonl(d / "data.jsonl", synthetic_rows(120))
    recipe = write_recipe(d, ["data.jsonl"], ENGINE_STAGES, shards=4)
    (d / "rules.yaml").write_text(RULES)
    return d, recipe, run(recipe, d / "run", quiet=True)


def _commands(run_dir, rules):
    return [["gate", str(run_dir), "--rules", str(rules)], ["status", str(run_dir)], ["report", str(run_dir)],
            ["query", str(run_dir), "SELECT count(*) AS n, count(char_len) AS scored FROM scores"]]


def test_every_command_reads_the_intact_run(finished):
    d, _, ref = finished
    codes = [CliRunner().invoke(main, args).exit_code for args in _commands(ref.run_dir, d / "rules.yaml")]
    assert codes == [1, 0, 0, 0]  # the gate's rule fails on the intact run


@pytest.mark.parametrize("rel, damage", DAMAGE, ids=[f"{f.__name__}:{r}" for r, f in DAMAGE])
def test_a_damaged_run_is_exit_2_naming_the_file_and_the_fix(finished, rel, damage, tmp_path):
    d, recipe, ref = finished
    out = tmp_path / "run"
    shutil.copytree(ref.run_dir, out)
    damage(out / rel)
    for args in _commands(out, d / "rules.yaml"):
        res = CliRunner().invoke(main, args)
        assert res.exit_code == 2, (args, res.output)
        assert rel in res.stderr and f"curator verify {out}" in res.stderr, (args, res.stderr)
        assert "running the recipe again" in res.stderr, (args, res.stderr)
    for view in ("ledger", "dataset"):
        with pytest.raises(DamagedRunError, match=rel):
            getattr(RunResult.load(out), view)
    run(recipe, out, quiet=True)  # the fix the message gives
    assert CliRunner().invoke(main, _commands(out, d / "rules.yaml")[0]).exit_code == 1
    assert CliRunner().invoke(main, ["verify", str(out)]).exit_code == 0


def test_a_manifest_without_sizes_is_checked_for_missing_files(finished, tmp_path):
    """A run an earlier curator wrote (no ``sizes`` in its manifest) still reads, and a missing file is named."""
    _, _, ref = finished
    out = tmp_path / "run"
    shutil.copytree(ref.run_dir, out)
    manifest = json.loads((out / "manifest.json").read_text())
    manifest.pop("sizes", None)
    (out / "manifest.json").write_text(json.dumps(manifest))
    assert RunResult.load(out).ledger.num_rows == ref.ledger.num_rows
    (out / "ledger/shard-00000.parquet").unlink()
    with pytest.raises(DamagedRunError, match="ledger/shard-00000.parquet is missing"):
        assert RunResult.load(out).scores is None  # raises
