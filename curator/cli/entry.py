"""The ``curator`` executable's entry point: run the command, then leave without the interpreter's teardown.

Tearing down the module graphs of pyarrow, pandas and DuckDB takes ~0.1 s at exit, a tenth of a small run's
wall time, and the command has nothing left to do by then. So, once the command has returned: the standard
streams are flushed, the ``atexit`` handlers run (logging, Ray's shutdown, multiprocessing's children) and the
process ends with ``os._exit``. If a non-daemon thread is still alive, the normal exit (which waits for it) is
kept. ``curator.cli.main`` itself (click's ``CliRunner``, library use) is unaffected.

SIGTERM (``kill PID``, a supervisor's ``terminate()``) stops the command as Ctrl-C does (``curator.errors.Interrupted``,
a ``KeyboardInterrupt``): the worker pool is stopped, one line is printed and the exit status is 143 (Ctrl-C: 130).
"""

from __future__ import annotations

import atexit
import os
import signal
import sys
import threading

from curator.cli.main import main
from curator.errors import Interrupted


def _interrupt(signum: int, frame: object) -> None:
    raise Interrupted(signum)


def entry() -> None:
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        main(prog_name="curator")
        code: object = 0
    except SystemExit as exc:
        code = exc.code
    if any(t.is_alive() and not t.daemon for t in threading.enumerate() if t is not threading.main_thread()):
        sys.exit(code)
    if code is not None and not isinstance(code, int):  # sys.exit("message"): printed, status 1
        print(code, file=sys.stderr)
        code = 1
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe or stream: nothing more can be written to it
            pass
    os._exit(code or 0)
