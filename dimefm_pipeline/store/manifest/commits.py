"""Stage one's commits: a finished unit's shards, items and errors enter the manifest in one
transaction (from its durable commit marker), and the per-source counts that follow from them."""

from __future__ import annotations

from dimefm_pipeline.core.errors import DimefmError
from dimefm_pipeline.store.manifest.connection import Manifest, first, now
from dimefm_pipeline.store.manifest.sources import completed_units


def ingest(man: Manifest, commit, run_id: int) -> bool:
    """Add one finished unit (its shards, items and errors) in one transaction.

    Returns False when the unit was already committed (a marker left by a crash after commit).
    """
    if commit.unit in completed_units(man, commit.source_id):
        return False
    cache_dir = man.cache_dir
    for s in commit.shards:
        for ext in (".npy", ".parquet") + ((".loc.npy",) if s.loc_checksum else ()):
            if not (cache_dir / f"{s.name}{ext}").exists():
                raise DimefmError(f"commit of unit {commit.source_id}/{commit.unit} names a missing file {s.name}{ext}")
    if commit.pack and not (cache_dir / commit.pack).exists():
        raise DimefmError(f"commit of unit {commit.source_id}/{commit.unit} names a missing file {commit.pack}")
    import duckdb

    con = man.con
    try:
        _insert(con, commit, cache_dir, run_id)
    except duckdb.Error as exc:  # a full disk under the manifest: the unit stays a marker, committed by the rerun
        raise DimefmError(f"cannot write the manifest {man.path}: {str(exc).splitlines()[0]}; the unit's files are "
                          "kept: free space and run the same command again") from None
    return True


def _insert(con, commit, cache_dir, run_id: int) -> None:
    """The unit's rows in one transaction (rolled back whole on any failure)."""
    con.execute("BEGIN TRANSACTION")
    try:
        for s in commit.shards:
            shard_id = first(con.execute("SELECT coalesce(max(shard_id), 0) + 1 FROM shards"))[0]
            con.execute(
                "INSERT INTO shards VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'complete', ?, ?, ?, ?, ?)",
                [shard_id, commit.source_id, commit.unit, s.part, commit.modality, f"{s.name}.npy",
                 f"{s.name}.parquet", s.rows, s.dim, s.dtype, s.checksum, s.parquet_checksum, s.bytes, now(),
                 f"{s.name}.loc.npy" if s.loc_checksum else None, s.loc_checksum or None, s.sample or None,
                 s.loc_sample or None],
            )
            hash_col, view_col = ("text_hash", "NULL") if commit.modality == "text" else ("NULL", "view")
            con.execute(
                "INSERT INTO items (item_id, modality, source, key, shard, \"row\", text_hash, file, pos, \"view\", imported) "
                f"SELECT nextval('item_seq'), ?, source_id, key, ?, row, {hash_col}, file, pos, {view_col}, imported "
                "FROM read_parquet(?) ORDER BY row",
                [commit.modality, shard_id, str(cache_dir / f"{s.name}.parquet")],
            )
        if commit.errors:
            con.executemany(
                "INSERT INTO errors VALUES (?, ?, 'encode', ?, ?, ?, ?)",
                [[commit.source_id, k, r, run_id, now(), f] for k, r, f in commit.errors],
            )
        con.execute("INSERT INTO unit_records VALUES (?, ?, ?)", [commit.source_id, commit.unit, commit.listed])
        con.execute(
            "INSERT INTO units VALUES (?, ?, 'complete', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [commit.source_id, commit.unit, commit.items, len(commit.errors), commit.duplicates,
             commit.truncated, commit.rank, run_id, now(), commit.pack, commit.pack_checksum or None, commit.pack_bytes,
             commit.pack_sample or None],
        )
        con.execute("COMMIT")
    except BaseException:
        try:
            con.execute("ROLLBACK")
        except Exception:  # noqa: BLE001 - the transaction may be gone with the failure; the original error counts
            pass
        raise


def count_repeated_keys(man: Manifest) -> None:
    """Per source: items whose key an earlier item of the same source already had (an image's
    cached views share its key and count once)."""
    man.con.execute(
        "UPDATE sources SET repeated_keys = r.n FROM (SELECT source, count(key) - count(DISTINCT key) AS n "
        "FROM items WHERE coalesce(\"view\", 0) = 0 GROUP BY source) r WHERE sources.source_id = r.source"
    )


ACCOUNTS = """
WITH u AS (SELECT u.source, u.unit, u.duplicates, r.listed FROM units u LEFT JOIN unit_records r
           ON r.source = u.source AND r.unit = u.unit WHERE u.state = 'complete'),
     i AS (SELECT source, count(*) AS n FROM items WHERE coalesce("view", 0) = 0 GROUP BY source),
     e AS (SELECT source, count(*) AS n FROM errors WHERE stage = 'encode' GROUP BY source)
SELECT s.source_id, s.uri, sum(u.listed), coalesce(any_value(i.n), 0), coalesce(any_value(e.n), 0), sum(u.duplicates)
FROM sources s JOIN u ON u.source = s.source_id LEFT JOIN i ON i.source = s.source_id LEFT JOIN e ON e.source = s.source_id
GROUP BY s.source_id, s.uri HAVING count(u.listed) = count(*) ORDER BY s.source_id
"""


def accounts(man: Manifest) -> list[tuple]:
    """Per source whose every unit's records were counted: (id, uri, records listed, items cached,
    errors recorded, duplicates skipped); the first must be the sum of the other three."""
    return man.query(ACCOUNTS).fetchall()
