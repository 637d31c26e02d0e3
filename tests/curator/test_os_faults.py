"""The disk or the run directory failing under a command: a full disk while ingest writes its Arrow staging files,
and a run directory that cannot be written (read-only mount, no permission), are one line naming the path and the
fix, exit 2, with no traceback; once space is freed the same command finishes."""

import builtins
import errno
import json
import os

import pyarrow.ipc as ipc
import pytest
from click.testing import CliRunner

from curator.cli import main
from curator.pipeline import run
from tests.support import ENGINE_STAGES, synthetic_rows, write_jsonl, write_recipe

FIX = "check free space and permissions"


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("osfaults")
    write_jsonl(d / "data.jsonl", synthetic_rows(120))
    recipe = write_recipe(d, ["data.jsonl"], ENGINE_STAGES, shards=3, gate=[{"name": "rows", "sql": "n_rows() > 0"}])
    return d, recipe, run(recipe, d / "reference", quiet=True).digest


def _run(recipe, out):
    return CliRunner().invoke(main, ["run", str(recipe), "-o", str(out), "-q"])


class _FullDisk:
    """An IPC file writer on a disk that fills up at ``when`` ("write": a batch, "close": the footer) and stays
    full (what Arrow raises then)."""

    def __init__(self, writer, when: str):
        self._writer, self._when = writer, when

    def _full(self, step: str) -> None:
        if step == self._when:
            self._when = "close"
            raise OSError(errno.ENOSPC, "Error writing bytes to file. Detail: [errno 28] No space left on device")

    def write_batch(self, batch):
        self._writer.write_batch(batch)
        self._full("write")

    def close(self):
        self._writer.close()
        self._full("close")


@pytest.mark.parametrize("when", ["write", "close"])
def test_disk_full_while_staging_the_input_is_one_line_and_a_rerun_finishes(setup, tmp_path, monkeypatch, when):
    d, recipe, digest = setup
    real = ipc.new_file
    monkeypatch.setattr(ipc, "new_file", lambda *a, **kw: _FullDisk(real(*a, **kw), when))
    out = tmp_path / "full"
    res = _run(recipe, out)
    assert res.exit_code == 2, res.output
    (line,) = res.stderr.splitlines()
    assert line.startswith(f"error: could not write {out}/cache/") and line.endswith(
        f"/ingest/input-00000.good.arrow: No space left on device; {FIX}"), line
    assert not list(out.rglob("*.arrow")) and not list(out.rglob(".*.tmp"))  # nothing half-written is left

    monkeypatch.undo()  # space freed
    rerun = _run(recipe, out)
    assert rerun.exit_code == 0, rerun.output
    assert json.loads(rerun.stdout)["digest"] == digest


@pytest.fixture
def read_only(monkeypatch):
    """``read_only(dir)``: nothing under ``dir`` can be written: its files and folders chmodded read-only where that
    binds; as root (whom chmod does not stop), every mkdir and open for writing under it fails with EROFS, as on a
    read-only mount."""
    chmodded = []

    def make(path):
        if os.geteuid() != 0:
            for p in [path, *path.rglob("*")]:
                p.chmod(0o555 if p.is_dir() else 0o444)
                chmodded.append(p)
            return
        prefix = str(path.resolve()) + os.sep

        def check(target) -> None:
            name = os.fsdecode(os.fspath(target)) if not isinstance(target, int) else ""
            if os.path.abspath(name).startswith(prefix):
                raise OSError(errno.EROFS, os.strerror(errno.EROFS), name)

        real_mkdir, real_os_open, real_open = os.mkdir, os.open, builtins.open

        def mkdir(target, *args, **kwargs):
            check(target)
            return real_mkdir(target, *args, **kwargs)

        def os_open(target, flags, *args, **kwargs):
            if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
                check(target)
            return real_os_open(target, flags, *args, **kwargs)

        def open_(target, mode="r", *args, **kwargs):
            if any(c in mode for c in "wax+"):
                check(target)
            return real_open(target, mode, *args, **kwargs)

        monkeypatch.setattr(os, "mkdir", mkdir)
        monkeypatch.setattr(os, "open", os_open)
        monkeypatch.setattr(builtins, "open", open_)

    yield make
    for path in chmodded:
        path.chmod(0o755 if path.is_dir() else 0o644)


def test_a_run_directory_that_cannot_be_written_is_one_line_naming_it(setup, tmp_path, read_only):
    d, recipe, _ = setup
    parent = tmp_path / "ro"
    parent.mkdir()
    assert _run(recipe, parent / "done").exit_code == 0
    read_only(parent)
    for out, named in ((parent / "new", parent / "new"), (parent / "done", parent / "done" / ".lock")):
        res = _run(recipe, out)
        assert res.exit_code == 2, res.output
        reason = os.strerror(errno.EROFS) if os.geteuid() == 0 else os.strerror(errno.EACCES)
        assert res.stderr.splitlines() == [f"error: {named}: {reason}; {FIX}"]
    res = CliRunner().invoke(main, ["gate", str(parent / "done")])
    assert res.exit_code == 2, res.output
    assert res.stderr.splitlines() == [f"error: {parent / 'done' / '.lock'}: {reason}; {FIX}"]
