"""What every ``curator`` command shares: user errors become a message and an exit code; run-directory
arguments are checked (a path that is not a run directory is a usage error, exit 2, for every command)."""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path

import click

from curator.errors import NOT_WRITABLE, CuratorError, StorageError, storage_error

RUN_MARKS = ("manifest.json", "recipe.yaml", "input", "markers")
WORKERS = click.IntRange(min=1)  # --workers, checked like the recipe's `executor.workers`
RESUMABLE = ("run", "demo")  # commands that resume what an interrupted run of them finished


def friendly(fn):
    """A ``CuratorError`` becomes ``error: ...`` on stderr and its exit code (no traceback); an
    error carrying a ``verdict`` (a gate) prints it first unless ``--quiet``. An ``OSError`` of disk space or
    permissions (``NOT_WRITABLE``) becomes ``error: PATH: reason; check free space and permissions``, exit 2. Ctrl-C (or SIGTERM, as
    ``curator.errors.Interrupted``) becomes one ``interrupted: ...`` line and exit 130 (143)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except CuratorError as exc:
            verdict = getattr(exc, "verdict", None)
            if verdict is not None and not kwargs.get("quiet"):
                click.echo(json.dumps(verdict, indent=2))
            click.echo(f"error: {exc}", err=True)
            sys.exit(exc.exit_code)
        except OSError as exc:
            if exc.errno not in NOT_WRITABLE:
                raise
            click.echo(f"error: {storage_error(exc)}", err=True)
            sys.exit(StorageError.exit_code)
        except KeyboardInterrupt as exc:
            click.echo(f"interrupted: {_after_interrupt()}", err=True)
            sys.exit(getattr(exc, "exit_code", 130))

    return wrapper


def _after_interrupt() -> str:
    ctx = click.get_current_context(silent=True)
    if ctx is not None and ctx.command.name in RESUMABLE:
        return "run the same command again to resume (finished work is kept)"
    return "the command did not finish; run it again"


class RunDirParam(click.ParamType):
    """A run directory (``finished``: one whose run wrote its manifest); anything else is a usage error."""

    name = "RUN_DIR"

    def __init__(self, finished: bool = False):
        self.finished = finished

    def convert(self, value, param, ctx) -> Path:
        path = Path(value)
        if not path.is_dir():
            self.fail(f"'{value}' is not a directory; give the run directory `curator run -o` wrote", param, ctx)
        if not any((path / mark).exists() for mark in RUN_MARKS):
            self.fail(f"'{value}' is not a curator run directory (it has no {', '.join(RUN_MARKS)}); give the "
                      "directory `curator run -o` wrote", param, ctx)
        if self.finished and not (path / "manifest.json").exists():
            self.fail(f"'{value}': the run has not finished (no manifest.json); see `curator status {value}`",
                      param, ctx)
        return path


def echo_json(obj: object) -> None:
    click.echo(json.dumps(obj, indent=2, default=str))
