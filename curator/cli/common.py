"""What every ``curator`` command shares: user errors become a message and an exit code."""

from __future__ import annotations

import functools
import json
import sys

import click

from curator.errors import CuratorError


def friendly(fn):
    """A ``CuratorError`` becomes ``error: ...`` on stderr and its exit code (no traceback); an
    error carrying a ``verdict`` (a gate) prints it first unless ``--quiet``."""

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

    return wrapper
