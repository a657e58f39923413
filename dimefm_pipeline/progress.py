"""Rich progress bars shared by every long loop: rate and ETA always shown."""

from __future__ import annotations

import contextlib


@contextlib.contextmanager
def progress_bar(show: bool = True):
    """A rich Progress with units done/total, items and items/s, elapsed and ETA; silent if not `show`."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    columns = [
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[items]:,} items  {task.fields[rate]:,.1f}/s"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
    ]
    with Progress(*columns, disable=not show, transient=False) as bar:
        yield bar


LOG_WIDTH = 240  # columns of tables written to a file or pipe (a batch log): wide enough not to cut them


def make_console(*, stderr: bool = False):
    """A rich console: the terminal's width in a terminal; in logs, wide enough that no table is cut."""
    import sys

    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    return Console(stderr=stderr, width=None if stream.isatty() else LOG_WIDTH)
