"""Exclusive locks held by a running process: an open file with an `flock` on it.

The kernel drops the lock when the process ends however it ends (SIGKILL and power loss included),
so a lock that can be taken means its last holder is gone. Used for one encode per cache, one
distill per output folder, and to tell a run that is still going from one that died.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from dimefm_pipeline.core.errors import DimefmError


class Lock:
    """A held lock; `release()` (or the end of the process) drops it."""

    def __init__(self, path: Path, f):
        self.path, self._f = path, f

    def release(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()


def hold(path: Path, busy: str) -> Lock:
    """Take the lock of `path` (created if missing), or raise DimefmError(`busy` + who holds it)."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        f = open(path, "a+")
    except OSError as exc:
        raise DimefmError(f"cannot create the lock file {path}: {exc.strerror}") from None
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.seek(0)
        holder = f.read().strip() or "another process"
        f.close()
        raise DimefmError(f"{busy} ({holder})") from None
    f.seek(0)
    f.truncate()
    f.write(f"pid {os.getpid()}")
    f.flush()
    return Lock(path, f)


def is_held(path: Path) -> bool:
    """True while a living process holds the lock of `path` (False when the file is missing)."""
    try:
        f = open(path, "rb")
    except OSError:
        return False
    with f:
        try:
            fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return True
        fcntl.flock(f, fcntl.LOCK_UN)
        return False
