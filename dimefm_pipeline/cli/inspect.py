"""`dimefm info` and `dimefm sql`: look inside a manifest without writing to it."""

from __future__ import annotations

import sys
from typing import Optional

import typer

from dimefm_pipeline.cli import app


@app.command("info")
def info(
    cache: str = typer.Option(..., "--cache", help="Manifest file (.duckdb)."),
    verify: bool = typer.Option(False, "--verify", help="Hash every cache file and compare the cache folder with the "
                                "manifest; exit 1 on any finding."),
):
    """Teacher, sources, item and error counts, and disk use of a cache."""
    from dimefm_pipeline.app.inspect import CacheFindings, print_info

    try:
        print_info(cache, verify=verify)
    except CacheFindings as exc:
        print(f"verify: {exc}", file=sys.stderr)
        raise typer.Exit(1) from None


@app.command("sql")
def sql(
    query: str = typer.Argument(..., help="SQL to run read-only, e.g. \"SELECT source, count(*) FROM items GROUP BY ALL\"."),
    cache: str = typer.Option(..., "--cache", help="Manifest file (.duckdb)."),
    limit: Optional[int] = typer.Option(None, "--limit", min=0, help="Rows to show at most (default: 50 in a table, all in CSV)."),
    csv: bool = typer.Option(False, "--csv", help="Print CSV (every row unless --limit) instead of a table."),
):
    """Run one read-only SQL statement against a manifest (tables and the *_embeddings views).

    The query can read the manifest and the cache's files and nothing else; statements that would
    write (COPY, EXPORT, ATTACH, SET, CHECKPOINT...) are refused."""
    from dimefm_pipeline.app.inspect import print_sql

    print_sql(cache, query, limit=limit, csv=csv)
