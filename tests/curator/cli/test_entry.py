"""The ``curator`` executable leaves without the interpreter's teardown, but as a normal exit would: exit codes
and messages unchanged, output flushed, ``atexit`` handlers run, non-daemon threads waited for until they have ended."""

import subprocess
import sys

from curator import __version__


def _entry(tmp_path, prelude: str, *args: str) -> subprocess.CompletedProcess:
    code = (f"{prelude}\nimport sys\nsys.argv = ['curator', *{list(args)!r}]\n"
            "from curator.cli.entry import entry\nentry()\nprint('not reached')")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)


def test_output_is_flushed_and_atexit_handlers_run(tmp_path):
    res = _entry(tmp_path, "import atexit\natexit.register(lambda: print('atexit ran', flush=True))", "--version")
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines() == [f"curator (safety-curator) {__version__}", "atexit ran"]


def test_exit_codes_and_messages_are_kept(tmp_path):
    (tmp_path / "bad.yaml").write_text("curator: 1\nname: x\ninputs: [{path: missing.jsonl}]\nstages: []\n")
    res = _entry(tmp_path, "", "run", "bad.yaml", "-o", "r", "-q")
    assert res.returncode == 2 and "error:" in res.stderr and "not reached" not in res.stdout
    res = _entry(tmp_path, "", "no-such-command")
    assert res.returncode == 2 and "No such command" in res.stderr


def test_a_live_thread_is_waited_for(tmp_path):
    prelude = ("import threading, time\n"
               "threading.Thread(target=lambda: (time.sleep(0.5), print('thread done', flush=True))).start()")
    res = _entry(tmp_path, prelude, "--version")
    assert res.returncode == 0 and res.stdout.splitlines()[-1] == "thread done"


def test_a_thread_still_freeing_what_it_held_is_waited_for(tmp_path):
    """A thread leaves ``threading.enumerate()`` when ``run`` returns, before its objects are freed (a process pool's
    thread frees the pool's queues so, whose finalizers unlink semaphores): the exit waits for that too."""
    prelude = ("import threading, time\n"
               "class Held:\n"
               "    def __del__(self):\n"
               "        time.sleep(1)\n"
               "        print('released', flush=True)\n"
               "class Holder(threading.Thread):\n"
               "    def __init__(self):\n"
               "        super().__init__(target=time.sleep, args=(0.3,))\n"
               "        self.held = Held()\n"
               "Holder().start()\n"  # the thread holds the only reference to itself: freed as it ends
               "time.sleep(0.6)")
    res = _entry(tmp_path, prelude, "--version")
    assert res.returncode == 0 and res.stdout.splitlines()[-1] == "released", res.stdout
