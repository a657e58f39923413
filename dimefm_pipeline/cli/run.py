"""`dimefm run RECIPE`: a whole run from one file in `stages/`."""

from __future__ import annotations

from typing import List, Optional

import typer

from dimefm_pipeline.cli import app


@app.command("run")
def run(
    recipe: str = typer.Argument(..., help="A recipe file, or the name of one in stages/ (e.g. world-demo, vitl14-to-vitb32)."),
    set_: Optional[List[str]] = typer.Option(None, "--set", help="Override: section.key=value (value parsed as TOML); repeatable."),
    only: Optional[List[str]] = typer.Option(None, "--only", help="Run only these stages: world, encode, mine, distill, eval; repeatable."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the resolved recipe and stop."),
):
    """Run a recipe: world corpora, encode, mine, distill, eval, as its sections say."""
    import json

    from dimefm_pipeline.core.progress import make_console

    from dimefm_pipeline.app.pipeline import run_recipe
    from dimefm_pipeline.app.recipes import distill_config, load_recipe

    r = load_recipe(recipe, set_ or [])
    if dry_run:
        distill_config(r)  # validates every distill option
        make_console().print_json(json.dumps(r.raw))
        return
    run_recipe(r, only=tuple(only or ()))
