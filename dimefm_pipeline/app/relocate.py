"""`dimefm sources relocate`: point a cached source at a copy of its data (a node's local SSD, a new
mount), after checking that the copy holds the same files and the same bytes."""

from __future__ import annotations

import os
from dataclasses import dataclass

from dimefm_pipeline.core.errors import DimefmError
from dimefm_pipeline.formats import plan_source, resolve_source
from dimefm_pipeline.store.manifest import Manifest, catalog, sources
from dimefm_pipeline.store.source_check import check_files, check_items


@dataclass
class RelocateResult:
    source_id: int
    old_root: str
    new_root: str
    files_checked: int
    items_checked: int


def relocate_source(cache: str, which: str, new_root: str, *, items: int | None = 1000, command: str = "") -> RelocateResult:
    """Check `new_root` against the source's file table (every file's size) and re-hash `items` of its
    cached items there (None: all of them), then record the new root. Nothing changes on a mismatch."""
    new_root = os.path.abspath(new_root)
    if not os.path.isdir(new_root):
        raise DimefmError(f"{new_root} is not a folder")
    with Manifest(cache) as man:
        sid, modality, uri, old_root = sources.find_source(man, which)
        problems, n_files = check_files(new_root, sources.source_files(man, sid))
        if problems:
            raise DimefmError(f"{new_root} does not hold source {sid}'s files: {problems[0]}"
                              f"{f' (and {len(problems) - 1} more)' if len(problems) > 1 else ''}")
        units = None
        if modality == "text":
            _, _, options, shard_size = sources.source_settings(man, sid)
            units = plan_source(resolve_source(_moved(uri, old_root, new_root), "text", options), sid, shard_size).units
        bad = check_items(man, sid, new_root, sample=items, units=units)
        if bad:
            raise DimefmError(f"{new_root} holds other bytes than source {sid} cached: {bad[0]}")
        n_items = sources.checkable_items(man, sid, modality)
        n_items = n_items if items is None or modality == "text" else min(n_items, items)
        run_id = catalog.start_run(man, "relocate", command, {"source": sid, "old_root": old_root, "new_root": new_root})
        sources.move_source(man, sid, old_root, new_root, _moved(uri, old_root, new_root), n_files, n_items, run_id)
        catalog.end_run(man, run_id, "complete", metrics={"files_checked": n_files, "items_checked": n_items})
    return RelocateResult(sid, old_root, new_root, n_files, n_items)


def _moved(uri: str, old_root: str, new_root: str) -> str:
    """The source's uri under its new root (the part below the old root is kept)."""
    rel = os.path.relpath(uri, old_root) if uri.startswith(old_root.rstrip("/") + "/") or uri == old_root else os.path.basename(uri)
    return os.path.normpath(os.path.join(new_root, rel))
