"""A damaged ``dataset/`` of a finished run (its ``state.json`` cut short or without its file list, a data file
rewritten with bytes Arrow cannot read, each the size the run wrote) is, for every command that reads it, the usual
damaged-run error naming the file: exit 2, no traceback; before, ``state.json`` crashed them with a JSONDecodeError or
KeyError traceback and a bad data file was not named."""

import shutil

import pytest
from click.testing import CliRunner

from curator.cli import main
from curator.pipeline import run
from tests.support import ENGINE_STAGES, synthetic_rows, write_jsonl, write_recipe


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    d = tmp_path_factory.mktemp("dsdamage")
    write_jsonl(d / "data.jsonl", synthetic_rows(80))
    recipe = write_recipe(d, ["data.jsonl"], ENGINE_STAGES, shards=2, gate=[{"name": "rows", "sql": "n_rows() > 0"}])
    return run(recipe, d / "ref", quiet=True).run_dir


def _same_size(path, head: bytes, fill: bytes) -> None:
    """Rewrite ``path`` as ``head`` padded with ``fill`` to its size (a size check does not see it)."""
    size = path.stat().st_size
    path.write_bytes((head + fill * size)[:size])


DAMAGE = {
    "state.json cut short": ("state.json", lambda p: _same_size(p, p.read_bytes()[: p.stat().st_size // 2], b" ")),
    "state.json without its files": ("state.json", lambda p: _same_size(p, b"{}", b" ")),
    "data file unreadable": ("data-00000-of-00001.arrow",
                             lambda p: _same_size(p, p.read_bytes()[: p.stat().st_size // 2], b"\xff")),
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_a_damaged_dataset_file_is_named_by_every_command_that_reads_it(finished, tmp_path, damage):
    name, spoil = DAMAGE[damage]
    run_dir = tmp_path / "run"
    shutil.copytree(finished, run_dir)
    spoil(run_dir / "dataset" / name)
    for args in (["status"], ["query", "SELECT count(*) FROM dataset"], ["gate"], ["report"]):
        res = CliRunner().invoke(main, [args[0], str(run_dir), *args[1:]])
        assert res.exit_code == 2, (args, res.output)
        (line,) = res.stderr.splitlines()
        assert "a file of this run directory cannot be read (dataset/" + name + ": " in line, (args, line)
        assert "curator verify" in line and "running the recipe again" in line, (args, line)
