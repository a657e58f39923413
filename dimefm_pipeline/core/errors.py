"""Errors that are the user's to fix: the CLI prints them as one line, without a traceback."""


class DimefmError(Exception):
    """A user-facing error (bad path, wrong manifest, bad option). Library code raises it; the CLI
    prints `error: <message>` and exits with code 2."""
