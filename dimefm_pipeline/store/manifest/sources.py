"""The sources of a cache: registration (by content, never twice), their file tables, what was cached
from them (for checks against the data as it is now), and moving one to a new root."""

from __future__ import annotations

import json
import os

from dimefm_pipeline.core.errors import DimefmError
from dimefm_pipeline.store.manifest.connection import Manifest, first, now


def register_source(man: Manifest, spec, plan, shard_size: int, run_id: int) -> tuple[int, bool, list[int]]:
    """(source_id, is_new, touched file numbers). A known source must hold the same files (names and
    sizes); files whose timestamps moved are returned, for a check of their content
    (`source_check.accept_touched`) before anything is added to the source."""
    import pyarrow as pa

    row = first(man.con.execute(
        "SELECT source_id, fingerprint, options, shard_size FROM sources WHERE modality = ? AND uri = ?",
        [spec.modality, spec.uri],
    ))
    if row is not None:
        if row[1] != plan.fingerprint:
            raise DimefmError(f"source {spec.uri} changed since it was cached (files added, removed or resized): use a new --cache")
        if json.loads(row[2]) != spec.options:
            raise DimefmError(f"source {spec.uri} was cached with options {row[2]}, not {json.dumps(spec.options)}")
        stored = man.con.execute("SELECT file_id, mtime_ns FROM source_files WHERE source_id = ? ORDER BY file_id",
                                 [row[0]]).fetchall()
        return row[0], False, [fid for (fid, mtime), e in zip(stored, plan.files) if mtime != e.mtime_ns]
    source_id = first(man.con.execute("SELECT coalesce(max(source_id), 0) + 1 FROM sources"))[0]
    man.con.execute(
        "INSERT INTO sources VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0, ?)",
        [source_id, spec.modality, spec.uri, spec.fmt, plan.fingerprint, json.dumps(spec.options),
         len(plan.files), shard_size, len(plan.units), plan.duplicates, now(), run_id, spec.root,
         json.dumps(plan.other_files)],
    )
    if plan.problems:
        man.con.executemany("INSERT INTO errors VALUES (?, ?, 'list', ?, ?, ?, NULL)",
                            [[source_id, key, reason, run_id, now()] for key, reason in plan.problems])
    files = pa.table({
        "source_id": pa.array([source_id] * len(plan.files), pa.int32()),
        "file_id": pa.array(range(len(plan.files)), pa.int32()),
        "path": pa.array([e.path for e in plan.files], pa.string()),
        "size": pa.array([e.size for e in plan.files], pa.int64()),
        "mtime_ns": pa.array([e.mtime_ns for e in plan.files], pa.int64()),
    })
    man.con.register("_files", files)
    man.con.execute("INSERT INTO source_files SELECT * FROM _files")
    man.con.unregister("_files")
    return source_id, True, []


def record_mtimes(man: Manifest, source_id: int, plan, files: list[int]) -> None:
    """The new timestamps of files whose content was checked to be what was cached."""
    man.con.executemany("UPDATE source_files SET mtime_ns = ? WHERE source_id = ? AND file_id = ?",
                        [[plan.files[f].mtime_ns, source_id, f] for f in files])


def same_source(man: Manifest, spec) -> tuple | None:
    """(source id, uri) of the cached source that reads the same folder or files as `spec` under
    another spelling (a symlink, a hardlink, `..`), or None."""
    from dimefm_pipeline.formats import format_named
    from dimefm_pipeline.formats.planner import identity, source_identity

    wanted = source_identity(spec)
    rows = man.query("SELECT source_id, uri, root FROM sources WHERE modality = ? AND format = ? AND uri <> ?",
                     [spec.modality, spec.fmt, spec.uri]).fetchall()
    for sid, uri, root in rows:
        files = [] if format_named(spec.fmt).whole_folder else [r[0] for r in man.query(
            "SELECT path FROM source_files WHERE source_id = ? ORDER BY file_id", [sid]).fetchall()]
        if identity(spec.fmt, root, files) == wanted:
            return sid, uri
    return None


def _real_roots(man: Manifest) -> dict[int, str]:
    """Every cached source's root with symlinks and `..` resolved."""
    return {sid: os.path.realpath(root) for sid, root in man.query("SELECT source_id, root FROM sources").fetchall()}


def check_overlap(man: Manifest, new: list) -> None:
    """Refuse new sources that share a file with each other or with a cached source of the same
    modality, however the paths are spelt (symlinks resolved): its items would be cached, and trained
    on, twice. `new`: (spec, plan) of sources not yet registered, all of one modality. (The captions of
    a tar whose images are cached are not a repeat: a file may be one image source and one sentence
    source.)"""
    import pyarrow as pa

    paths, owners = [], []
    modality = new[0][0].modality if new else None
    for i, (spec, plan) in enumerate(new):
        root = os.path.realpath(spec.root)
        paths.extend(os.path.join(root, e.path) for e in plan.files)
        owners.extend([i] * len(plan.files))
    if not paths:
        return
    man.con.register("_new_files", pa.table({"path": pa.array(paths, pa.string()), "owner": pa.array(owners, pa.int32())}))
    try:
        twice = man.con.execute("SELECT path, min(owner), max(owner) FROM _new_files GROUP BY path "
                                "HAVING count(DISTINCT owner) > 1 LIMIT 1").fetchall()
        if twice:
            a, b = new[twice[0][1]][0].uri, new[twice[0][2]][0].uri
            raise DimefmError(f"{_overlap(twice[0][0], a)} is also part of {b}, given in the same command: give it once")
        roots = _real_roots(man)
        man.con.register("_real_roots", pa.table({"source_id": pa.array(list(roots), pa.int32()),
                                                  "root": pa.array(list(roots.values()), pa.string())}))
        cached = man.con.execute(
            "SELECT n.path, n.owner, s.source_id, s.uri FROM _new_files n JOIN source_files f "
            "ON n.path = (SELECT root FROM _real_roots r WHERE r.source_id = f.source_id) || '/' || f.path "
            "JOIN sources s ON s.source_id = f.source_id AND s.modality = ? LIMIT 1", [modality]).fetchall()
    finally:
        man.con.unregister("_new_files")
        man.con.unregister("_real_roots")
    if cached:
        path, owner, sid, uri = cached[0]
        where = f"as source {sid}" if _same(path, uri) else f"as part of source {sid} ({uri})"
        raise DimefmError(f"{_overlap(path, new[owner][0].uri)} is already cached {where}: encode only what is new")


