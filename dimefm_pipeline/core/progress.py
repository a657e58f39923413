"""Progress for every long loop: a rich bar in a terminal, plain dated lines in a log.

A batch job's output (Slurm, nohup, a pipe) is not a terminal: a live bar would print nothing until
the end. There every task prints one line every `DIMEFM_PROGRESS_SECONDS` seconds (default 30) and
one when it ends, with count, total, rate, elapsed time and ETA.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time

LOG_WIDTH = 240  # columns of tables written to a file or pipe (a batch log): wide enough not to cut them


def make_console(*, stderr: bool = False):
    """A rich console: the terminal's width in a terminal; in logs, wide enough that no table is cut."""
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    return Console(stderr=stderr, width=None if stream.isatty() else LOG_WIDTH)


def _interval() -> float:
    try:
        return float(os.environ.get("DIMEFM_PROGRESS_SECONDS", "30"))
    except ValueError:
        return 30.0


def _clock(seconds: float | None) -> str:
    if seconds is None or seconds != seconds or seconds == float("inf"):
        return "-:--:--"
    s = int(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


class _Task:
    def __init__(self, description: str, total: float | None, completed: float, fields: dict):
        self.description, self.total, self.completed, self.fields = description, total, completed, fields
        self.start = time.time()
        self.start_completed = completed
        self.printed = None  # (completed, items) of the last line printed


class LogProgress:
    """The subset of rich's Progress used here (add_task, update, advance), printing plain lines."""

    def __init__(self, stream=None, interval: float | None = None):
        self.stream = stream or sys.stdout
        self.interval = _interval() if interval is None else interval
        self.tasks: list[_Task] = []
        self._last = time.time()  # the first line after one interval, not at 0 items

    def add_task(self, description: str, total: float | None = None, completed: float = 0, **fields) -> int:
        self.tasks.append(_Task(description, total, completed, fields))
        return len(self.tasks) - 1

    def update(self, task_id: int, *, advance: float | None = None, completed: float | None = None,
               total: float | None = None, description: str | None = None, **fields) -> None:
        t = self.tasks[task_id]
        if t is None:
            return
        if advance is not None:
            t.completed += advance
        if completed is not None:
            t.completed = completed
        if total is not None:
            t.total = total
        if description is not None:
            t.description = description
        t.fields.update(fields)
        if time.time() - self._last >= self.interval:
            self.print_all()

    def advance(self, task_id: int, advance: float = 1) -> None:
        self.update(task_id, advance=advance)

    def remove_task(self, task_id: int) -> None:
        """A finished task: its last line now, none after."""
        t = self.tasks[task_id]
        if t is not None:
            print(self.line(t), file=self.stream, flush=True)
            self.tasks[task_id] = None

    def print_all(self) -> None:
        self._last = time.time()
        for t in self.tasks:
            if t is not None and (t.completed, t.fields.get("items")) != t.printed:
                print(self.line(t), file=self.stream, flush=True)
                t.printed = (t.completed, t.fields.get("items"))

    @staticmethod
    def line(t: _Task) -> str:
        elapsed = time.time() - t.start
        done = t.completed - t.start_completed
        rate = done / elapsed if elapsed > 0 else 0.0
        parts = [time.strftime("%Y-%m-%d %H:%M:%S"), f"{t.description}:"]
        if t.total:
            parts.append(f"{t.completed:,.0f}/{t.total:,.0f} ({100 * t.completed / t.total:.1f}%)")
        else:
            parts.append(f"{t.completed:,.0f}")
        if t.fields.get("items"):
            parts.append(f"{t.fields['items']:,} items")
            if "rate" in t.fields:
                parts.append(f"{t.fields['rate']:,.1f} items/s")
        if "rate" not in t.fields and done:
            parts.append(f"{rate:,.2f}/s")
        eta = (t.total - t.completed) / rate if t.total and rate > 0 else None
        parts.append(f"elapsed {_clock(elapsed)} ETA {_clock(eta)}")
        return " ".join(parts)


@contextlib.contextmanager
def progress_bar(show: bool = True, *, transient: bool = False, stream=None):
    """A progress display: rich bar with units done/total, items and items/s, elapsed and ETA in a
    terminal; `LogProgress` lines when the output is a file or a pipe; silent if not `show`."""
    out = stream or sys.stdout
    if show and not out.isatty():
        log = LogProgress(out)
        try:
            yield log
        finally:
            log.print_all()
        return
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeElapsedColumn,
                               TimeRemainingColumn)
    from rich.text import Text

    class ItemsColumn(ProgressColumn):
        """Items and items/s, for the tasks that count items besides their units."""

        def render(self, task):
            if "items" not in task.fields:
                return Text("")
            return Text(f"{task.fields['items']:,} items  {task.fields.get('rate', 0.0):,.1f}/s")

    columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), ItemsColumn(),
               TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn()]
    with Progress(*columns, disable=not show, transient=transient) as bar:
        yield bar
