"""Rich progress helpers shared by long stages (export, simplify, calibration, compare, bench)."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

console = Console(stderr=True)


@contextlib.contextmanager
def progress_bar(enabled: bool = True) -> Iterator[Progress]:
    """A rich Progress on stderr; disabled (but still usable) when ``enabled`` is False."""
    progress = Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        disable=not enabled or not sys.stderr,
        transient=False,
    )
    with progress:
        yield progress


def log(message: str) -> None:
    """One status line on stderr (keeps stdout clean for --json output)."""
    console.print(message, highlight=False)
