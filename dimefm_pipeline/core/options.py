"""A config field and its command-line option in one place: the default, the help text and the flag.

Config dataclasses declare their fields with `option(...)`; the CLI builds its typer options from
them (`cli.options`), so no default, help text or flag name is written twice.
"""

from __future__ import annotations

from dataclasses import MISSING, field


def option(default=MISSING, help: str = "", *, flag: str | tuple[str, ...] | None = None, factory=MISSING,
           cli: bool = True, **typer_kw):
    """A dataclass field with its option: `flag` defaults to `--name-with-dashes` (a tuple field may
    name one flag per element); `cli=False` keeps a field off the command line (it is filled from
    other options or only by recipes); `typer_kw` are passed to `typer.Option` (min, max...)."""
    meta = {"help": help, "flag": flag, "cli": cli, "typer": typer_kw}
    if factory is not MISSING:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)
