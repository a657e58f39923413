"""Stage one's plan: every source of a command listed, registered in the manifest and cut into the
units still to encode."""

from __future__ import annotations

import sys
from dataclasses import replace
from typing import NamedTuple

from dimefm_pipeline.core.errors import DimefmError
from dimefm_pipeline.encode.config import EncodeConfig
from dimefm_pipeline.formats import plan_source
from dimefm_pipeline.formats.planner import SeenHashes, distinct_sources
from dimefm_pipeline.store.manifest import Manifest, sources
from dimefm_pipeline.store.source_check import accept_touched


class Planned(NamedTuple):
    pending: list  # units to encode
    skipped: int  # units done before
    listed_errors: int  # problems found while listing (recorded)
    other_files: dict  # extension -> files of image folders that are not images
    sources: list  # (source id, uri) of the command's sources


def plan_sources(cfg: EncodeConfig, man: Manifest, specs, run_id: int) -> tuple[Planned, dict]:
    """Plan and register every source of the command; also the files of each source, by source id,
    when rows are imported."""
    seen = SeenHashes(sources.text_hashes(man)) if cfg.modality == "text" else None
    pending, skipped, listed_errors, other_files, registered, files_of = [], 0, 0, {}, [], {}
    plans = []
    specs, notes = distinct_sources(specs)
    for i, s in enumerate(specs):
        same = sources.same_source(man, s) if sources.source_row(man, s.modality, s.uri) is None else None
        if same is not None:  # the data of a cached source under another spelling: that source, resumed
            notes.append(f"{s.uri} is source {same[0]} ({same[1]}) reached by another path: continued as that source")
            specs[i] = s = replace(s, uri=same[1])
    for note in notes:
        print(f"warning: {note}", file=sys.stderr, flush=True)
    for s in specs:
        known = sources.source_row(man, s.modality, s.uri)
        shard_size = known[1] if known else cfg.shard_size
        plans.append((s, plan_source(s, known[0] if known else 0, shard_size, seen), shard_size, known))
    plans = _without_empty(plans)
    sources.check_overlap(man, [(s, plan) for s, plan, _, known in plans if known is None])
    for s, plan, shard_size, _ in plans:
        sid, new, touched = sources.register_source(man, s, plan, shard_size, run_id)
        registered.append((sid, s.uri))
        files_of[sid] = [e.path for e in plan.files] if cfg.embeddings_from else []
        accept_touched(man, sid, s, plan, touched)
        if new:
            listed_errors += len(plan.problems)
            for ext, n in plan.other_files.items():
                other_files[ext] = other_files.get(ext, 0) + n
        done = sources.completed_units(man, sid)
        for u in plan.units:
            if u.index in done:
                skipped += 1
            else:
                pending.append(replace(u, source_id=sid))
    return Planned(pending, skipped, listed_errors, other_files, registered), files_of


def _without_empty(plans: list) -> list:
    """The plans of sources that hold something: an empty source is named in a warning (and not
    registered, so files added to it later make a new source); a command whose every source is
    empty is an error."""
    empty = [p.empty for _, p, _, known in plans if p.empty and not p.problems and known is None]
    if empty and len(empty) == len(plans):
        raise DimefmError(f"nothing to encode: {'; '.join(empty)}")
    for why in empty:
        print(f"warning: {why}: nothing to encode from it", file=sys.stderr, flush=True)
    return [p for p in plans if not (p[1].empty and not p[1].problems and p[3] is None)]
