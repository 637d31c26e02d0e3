"""Progress bars (rich) for long steps; silent with ``quiet`` or when stderr is not a terminal."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager


@contextmanager
def progress_bar(desc: str, total: int, quiet: bool = False) -> Iterator[Callable[[int], None]]:
    """Yield ``advance(n=1)``; shows a bar on stderr unless quiet."""
    if quiet or total == 0:
        yield lambda n=1: None
        return
    from rich.console import Console  # rich only when a bar is shown (a quiet run does not pay its import)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        console=Console(stderr=True), transient=False)
    with progress:
        task = progress.add_task(desc, total=total)
        yield lambda n=1: progress.advance(task, n)
