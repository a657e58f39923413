"""Is a source still the data that was cached? Checked by file sizes and by the content of cached items.

Used when a source comes back with new timestamps (a copy, a `touch`), when a source is pointed at a
new place (`dimefm sources relocate`), and before stage two reads pixels again. Image items are
checked by their bytes' hash (stage one stored it with each item's locator); sentences by the hash
of their text.
"""

from __future__ import annotations

import os

import numpy as np

from dimefm_pipeline.formats import format_named
from dimefm_pipeline.formats.base import text_hash
from dimefm_pipeline.formats.files import BadItem, payload_hash

MAX_REPORTED = 20


def check_files(root: str, table, *, sample: int | None = None, seed: int = 0) -> tuple[list[str], int]:
    """Compare the source's files under `root` with its file table (Arrow: path, size). Returns the
    problems found and how many files were looked at (`sample`: at most that many, drawn seeded)."""
    paths = table.column("path").to_pylist()
    sizes = table.column("size").to_numpy()
    ids = np.arange(len(paths))
    if sample is not None and sample < len(paths):
        ids = np.sort(np.random.default_rng(seed).choice(len(paths), sample, replace=False))
    problems = []
    for i in ids:
        p = os.path.join(root, paths[i])
        try:
            size = os.stat(p).st_size
        except OSError as exc:
            problems.append(f"{p}: {exc.strerror}")
            continue
        if sizes[i] >= 0 and size != sizes[i]:
            problems.append(f"{p}: {size} bytes, cached from a file of {sizes[i]}")
        if len(problems) >= MAX_REPORTED:
            break
    return problems, len(ids)


def check_items(man, source_id: int, root: str, *, files: list[int] | None = None, sample: int | None = None,
                seed: int = 0, units=None) -> list[str]:
    """Re-read cached items of a source under `root` and compare them with what stage one cached.

    `files`: only items of these file-table numbers; `sample`: at most this many items (seeded).
    Text sources need their planned `units` (sentences are found by re-reading whole units).
    """
    modality = man.query("SELECT modality FROM sources WHERE source_id = ?", [source_id]).fetchall()[0][0]
    if modality == "text":
        return _check_texts(man, source_id, root, files, units or [])
    shards = [str(man.cache_dir / r[0]) for r in man.query(
        "SELECT parquet_path FROM shards WHERE source = ? AND modality = 'image' ORDER BY shard_id", [source_id]).fetchall()]
    if not shards:
        return []
    sql = "SELECT key, file, \"offset\", length, payload_hash FROM read_parquet(?) WHERE NOT packed"
    params: list = [shards]
    if files is not None:
        sql += " AND list_contains(?, file)"
        params.append([int(f) for f in files])
    rows = man.query(sql, params).fetchall()
    if sample is not None and sample < len(rows):
        pick = np.sort(np.random.default_rng(seed).choice(len(rows), sample, replace=False))
        rows = [rows[i] for i in pick]
    paths = man.source_files(source_id).column("path").to_pylist()
    fmt = man.query("SELECT format FROM sources WHERE source_id = ?", [source_id]).fetchall()[0][0]
    bad = []
    for key, file, offset, length, want in rows:
        path = os.path.join(root, paths[file])
        try:
            data = format_named(fmt).read_at(path, offset, length)
        except BadItem as exc:
            bad.append(f"{path} ({key}): {exc}")
        else:
            if payload_hash(data) != want:
                bad.append(f"{path} ({key}): its bytes differ from the cached item's")
        if len(bad) >= MAX_REPORTED:
            break
    return bad


def _check_texts(man, source_id: int, root: str, files, units) -> list[str]:
    from dataclasses import replace

    done = {r[0] for r in man.query("SELECT unit FROM units WHERE source = ? AND state = 'complete'", [source_id]).fetchall()}
    bad = []
    for unit in units:
        if unit.index not in done or (files is not None and unit.file not in files):
            continue
        cached = dict(man.query(
            "SELECT i.pos, i.text_hash FROM items i JOIN shards s ON i.shard = s.shard_id WHERE s.source = ? AND s.unit = ?",
            [source_id, unit.index]).fetchall())
        now = {pos: text_hash(text) for pos, _, text, err in format_named(unit.fmt).text_records(replace(unit, root=root)) if err is None}
        changed = [pos for pos, h in cached.items() if now.get(pos) != h]
        if changed:
            bad.append(f"{os.path.join(root, unit.path)}: {len(changed)} sentence(s) differ from the cached ones")
    return bad
