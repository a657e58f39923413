"""`dimefm info`, `dimefm sql` and `dimefm sources list`: a cache shown as rich tables (the queries
are `store.manifest.inspect`'s)."""

from __future__ import annotations

from rich.table import Table

from dimefm_pipeline.core.progress import make_console
from dimefm_pipeline.store.manifest.inspect import info, open_for_reading, run_sql, source_list, teacher_rows

console = make_console()
TABLE_ROWS = 50  # rows a table shows unless --limit says otherwise (CSV prints every row)


class CacheFindings(Exception):
    """`info --verify` found damaged, missing or unknown files (the CLI exits 1)."""


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:,.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return str(n)


def print_info(cache: str, *, verify: bool = False) -> None:
    """The teacher, sources, shards, commonest errors and latest runs of a cache; `verify`: also every
    cache file against its checksum (CacheFindings when one does not match)."""
    with open_for_reading(cache) as man:
        console.print(_teacher_table(cache, man))
        for table in _info_tables(info(man)):
            console.print(table)
        if verify:
            from dimefm_pipeline.store.verify import verify_cache

            findings, n_files, n_bytes = verify_cache(man)
            for f in findings:
                console.print(f"[red]{f}", highlight=False)
            if findings:
                raise CacheFindings(f"{len(findings)} finding(s) in {n_files:,} cache files ({_size(n_bytes)} hashed)")
            console.print(f"[green]all {n_files:,} cache files match their checksums ({_size(n_bytes)} hashed), "
                          "and the cache folder holds no file the manifest does not know")


def _teacher_table(cache: str, man) -> Table:
    """The cache's own teacher (id 1) and every added one, with the rows each has."""
    rows = teacher_rows(man)
    t = Table(title=f"teachers of {cache}" if len(rows) > 1 else f"teacher of {cache}")
    for c in ("id", "name", "arch", "pretrained", "weights sha256", "dim", "image size", "context", "image rows", "text rows"):
        t.add_column(c, justify="right" if c in ("id", "dim", "image size", "context", "image rows", "text rows") else "left")
    for r in rows:
        t.add_row(*[f"{v:,}" if isinstance(v, int) and not isinstance(v, bool) else str(v) for v in r])
    return t


def _info_tables(rows: dict):
    t = Table(title="sources")
    numeric = ("id", "items", "errors", "duplicates", "truncated", "repeated keys")
    for c in ("id", "modality", "format", "uri", "units done", *numeric[1:]):
        t.add_column(c, justify="right" if c in numeric else "left")
    for r in rows["sources"]:
        t.add_row(str(r[0]), r[1], r[2], r[3], f"{r[4]}/{r[5]}", f"{r[6]:,}", f"{r[7]:,}", f"{r[8]:,}", f"{r[9]:,}",
                  f"{r[10]:,}")
    yield t
    t = Table(title="shards and disk use")
    for c in ("modality", "shards", "rows", "dim", "bytes on disk"):
        t.add_column(c, justify="right")
    for r in rows["shards"]:
        t.add_row(r[0], str(r[1]), f"{r[2]:,}", str(r[3]), _size(r[4]))
    yield t
    if rows["errors"]:
        t = Table(title="skipped items by reason")
        for c in ("stage", "reason", "count", "example"):
            t.add_column(c, justify="right" if c == "count" else "left")
        for stage, kind, n, example in rows["errors"]:
            t.add_row(stage, kind[:60], f"{n:,}", example[:70])
        yield t
    t = Table(title="latest runs")
    for c in ("run", "kind", "status", "started", "ended"):
        t.add_column(c)
    for r in rows["runs"]:
        t.add_row(str(r[0]), r[1], r[2], str(r[3])[:19], str(r[4])[:19] if r[4] else "")
    yield t


def print_sources(cache: str) -> None:
    """Every source with its root folder, files, items and repeated keys."""
    with open_for_reading(cache) as man:
        rows = source_list(man)
    t = Table(title=f"sources of {cache}")
    for c in ("id", "modality", "format", "root", "uri", "files", "items", "repeated keys"):
        t.add_column(c, justify="right" if c in ("id", "files", "items", "repeated keys") else "left", overflow="fold")
    for r in rows:
        t.add_row(str(r[0]), r[1], r[2], r[3], r[4], f"{r[5]:,}", f"{r[6]:,}", f"{r[7] or 0:,}")
    console.print(t)


def print_sql(cache: str, query: str, *, limit: int | None = None, csv: bool = False) -> None:
    """A query's result as a table (TABLE_ROWS rows unless `limit` is given) or as CSV (every row)."""
    cols, rows, total = run_sql(cache, query, limit=limit if limit is not None or csv else TABLE_ROWS)
    if csv:
        import csv as _csv
        import sys

        w = _csv.writer(sys.stdout)
        w.writerow(cols)
        w.writerows(rows)
        return
    t = Table()
    for c in cols:
        t.add_column(c)
    for r in rows:
        t.add_row(*[_cell(v) for v in r])
    console.print(t)
    if total is not None:
        console.print(f"showing {len(rows)} of {total:,} rows (--limit N to show more, --csv for all)")


def _cell(v) -> str:
    if isinstance(v, list) and len(v) > 6:
        return "[" + ", ".join(f"{x:.3f}" if isinstance(x, float) else str(x) for x in v[:4]) + f", ... ({len(v)})]"
    return str(v)
