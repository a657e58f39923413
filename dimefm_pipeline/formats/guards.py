"""Guards around data loading: a time limit per item, and loader failures as clear errors.

One bad file must not stall a run of millions: reading and decoding an item runs under a time
limit (`ITEM_TIMEOUT`, SIGALRM in the process that decodes it). A DataLoader worker that dies (out
of memory, a crash in a decoder) or produces nothing for `LOADER_TIMEOUT` seconds ends the run with
one `error:` line instead of a hang or a traceback; stage one resumes from its committed units and
stage two from its last checkpoint.
"""

from __future__ import annotations

import contextlib
import signal
import threading

from dimefm_pipeline.core.errors import DimefmError
from dimefm_pipeline.formats.files import BadItem

ITEM_TIMEOUT = 60.0  # seconds to read and decode one item before it is recorded as timed out and skipped
LOADER_TIMEOUT = 1800.0  # seconds the training or encoding loop waits for one batch from a loader worker


@contextlib.contextmanager
def time_limit(seconds: float | None):
    """Raise BadItem in this block after `seconds` (main thread of a process only; no-op otherwise).

    Python code and most C calls return to the interpreter often enough for the alarm to land; a
    read stuck inside the kernel (a dead network mount) can only be ended by LOADER_TIMEOUT.
    """
    if not seconds or threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(signum, frame):
        raise BadItem(f"timed out after {seconds:g} s reading or decoding it")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def guarded(loader, what: str):
    """Iterate a DataLoader; a worker's death, a loader timeout or a user error raised in a worker
    becomes one DimefmError line."""
    it = iter(loader)
    while True:
        try:
            batch = next(it)
        except StopIteration:
            return
        except DimefmError as exc:  # raised in a worker: the loader wraps the message in its traceback
            lines = [line for line in str(exc).splitlines() if line.strip()]
            raise DimefmError(lines[-1].split("DimefmError: ", 1)[-1] if lines else str(exc)) from None
        except RuntimeError as exc:
            msg = " ".join(str(exc).split())
            if "DataLoader" not in msg:
                raise
            raise DimefmError(f"{what} stopped: {msg[:300]} (rerun to resume)") from None
        yield batch
