"""`dimefm sources relocate`: point a cached source at a copy of its data (a node's local SSD, a new
mount), after checking that the copy holds the same files and the same bytes."""

from __future__ import annotations

import os
from dataclasses import dataclass

from dimefm_pipeline.core.errors import DimefmError


@dataclass
class RelocateResult:
    source_id: int
    old_root: str
    new_root: str
    files_checked: int
    items_checked: int


def find_source(man, which: str) -> tuple:
    """A source by id, uri or root: (source_id, modality, uri, root)."""
    rows = man.query("SELECT source_id, modality, uri, root FROM sources ORDER BY source_id").fetchall()
    hits = [r for r in rows if which in (str(r[0]), r[2], r[3], r[3].rstrip("/") + "/")]
    if not hits and os.path.exists(which):
        hits = [r for r in rows if os.path.abspath(which) in (r[2], r[3])]
    if len(hits) != 1:
        known = "; ".join(f"{r[0]}: {r[2]}" for r in rows) or "none"
        raise DimefmError(f"no single source matches {which!r} (sources: {known})")
    return hits[0]


def relocate_source(cache: str, which: str, new_root: str, *, items: int | None = 1000, command: str = "") -> RelocateResult:
    """Check `new_root` against the source's file table (every file's size) and re-hash `items` of its
    cached items there (None: all of them), then record the new root. Nothing changes on a mismatch."""
    from dimefm_pipeline.store.manifest import Manifest, now
    from dimefm_pipeline.store.source_check import check_files, check_items

    new_root = os.path.abspath(new_root)
    if not os.path.isdir(new_root):
        raise DimefmError(f"{new_root} is not a folder")
    with Manifest(cache) as man:
        sid, modality, uri, old_root = find_source(man, which)
        table = man.source_files(sid)
        problems, n_files = check_files(new_root, table)
        if problems:
            raise DimefmError(f"{new_root} does not hold source {sid}'s files: {problems[0]}"
                              f"{f' (and {len(problems) - 1} more)' if len(problems) > 1 else ''}")
        units = None
        if modality == "text":
            from dimefm_pipeline.formats import plan_source, resolve_source

            units = plan_source(resolve_source(_moved(uri, old_root, new_root), "text", _options(man, sid)), sid,
                                _shard_size(man, sid)).units
        bad = check_items(man, sid, new_root, sample=items, units=units)
        if bad:
            raise DimefmError(f"{new_root} holds other bytes than source {sid} cached: {bad[0]}")
        n_items = _count_checked(man, sid, modality, items)
        run_id = man.start_run("relocate", command, {"source": sid, "old_root": old_root, "new_root": new_root})
        man.query("UPDATE sources SET root = ?, uri = ? WHERE source_id = ?", [new_root, _moved(uri, old_root, new_root), sid])
        man.query("INSERT INTO source_moves VALUES (?, ?, ?, ?, ?, ?, ?)", [sid, old_root, new_root, n_files, n_items, run_id, now()])
        man.end_run(run_id, "complete", metrics={"files_checked": n_files, "items_checked": n_items})
    return RelocateResult(sid, old_root, new_root, n_files, n_items)


def _moved(uri: str, old_root: str, new_root: str) -> str:
    """The source's uri under its new root (the part below the old root is kept)."""
    rel = os.path.relpath(uri, old_root) if uri.startswith(old_root.rstrip("/") + "/") or uri == old_root else os.path.basename(uri)
    return os.path.normpath(os.path.join(new_root, rel))


def _options(man, sid: int) -> dict:
    import json

    return json.loads(man.query("SELECT options FROM sources WHERE source_id = ?", [sid]).fetchall()[0][0])


def _shard_size(man, sid: int) -> int:
    return man.query("SELECT shard_size FROM sources WHERE source_id = ?", [sid]).fetchall()[0][0]


def _count_checked(man, sid: int, modality: str, sample: int | None) -> int:
    if modality == "text":
        return man.query("SELECT count(*) FROM items WHERE source = ?", [sid]).fetchall()[0][0]
    n = man.query("SELECT count(*) FROM items i JOIN shards s ON i.shard = s.shard_id JOIN units u "
                  "ON u.source = s.source AND u.unit = s.unit WHERE i.source = ? AND u.pack_path IS NULL", [sid]).fetchall()[0][0]
    return n if sample is None else min(n, sample)
