"""``python -m curator.cli`` (same as the ``curator`` command)."""

from curator.cli.entry import entry

entry()
