"""``curator run`` reads its run directory for warnings while it still holds the lock: a run waiting with
``--wait`` cannot rewrite the files under it (it used to crash the finished run's command)."""

import fcntl

from click.testing import CliRunner

from curator import run_warnings
from curator.cli.main import main
from tests.support import synthetic_rows, write_jsonl, write_recipe


def test_warnings_are_read_while_the_run_directory_is_locked(tmp_path, monkeypatch):
    write_jsonl(tmp_path / "d.jsonl", synthetic_rows(20))
    recipe = write_recipe(tmp_path, ["d.jsonl"], [{"use": "normalize"}, {"use": "quality"}], shards=2)
    seen = []
    real = run_warnings.run_warnings

    def check_locked(con, manifest, run_dir):
        with open(run_dir / ".lock", "a+") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                seen.append("unlocked")
            except BlockingIOError:
                seen.append("locked")
        return real(con, manifest, run_dir)

    monkeypatch.setattr(run_warnings, "run_warnings", check_locked)
    res = CliRunner().invoke(main, ["run", str(recipe), "-o", str(tmp_path / "run"), "-q"])
    assert res.exit_code == 0, res.output
    assert seen == ["locked"]
