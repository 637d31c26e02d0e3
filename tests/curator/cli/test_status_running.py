"""``curator status`` of a run that has not finished has the finished layout: each stage by the same name with
``name``, ``kind``, its ``units`` in total next to ``done``, and ``seconds`` (null until the run finishes)."""

import json
import os
import subprocess
import sys

from click.testing import CliRunner

from curator.cli.main import main
from tests.support import ENGINE_STAGES, synthetic_rows, write_jsonl, write_recipe


def _status(run_dir) -> dict:
    res = CliRunner().invoke(main, ["status", str(run_dir)])
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)


def test_a_killed_run_shows_the_finished_layout_with_units_to_go(tmp_path):
    write_jsonl(tmp_path / "d.jsonl", synthetic_rows(60))
    recipe = write_recipe(tmp_path, ["d.jsonl"], ENGINE_STAGES, shards=3)
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "curator.cli", "run", str(recipe), "-o", str(out), "-q"]
    killed = subprocess.run(cmd, env={**os.environ, "CURATOR_FAULT": "write:scores:2"}, capture_output=True,
                            text=True, cwd=tmp_path)
    assert killed.returncode == -9, killed.stderr  # in the shard phase: ingest done, patterns 1 of 3 shards
    running = _status(out)
    assert not running["finished"]
    assert [(s["stage"], s["name"], s["kind"], s["units"]) for s in running["stages"]] == [
        ("normalize", "normalize", "ingest", 1 + 3 + 1), ("patterns", "patterns", "score", 3),
        ("quality", "quality", "score", 3 + 1), ("decide", "decide", "decide", 1)]
    first, patterns = running["stages"][:2]
    assert first["done"] == first["units"] and patterns["done"] < patterns["units"]
    assert all(s["seconds"] is None and s["failed"] == [] for s in running["stages"])

    assert subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path).returncode == 0
    done = _status(out)
    assert [list(s) for s in done["stages"]] == [list(s) for s in running["stages"]]
    assert [(s["stage"], s["units"]) for s in done["stages"]] == [(s["stage"], s["units"]) for s in running["stages"]]
    assert all(s["done"] == s["units"] for s in done["stages"])
