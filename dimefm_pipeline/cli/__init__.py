"""The `dimefm` command line: a thin typer layer over library functions.

Each command group lives in its own module and registers itself on `app`; heavy imports (torch,
open_clip, faiss) happen inside the commands so `dimefm --help` stays fast.
"""

from __future__ import annotations

import sys

import typer

from dimefm_pipeline.core.errors import DimefmError, Interrupted

app = typer.Typer(
    name="dimefm",
    help="Distil a large CLIP-style teacher into a small student from unpaired images and sentences.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

def _version(value: bool) -> None:
    if value:
        from dimefm_pipeline import __version__

        print(f"dimefm {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit.")):
    """Distil a large CLIP-style teacher into a small student from unpaired images and sentences."""


def command_line() -> str:
    """This process's command as a shell would take it again (quoted: paths may hold spaces or quotes)."""
    import shlex

    return shlex.join(["dimefm", *sys.argv[1:]])


# Command modules register onto `app` at import time.
from dimefm_pipeline.cli import encode as _encode  # noqa: E402,F401
from dimefm_pipeline.cli import inspect as _inspect  # noqa: E402,F401
from dimefm_pipeline.cli import sources as _sources  # noqa: E402,F401
from dimefm_pipeline.cli import corpus as _corpus  # noqa: E402,F401
from dimefm_pipeline.cli import distill as _distill  # noqa: E402,F401
from dimefm_pipeline.cli import run as _run  # noqa: E402,F401
from dimefm_pipeline.cli import world as _world  # noqa: E402,F401
from dimefm_pipeline.cli import world_export as _world_export  # noqa: E402,F401
from dimefm_pipeline.cli import eval as _eval  # noqa: E402,F401
from dimefm_pipeline.cli import demo as _demo  # noqa: E402,F401
from dimefm_pipeline.cli import export as _export  # noqa: E402,F401


def main(argv: list[str] | None = None) -> None:
    """Entry point of the `dimefm` console script."""
    try:
        app(args=argv, prog_name="dimefm", standalone_mode=True)
    except DimefmError as exc:
        # one line whatever the terminal width, so a log line holds the whole message
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr, flush=True)
        sys.exit(2)
    except Interrupted as exc:
        print(f"interrupted: {' '.join(str(exc).split())}", file=sys.stderr, flush=True)
        sys.exit(128 + exc.signum)

