"""SIGINT and SIGTERM as a request to stop at the next safe point.

A long run (an encode, a training) asks `stop_requested()` between units of work: the first signal
only sets the request, so the run finishes its current batch or step, saves what its resume needs
and ends with `Interrupted` (exit code 130 or 143); a second signal stops the process at once.
Processes forked while the request handler is installed (DataLoader workers) inherit it, so a
Ctrl-C sent to the whole process group does not kill them mid-batch.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_requested: list[int] = []  # the signal that asked for the stop, if any


def stop_requested() -> int:
    """The number of the signal that asked this process to stop, or 0."""
    return _requested[0] if _requested else 0


def _ask(signum, frame) -> None:
    if _requested:  # the second signal: stop now, as the signal would without this handler
        signal.signal(signum, signal.SIG_DFL)
        signal.raise_signal(signum)
        return
    _requested.append(signum)
    name = signal.Signals(signum).name
    print(f"\n{name} received: stopping after the current step (send it again to stop at once)", file=sys.stderr, flush=True)


@contextlib.contextmanager
def stop_on_signals():
    """Within this block SIGINT and SIGTERM request a stop instead of ending the process (main thread
    only; elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _requested.clear()
    previous = {s: signal.signal(s, _ask) for s in STOP_SIGNALS}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        _requested.clear()


def ignore_in_worker(_worker_id: int = 0) -> None:
    """DataLoader `worker_init_fn`: a worker leaves SIGINT and SIGTERM to its parent, which stops it."""
    for s in STOP_SIGNALS:
        signal.signal(s, signal.SIG_IGN)
