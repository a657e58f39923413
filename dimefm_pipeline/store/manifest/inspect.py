"""Reading a cache for people: the numbers `dimefm info` shows, the files `info --verify` checks, the
sources `dimefm sources list` shows, and `dimefm sql`'s locked-down, read-only queries."""

from __future__ import annotations

from dimefm_pipeline.core.errors import DimefmError
from dimefm_pipeline.store.manifest.connection import Manifest

READ_WAIT = 30.0  # seconds a reader waits for a writer's short transaction before giving up

# Every file the manifest knows, with its recorded sha256.
FILES_SQL = """
SELECT 'embeddings', path, checksum FROM shards
UNION ALL SELECT 'Parquet', parquet_path, parquet_checksum FROM shards
UNION ALL SELECT 'locators', loc_path, loc_checksum FROM shards WHERE loc_path IS NOT NULL
UNION ALL SELECT 'pack', pack_path, pack_checksum FROM units WHERE pack_path IS NOT NULL
UNION ALL SELECT 'token ids', path, checksum FROM token_files
"""


# Skipped items per stage and kind of reason (the words before the first colon; an unsupported
# format keeps its name; numbers elsewhere read as N), with one full reason as an example.
ERRORS_BY_REASON = """
SELECT stage, reason_kind, count(*) AS n, min(reason) AS example FROM (
    SELECT stage, reason, CASE
        WHEN reason LIKE 'unsupported format:%' THEN split_part(reason, ' (', 1)
        WHEN position(':' IN reason) > 0 THEN split_part(reason, ':', 1)
        ELSE regexp_replace(reason, '[0-9]+', 'N', 'g') END AS reason_kind
    FROM errors)
GROUP BY ALL ORDER BY n DESC, reason_kind
"""


def open_for_reading(cache: str) -> Manifest:
    """Open a manifest read-only: nothing is written; a writer's transaction is waited for."""
    return Manifest(cache, read_only=True, wait=READ_WAIT)


def info(man: Manifest) -> dict[str, list[tuple]]:
    """The rows of `dimefm info`: per source, per modality's shards, the commonest errors, the latest runs."""
    sources = man.query(
        """SELECT s.source_id, s.modality, s.format, s.uri,
                  count(u.unit), s.units, coalesce(sum(u.items), 0), coalesce(sum(u.errors), 0),
                  s.duplicates, coalesce(sum(u.truncated), 0), coalesce(s.repeated_keys, 0)
           FROM sources s LEFT JOIN units u ON u.source = s.source_id AND u.state = 'complete'
           GROUP BY s.source_id, s.modality, s.format, s.uri, s.units, s.duplicates, s.repeated_keys
           ORDER BY s.source_id"""
    ).fetchall()
    return {
        "sources": sources,
        "shards": man.query("SELECT modality, count(*), sum(rows), max(dim), sum(bytes) FROM shards GROUP BY ALL ORDER BY 1").fetchall(),
        "errors": man.query(ERRORS_BY_REASON).fetchall(),
        "runs": man.query("SELECT run_id, kind, status, started_at, ended_at FROM runs ORDER BY run_id DESC LIMIT 5").fetchall(),
    }


def teacher_rows(man: Manifest) -> list[tuple]:
    """(id, name, arch, pretrained, weights sha256 prefix, dim, image size, context, image rows, text
    rows) of every teacher of the cache, its own first."""
    from dimefm_pipeline.store.manifest.teachers import all_teachers, has_companions

    own = dict(man.query("SELECT modality, sum(rows) FROM shards WHERE state = 'complete' GROUP BY ALL").fetchall())
    added = {}
    if has_companions(man):
        for tid, modality, n in man.query("SELECT c.teacher_id, s.modality, sum(c.rows) FROM teacher_shards c JOIN shards s "
                                          "USING (shard_id) WHERE c.state = 'complete' GROUP BY ALL").fetchall():
            added[(tid, modality)] = n
    out = []
    for t in all_teachers(man):
        counts = own if t.teacher_id == 1 else {m: added.get((t.teacher_id, m), 0) for m in ("image", "text")}
        i = t.info
        out.append((t.teacher_id, t.name, i.arch, i.pretrained, i.fingerprint[:16], i.embed_dim, i.image_size,
                    i.context_length, int(counts.get("image") or 0), int(counts.get("text") or 0)))
    return out


def source_list(man: Manifest) -> list[tuple]:
    """(id, modality, format, root, uri, files, items, repeated keys) of every source (items: images,
    not their cached views)."""
    return man.query(
        """SELECT s.source_id, s.modality, s.format, s.root, s.uri, s.files,
                  (SELECT count(*) FROM items i WHERE i.source = s.source_id AND coalesce(i."view", 0) = 0),
                  s.repeated_keys
           FROM sources s ORDER BY s.source_id""").fetchall()


def cache_files(man: Manifest) -> list[tuple]:
    """(kind, path relative to the cache folder, sha256) of every file the manifest knows."""
    from dimefm_pipeline.store.manifest.teachers import has_companions

    sql = FILES_SQL
    if has_companions(man):  # added teachers' files (manifests from before them have no such table)
        sql += ("UNION ALL SELECT 'added teacher', path, checksum FROM teacher_shards "
                "UNION ALL SELECT 'added teacher Parquet', parquet_path, parquet_checksum FROM teacher_shards")
    return man.query(sql).fetchall()


READ_ONLY_STATEMENTS = ("SELECT", "EXPLAIN")  # DESCRIBE, SHOW and SUMMARIZE parse as SELECT


def run_sql(cache: str, query: str, *, limit: int | None = None) -> tuple[list[str], list[tuple], int | None]:
    """Run one read-only statement: (columns, rows, total rows when `limit` cut them, else None).

    The connection is read-only and locked down before the query runs: it can read the manifest
    and the cache's own files and nothing else, and only SELECT-like statements are accepted, so no
    query can write a file, attach a database or change a setting.
    """
    import duckdb

    def fail(exc):
        return DimefmError(f"SQL error: {str(exc).splitlines()[0]}")

    with open_for_reading(cache) as man:
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
