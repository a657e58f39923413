"""Errors that are the user's to fix, and the end of a run asked for by a signal: the CLI prints
both as one line, without a traceback."""

import errno

# errno values of a write refused for want of room: a full disk, a quota, a file-size limit
NO_ROOM = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


class DimefmError(Exception):
    """A user-facing error (bad path, wrong manifest, bad option). Library code raises it; the CLI
    prints `error: <message>` and exits with code 2."""


class Interrupted(Exception):
    """A run stopped by SIGINT or SIGTERM after saving what its resume needs; the message says how to
    resume. The CLI prints it and exits with 128 + the signal's number (130, 143)."""

    def __init__(self, signum: int, message: str):
        super().__init__(message)
        self.signum = signum


def write_failed(exc: OSError, what: str, then: str) -> DimefmError:
    """The error of a write that failed (`what`: what was being written; `then`: how to carry on)."""
    reason = exc.strerror or str(exc)
    if exc.errno in NO_ROOM:
        reason = f"{reason} (the disk, a quota or a file-size limit is full)"
    where = f" {exc.filename}" if exc.filename else ""
    return DimefmError(f"cannot write {what}{where}: {reason}; {then}")
