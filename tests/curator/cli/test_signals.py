"""Signals to ``curator run`` with a worker pool: killing the driver alone ends its workers (a supervisor reading the
run's pipes is not left hanging); SIGTERM and Ctrl-C stop the run cleanly with one line and 143 / 130, and the
same command resumes to a clean run's digest."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pytest

from curator.stage import Stage
from tests.support import synthetic_rows, write_jsonl, write_recipe

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc to find the workers")

RESUME = "interrupted: run the same command again to resume (finished work is kept)"


class SlowStage(Stage):
    """Marks ``$SLOW_MARKS/<pid>`` and sleeps ``$SLOW_SECONDS`` on each batch, so a test can signal a run whose
    workers are busy."""

    name = "test.slow"
    kind = "score"
    version = 1
    requires = ("sample_id",)
    provides = ("slow",)

    def process_batch(self, batch):
        marks = Path(os.environ["SLOW_MARKS"])
        marks.mkdir(exist_ok=True)
        (marks / str(os.getpid())).touch()
        time.sleep(float(os.environ["SLOW_SECONDS"]))
        return pa.table({"sample_id": batch.column("sample_id"), "slow": pa.array([1] * batch.num_rows, pa.int64())})


# `curator run` with a 2-worker pool even for a small input, and the slow stage registered.
DRIVER = """import sys
from curator.executors import local
from curator.registry import register
from tests.curator.cli.test_signals import SlowStage
local.POOL_MIN_BYTES = 0
register(SlowStage)
sys.argv = ["curator", "run", "recipe.yaml", "-o", sys.argv[1], "-q"]
from curator.cli.entry import entry
entry()
"""

# Faults for the driver, as on a loaded machine: the main thread pauses 0.5 s after stopping the pool (its management
# thread ends ``run`` meanwhile, and leaves ``threading.enumerate()``), and a semaphore released by a thread other
# than the main one takes 0.5 s (that thread then frees the pool's queues, whose semaphores the resource tracker
# watches).
SLOW_RELEASE = """import threading, time
from multiprocessing import synchronize
from curator.executors import local
release, stop = synchronize.SemLock._cleanup, local.LocalExecutor.stop
def slow_release(name):
    if threading.get_ident() != threading.main_thread().ident:
        time.sleep(0.5)
    release(name)
def paused_stop(self):
    stop(self)
    time.sleep(0.5)
synchronize.SemLock._cleanup = staticmethod(slow_release)
local.LocalExecutor.stop = paused_stop
"""


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    d = tmp_path_factory.mktemp("signals")
    write_jsonl(d / "data.jsonl", synthetic_rows(200))
    write_recipe(d, ["data.jsonl"], [{"use": "normalize"}, {"use": "test.slow"}], shards=4,
                 executor={"kind": "local", "workers": 2})
    clean = _driver(d, "clean", seconds=0)
    out, err = clean.communicate(timeout=120)
    assert clean.returncode == 0, err
    return d, json.loads(out)["digest"]


def _driver(d: Path, run_dir: str, seconds: float, prelude: str = "") -> subprocess.Popen:
    env = {**os.environ, "SLOW_MARKS": str(d / f"marks-{run_dir}"), "SLOW_SECONDS": str(seconds)}
    return subprocess.Popen([sys.executable, "-c", prelude + DRIVER, run_dir], cwd=d, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def _busy(d: Path, proc: subprocess.Popen, run_dir: str) -> list[int]:
    """Wait until both workers are inside the slow stage; the driver's descendants (workers, resource tracker)."""
    marks = d / f"marks-{run_dir}"
    deadline = time.time() + 60
    while not (marks.exists() and len(list(marks.iterdir())) >= 2):
        assert proc.poll() is None and time.time() < deadline, proc.stderr.read() if proc.poll() is not None else ""
        time.sleep(0.1)
    kids = _descendants(proc.pid)
    assert {int(p.name) for p in marks.iterdir()} <= set(kids)
    return kids


def _descendants(pid: int) -> list[int]:
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
    found, todo = [], [pid]
    while todo:
        parent = todo.pop()
        kids = [p for p, ppid in parents.items() if ppid == parent]
        found += kids
        todo += kids
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")  # a zombie has exited (nobody may reap it in a container)


def _gone(pids: list[int], seconds: float = 10) -> list[int]:
    """The pids still alive after up to ``seconds``."""
    deadline = time.time() + seconds
    while (alive := [p for p in pids if _alive(p)]) and time.time() < deadline:
        time.sleep(0.1)
    return alive


def _end(proc: subprocess.Popen) -> None:
    """Clean up whatever this test started (its own process group)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_killing_only_the_driver_ends_its_workers(work, sig):
    d, _ = work
    run_dir = f"killed-{sig.name}"
    proc = _driver(d, run_dir, seconds=120)
    try:
        kids = _busy(d, proc, run_dir)
        os.kill(proc.pid, sig)  # the driver alone, as `kill PID` or a supervisor's terminate() does
        out, err = proc.communicate(timeout=20)  # the workers held these pipes open: this hung
        assert _gone(kids) == []
        if sig == signal.SIGTERM:
            assert proc.returncode == 143 and "Traceback" not in err, err
            assert err.strip().splitlines() == [RESUME]
    finally:
        _end(proc)


def test_ctrl_c_exits_130_with_one_line_and_the_rerun_resumes(work):
    d, digest = work
    proc = _driver(d, "ctrl-c", seconds=120)
    try:
        kids = _busy(d, proc, "ctrl-c")
        os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
        out, err = proc.communicate(timeout=20)
        assert proc.returncode == 130 and "Traceback" not in err, err
        assert err.strip().splitlines() == [RESUME]
        assert _gone(kids) == []
    finally:
        _end(proc)
    rerun = _driver(d, "ctrl-c", seconds=0)
    out, err = rerun.communicate(timeout=120)
    assert rerun.returncode == 0, err
    assert json.loads(out)["digest"] == digest


def test_ctrl_c_exit_waits_for_the_pool_thread_to_release_its_semaphores(work):
    """Ending the process while the pool's thread releases the pool's semaphores (it has left
    ``threading.enumerate()`` by then) made multiprocessing's resource tracker warn of leaked semaphores."""
    d, _ = work
    proc = _driver(d, "ctrl-c-slow-release", seconds=120, prelude=SLOW_RELEASE)
    try:
        kids = _busy(d, proc, "ctrl-c-slow-release")
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=20)
        assert proc.returncode == 130 and err.strip().splitlines() == [RESUME], err
        assert _gone(kids) == []
    finally:
        _end(proc)
