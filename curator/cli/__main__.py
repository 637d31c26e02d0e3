"""``python -m curator.cli`` (same as the ``curator`` command)."""

from curator.cli.main import main

main()
