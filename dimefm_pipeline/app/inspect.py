"""Rich tables for stage-one results and manifest inspection."""

from __future__ import annotations

import contextlib
import os

from rich.table import Table

from dimefm_pipeline.core.progress import make_console

console = make_console()


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:,.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return str(n)


def print_encode_summary(cfg, s) -> None:
    t = Table(title=f"encode {cfg.modality}s -> {cfg.cache}")
    # short headers: the table must fit an 80-column terminal
    for col in ("units", "cached before", "items", "errors", "duplicates", "truncated", "seconds", "items/s"):
        t.add_column(col, justify="right")
    rate = s.items / s.seconds if s.seconds else 0.0
    t.add_row(str(s.units_done), str(s.units_skipped), f"{s.items:,}", f"{s.errors:,}", f"{s.duplicates:,}",
              f"{s.truncated:,}", f"{s.seconds:.1f}", f"{rate:,.1f}")
    console.print(t)
    if s.errors:
        console.print(f"[yellow]{s.errors} item(s) skipped; see: dimefm sql --cache {cfg.cache} \"SELECT * FROM errors\"")
    if s.other_files:
        kinds = ", ".join(f"{n:,} {ext}" for ext, n in s.other_files.items())
        console.print(f"not images, left out of the image folders: {kinds}")


READ_WAIT = 30.0  # seconds a reader waits for a writer's short transaction before giving up


def open_for_reading(cache: str):
    """Open a manifest read-only: nothing is written; a writer's transaction is waited for."""
    from dimefm_pipeline.store.manifest import Manifest

    return Manifest(cache, read_only=True, wait=READ_WAIT)


def print_info(cache: str, *, verify: bool = False) -> None:
    with open_for_reading(cache) as man:
        teacher = man.teacher()
        t = Table(title=f"teacher of {cache}")
        for c in ("arch", "pretrained", "weights sha256", "dim", "image size", "context"):
            t.add_column(c)
        if teacher:
            t.add_row(teacher.arch, teacher.pretrained, teacher.fingerprint[:16], str(teacher.embed_dim), str(teacher.image_size), str(teacher.context_length))
        console.print(t)

        t = Table(title="sources")
        numeric = ("id", "items", "errors", "duplicates", "truncated", "repeated keys")
        for c in ("id", "modality", "format", "uri", "units done", *numeric[1:]):
            t.add_column(c, justify="right" if c in numeric else "left")
        rows = man.query(
            """SELECT s.source_id, s.modality, s.format, s.uri,
                      count(u.unit), s.units, coalesce(sum(u.items), 0), coalesce(sum(u.errors), 0),
                      s.duplicates, coalesce(sum(u.truncated), 0), coalesce(s.repeated_keys, 0)
               FROM sources s LEFT JOIN units u ON u.source = s.source_id AND u.state = 'complete'
               GROUP BY s.source_id, s.modality, s.format, s.uri, s.units, s.duplicates, s.repeated_keys
               ORDER BY s.source_id"""
        ).fetchall()
        for r in rows:
            t.add_row(str(r[0]), r[1], r[2], r[3], f"{r[4]}/{r[5]}", f"{r[6]:,}", f"{r[7]:,}", f"{r[8]:,}", f"{r[9]:,}",
                      f"{r[10]:,}")
        console.print(t)

        t = Table(title="shards and disk use")
        for c in ("modality", "shards", "rows", "dim", "bytes on disk"):
            t.add_column(c, justify="right")
        for r in man.query("SELECT modality, count(*), sum(rows), max(dim), sum(bytes) FROM shards GROUP BY ALL ORDER BY 1").fetchall():
            t.add_row(r[0], str(r[1]), f"{r[2]:,}", str(r[3]), _size(r[4]))
        console.print(t)

        errs = man.query("SELECT stage, reason, count(*) FROM errors GROUP BY ALL ORDER BY 3 DESC LIMIT 10").fetchall()
        if errs:
            t = Table(title="most common errors")
            for c in ("stage", "reason", "count"):
                t.add_column(c)
            for r in errs:
                t.add_row(r[0], r[1][:90], str(r[2]))
            console.print(t)

        runs = man.query("SELECT run_id, kind, status, started_at, ended_at FROM runs ORDER BY run_id DESC LIMIT 5").fetchall()
        t = Table(title="latest runs")
        for c in ("run", "kind", "status", "started", "ended"):
            t.add_column(c)
        for r in runs:
            t.add_row(str(r[0]), r[1], r[2], str(r[3])[:19], str(r[4])[:19] if r[4] else "")
        console.print(t)

        if verify:
            from dimefm_pipeline.store.verify import verify_cache

            findings, n_files, n_bytes = verify_cache(man)
            for f in findings:
                console.print(f"[red]{f}", highlight=False)
            if findings:
                raise CacheFindings(f"{len(findings)} finding(s) in {n_files:,} cache files ({_size(n_bytes)} hashed)")
            console.print(f"[green]all {n_files:,} cache files match their checksums ({_size(n_bytes)} hashed), "
                          "and the cache folder holds no file the manifest does not know")


class CacheFindings(Exception):
    """`info --verify` found damaged, missing or unknown files (the CLI exits 1)."""


READ_ONLY_STATEMENTS = ("SELECT", "EXPLAIN")  # DESCRIBE, SHOW and SUMMARIZE parse as SELECT
TABLE_ROWS = 50  # rows a table shows unless --limit says otherwise (CSV prints every row)


def run_sql(cache: str, query: str, *, limit: int | None = None) -> tuple[list[str], list[tuple], int | None]:
    """Run one read-only statement: (columns, rows, total rows when `limit` cut them, else None).

    The connection is read-only and locked down before the query runs: it can read the manifest
    and the cache's own files and nothing else, and only SELECT-like statements are accepted, so no
    query can write a file, attach a database or change a setting.
    """
    import duckdb

    from dimefm_pipeline.core.errors import DimefmError

    def fail(exc):
        return DimefmError(f"SQL error: {str(exc).splitlines()[0]}")

    with open_for_reading(cache) as man, _working_dir(man.path.parent):
        man.lock_down()
        try:
            statements = man.con.extract_statements(query)
        except duckdb.Error as exc:
            raise fail(exc) from None
        if len(statements) != 1:
            raise DimefmError(f"dimefm sql runs one statement at a time (got {len(statements)})")
        kind = statements[0].type.name
        if kind not in READ_ONLY_STATEMENTS:
            raise DimefmError(f"dimefm sql is read-only: a {kind} statement is refused (use the duckdb CLI on a copy "
                              "to change or export a cache)")
        try:
            rel = man.con.sql(query)
            cols = rel.columns
            rows = rel.fetchall() if limit is None else rel.limit(limit + 1).fetchall()
            total = None
            if limit is not None and len(rows) > limit:
                total = man.con.sql(f"SELECT count(*) FROM ({query.rstrip().rstrip(';')})").fetchall()[0][0]
                rows = rows[:limit]
        except duckdb.Error as exc:
            raise fail(exc) from None
    return cols, rows, total


@contextlib.contextmanager
def _working_dir(path):
    before = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(before)


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
