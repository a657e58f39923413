"""Is a source still the data that was cached? Checked by file sizes and by the content of cached items.

Used when a source comes back with new timestamps (a copy, a `touch`), when a source is pointed at a
new place (`dimefm sources relocate`), and before stage two reads pixels again. Image items are
checked by their bytes' hash (stage one stored it with each item's locator); sentences by the hash
of their text.
"""

from __future__ import annotations

import os

import numpy as np

from dimefm_pipeline.core.errors import DimefmError
from dimefm_pipeline.formats import format_named
from dimefm_pipeline.formats.base import Listing, text_hash
from dimefm_pipeline.formats.files import BadItem, payload_hash
from dimefm_pipeline.store.manifest import sources

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
    modality, fmt, _, _ = sources.source_settings(man, source_id)
    if modality == "text":
        return _check_texts(man, source_id, root, files, units or [])
    rows = sources.cached_image_items(man, source_id, files)
    if not rows:
        return []
    if sample is not None and sample < len(rows):
        pick = np.sort(np.random.default_rng(seed).choice(len(rows), sample, replace=False))
        rows = [rows[i] for i in pick]
    paths = sources.source_files(man, source_id).column("path").to_pylist()
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


def accept_touched(man, source_id: int, spec, plan, touched: list[int]) -> None:
    """Files of a known source with a new timestamp but the same name and size: what was cached from
    them is compared with their bytes now; the same content is accepted (and the new timestamp
    recorded), other content is a user error."""
    if not touched:
        return
    bad = check_items(man, source_id, spec.root, files=touched, units=plan.units)
    if bad:
        raise DimefmError(f"source {spec.uri}: {bad[0]} ({len(bad)} item(s) differ from what was cached): use a new --cache")
    sources.record_mtimes(man, source_id, plan, touched)


def _check_texts(man, source_id: int, root: str, files, units) -> list[str]:
    from dataclasses import replace

    done = sources.completed_units(man, source_id)
    bad = []
    for unit in units:
        if unit.index not in done or (files is not None and unit.file not in files):
            continue
        cached = sources.cached_text_hashes(man, source_id, unit.index)
        records = format_named(unit.fmt).text_records(replace(unit, root=root))
        now = {r.pos: text_hash(r.text) for r in records if not isinstance(r, Listing) and r.error is None}
        changed = [pos for pos, h in cached.items() if now.get(pos) != h]
        if changed:
            bad.append(f"{os.path.join(root, unit.path)}: {len(changed)} sentence(s) differ from the cached ones")
    return bad
