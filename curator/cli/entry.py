"""The ``curator`` executable's entry point: run the command, then leave without the interpreter's teardown.

Tearing down the module graphs of pyarrow, pandas and DuckDB takes ~0.1 s at exit, a tenth of a small run's
wall time, and the command has nothing left to do by then. So, once the command has returned, the normal exit's
steps run up to that teardown: non-daemon threads are waited for until they have ended (``threading._shutdown``,
which the interpreter calls), the ``atexit`` handlers run (logging, Ray's shutdown, multiprocessing's children) and
the standard streams are flushed; then the process ends with ``os._exit``. ``curator.cli.main`` itself (click's
``CliRunner``, library use) is unaffected.

A thread leaves ``threading.enumerate()`` when its ``run`` returns, before the objects it held are freed: a
process pool's management thread frees the pool's queues then, whose finalizers unlink their semaphores and tell
multiprocessing's resource tracker. Ending the process before that (not waiting for a thread the enumeration no
longer lists) made the tracker print "leaked semaphore objects" after a Ctrl-C.

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
    threading._shutdown()  # waits for non-daemon threads until their thread states are gone, as the normal exit does
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
