"""`dimefm sources list|relocate`: the sources of a cache, and pointing one at a copy of its data."""

from __future__ import annotations


import typer

from dimefm_pipeline.cli import app, command_line

sources_app = typer.Typer(help="The sources of a cache: list them, or point one at a copy of its data.", no_args_is_help=True)
app.add_typer(sources_app, name="sources")


@sources_app.command("list")
def list_sources(cache: str = typer.Option(..., "--cache", help="Manifest file (.duckdb).")):
    """Every source with its root folder, files, items and repeated keys."""
    from dimefm_pipeline.app.inspect import print_sources

    print_sources(cache)


@sources_app.command("relocate")
def relocate(
    source: str = typer.Argument(..., help="The source: its id (see `dimefm sources list`), uri or old root folder."),
    new_root: str = typer.Argument(..., help="The folder that now holds the source's files, in the same layout."),
    cache: str = typer.Option(..., "--cache", help="Manifest file (.duckdb)."),
    items: int = typer.Option(1000, "--items", help="Cached items re-read and compared by hash (-1: all of them)."),
):
    """Point a source at a copy of its data, after checking every file's size and a sample of items' bytes."""
    from dimefm_pipeline.app.relocate import relocate_source
    from dimefm_pipeline.app.inspect import console

    r = relocate_source(cache, source, new_root, items=None if items < 0 else items, command=command_line())
    console.print(f"source {r.source_id}: {r.old_root} -> {r.new_root} ({r.files_checked:,} files and "
                  f"{r.items_checked:,} items checked)")
