"""The ``curator`` command line (click): thin commands that parse, call the library and print."""

from curator.cli.main import main

__all__ = ["main"]
