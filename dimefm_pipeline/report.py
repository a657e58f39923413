"""Rich tables for stage-one results and manifest inspection."""

from __future__ import annotations

from pathlib import Path

from dimefm_pipeline.progress import make_console
from rich.table import Table

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


def open_for_reading(cache: str):
    """Open a manifest read-only: nothing is written, whoever else is using it."""
    from dimefm_pipeline.manifest import Manifest

    return Manifest(cache, read_only=True)


def print_info(cache: str, *, verify: bool = False) -> None:
    from dimefm_pipeline.cache import sha256_file
    from dimefm_pipeline.errors import DimefmError

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
            bad = 0
            for modality in ("image", "text"):
                for npy, _, _, checksum in man.shard_files(modality):
                    if not Path(npy).exists() or sha256_file(npy) != checksum:
                        console.print(f"[red]damaged shard: {npy}")
                        bad += 1
            if bad:
                raise DimefmError(f"{bad} shard(s) missing or not matching their checksum")
            console.print("[green]all shard checksums match")


def print_sql(cache: str, query: str, *, limit: int = 50, csv: bool = False) -> None:
    import duckdb

    from dimefm_pipeline.errors import DimefmError

    with open_for_reading(cache) as man:
        try:
            rel = man.con.sql(query)
        except duckdb.Error as exc:
            raise DimefmError(f"SQL error: {str(exc).splitlines()[0]}") from None
        if rel is None:
            return
        cols = rel.columns
        try:
            rows = rel.limit(limit).fetchall()
        except duckdb.Error as exc:
            raise DimefmError(f"SQL error: {str(exc).splitlines()[0]}") from None
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


def _cell(v) -> str:
    if isinstance(v, list) and len(v) > 6:
        return "[" + ", ".join(f"{x:.3f}" if isinstance(x, float) else str(x) for x in v[:4]) + f", ... ({len(v)})]"
    return str(v)