def _overlap(path: str, uri: str) -> str:
    """A shared file named once: the source itself when it is that file."""
    return uri if _same(path, uri) else f"{path} (of {uri})"


def _same(path: str, uri: str) -> bool:
    return os.path.realpath(path) == os.path.realpath(uri)


def source_row(man: Manifest, modality: str, uri: str):
    """(source_id, shard_size) of a registered source, or None."""
    return first(man.con.execute(
        "SELECT source_id, shard_size FROM sources WHERE modality = ? AND uri = ?", [modality, uri]
    ))


def source_settings(man: Manifest, source_id: int) -> tuple[str, str, dict, int]:
    """(modality, format, options, shard size) a source was registered with."""
    modality, fmt, options, shard_size = man.query(
        "SELECT modality, format, options, shard_size FROM sources WHERE source_id = ?", [source_id]).fetchall()[0]
    return modality, fmt, json.loads(options), shard_size


def source_files(man: Manifest, source_id: int):
    """The file table of a source as an Arrow table (file_id order): path, size, mtime_ns."""
    rel = man.con.sql("SELECT path, size, mtime_ns FROM source_files WHERE source_id = $1 ORDER BY file_id",
                      params=[source_id])
    # the Arrow method's name changed between DuckDB releases
    return rel.to_arrow_table() if hasattr(rel, "to_arrow_table") else rel.arrow()


def text_hashes(man: Manifest):
    """Content hashes (int64 array) of every sentence already cached (exact-duplicate skipping)."""
    return man.con.execute("SELECT text_hash FROM items WHERE modality = 'text' AND text_hash IS NOT NULL").fetchnumpy()["text_hash"]


def completed_units(man: Manifest, source_id: int) -> set[int]:
    rows = man.con.execute("SELECT unit FROM units WHERE source = ? AND state = 'complete'", [source_id]).fetchall()
    return {r[0] for r in rows}


def cached_image_items(man: Manifest, source_id: int, files: list[int] | None = None) -> list[tuple]:
    """(key, file, offset, length, payload hash) of the source's cached images read in place (not
    packed), read from its Parquet shards; `files`: only items of these file-table numbers."""
    shards = [str(man.cache_dir / r[0]) for r in man.query(
        "SELECT parquet_path FROM shards WHERE source = ? AND modality = 'image' ORDER BY shard_id", [source_id]).fetchall()]
    if not shards:
        return []
    sql = "SELECT key, file, \"offset\", length, payload_hash FROM read_parquet(?) WHERE NOT packed"
    params: list = [shards]
    if files is not None:
        sql += " AND list_contains(?, file)"
        params.append([int(f) for f in files])
    return man.query(sql, params).fetchall()


def cached_text_hashes(man: Manifest, source_id: int, unit: int) -> dict[int, int]:
    """Position in the unit -> content hash of each cached sentence of one unit."""
    return dict(man.query(
        "SELECT i.pos, i.text_hash FROM items i JOIN shards s ON i.shard = s.shard_id WHERE s.source = ? AND s.unit = ?",
        [source_id, unit]).fetchall())


# ---------------------------------------------------------------------------------------- relocation
def find_source(man: Manifest, which: str) -> tuple:
    """A source by id, uri or root: (source_id, modality, uri, root)."""
    rows = man.query("SELECT source_id, modality, uri, root FROM sources ORDER BY source_id").fetchall()
    hits = [r for r in rows if which in (str(r[0]), r[2], r[3], r[3].rstrip("/") + "/")]
    if not hits and os.path.exists(which):
        hits = [r for r in rows if os.path.abspath(which) in (r[2], r[3])]
    if len(hits) != 1:
        known = "; ".join(f"{r[0]}: {r[2]}" for r in rows) or "none"
        raise DimefmError(f"no single source matches {which!r} (sources: {known})")
    return hits[0]


def checkable_items(man: Manifest, source_id: int, modality: str) -> int:
    """Items of a source whose bytes can be checked at the source: every sentence, or the images not packed."""
    if modality == "text":
        return man.query("SELECT count(*) FROM items WHERE source = ?", [source_id]).fetchall()[0][0]
    return man.query("SELECT count(*) FROM items i JOIN shards s ON i.shard = s.shard_id JOIN units u "
                     "ON u.source = s.source AND u.unit = s.unit WHERE i.source = ? AND u.pack_path IS NULL",
                     [source_id]).fetchall()[0][0]


def move_source(man: Manifest, source_id: int, old_root: str, new_root: str, new_uri: str, files: int, items: int,
                run_id: int) -> None:
    """Record a source's new root (and uri) and the move itself (`source_moves`)."""
    man.query("UPDATE sources SET root = ?, uri = ? WHERE source_id = ?", [new_root, new_uri, source_id])
    man.query("INSERT INTO source_moves VALUES (?, ?, ?, ?, ?, ?, ?)",
              [source_id, old_root, new_root, files, items, run_id, now()])
