"""`dimefm demo`: the offline end-to-end run on the built-in world."""

from __future__ import annotations

from typing import List, Optional

import typer

from dimefm_pipeline.cli import app


@app.command("demo")
def demo(
    out: str = typer.Option("runs/demo", "--out", help="Report folder (corpora, cache, student, report.json, plots)."),
    quick: bool = typer.Option(False, "--quick", help="A tiny run (seconds): for tests and smoke checks."),
    set_: Optional[List[str]] = typer.Option(None, "--set", help="Override the world-demo recipe: section.key=value."),
):
    """Generate unpaired world corpora, encode, mine, distill, then compare teacher and student."""
    from dimefm_pipeline.app.demo import run_demo

    run_demo(out, quick=quick, overrides=tuple(set_ or ()))
