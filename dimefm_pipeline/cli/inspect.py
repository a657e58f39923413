"""`dimefm info` and `dimefm sql`: look inside a manifest without writing to it."""

from __future__ import annotations

import typer

from dimefm_pipeline.cli import app


@app.command("info")
def info(
    cache: str = typer.Option(..., "--cache", help="Manifest file (.duckdb)."),
    verify: bool = typer.Option(False, "--verify", help="Recompute every shard checksum."),
):
    """Teacher, sources, item and error counts, and disk use of a cache."""
    from dimefm_pipeline.report import print_info

    print_info(cache, verify=verify)


@app.command("sql")
def sql(
    query: str = typer.Argument(..., help="SQL to run read-only, e.g. \"SELECT source, count(*) FROM items GROUP BY ALL\"."),
    cache: str = typer.Option(..., "--cache", help="Manifest file (.duckdb)."),
    limit: int = typer.Option(50, "--limit", help="Rows to show at most."),
    csv: bool = typer.Option(False, "--csv", help="Print CSV instead of a table."),
):
    """Run a read-only SQL query against a manifest (tables and the *_embeddings views)."""
    from dimefm_pipeline.report import print_sql

    print_sql(cache, query, limit=limit, csv=csv)
