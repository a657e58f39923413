"""Read-side view of a cache for mining and training: embeddings by global row, item ids, units.

Global rows number a modality's cached embeddings in shard order, as `EmbeddingTable` does; the
arrays here translate between rows, manifest item ids and the source units that hold the pixels.
Nothing here keeps the manifest open: it is read once, read-only, and closed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dimefm_pipeline.cache import EmbeddingTable
from dimefm_pipeline.errors import DimefmError


@dataclass
class UnitShards:
    """The cached rows of one stage-one unit: its Parquet shard files and their first global row."""

    source_id: int
    unit: int
    parquet: list[str]
    first_rows: list[int]
    items: int


@dataclass
class CacheIndex:
    path: Path
    teacher: object  # manifest.TeacherInfo
    images: EmbeddingTable
    texts: EmbeddingTable
    image_item_ids: np.ndarray  # int64 [n_images]: item id of each global image row
    text_item_ids: np.ndarray
    image_units: list[UnitShards] = field(default_factory=list)
    sources: dict = field(default_factory=dict)  # source_id -> (modality, uri, format, options, fingerprint, shard_size)


def load_cache(path: str | Path, *, verify: bool = True, need_images: bool = True, need_texts: bool = True,
               wait: float = 0.0) -> CacheIndex:
    """Open a manifest read-only and memory-map its shards (checksums verified unless `verify=False`).

    `wait`: seconds to retry while another process holds the manifest's write lock.
    """
    import json

    from dimefm_pipeline.manifest import Manifest

    with Manifest(path, read_only=True, wait=wait) as man:
        teacher = man.teacher()
        if teacher is None:
            raise DimefmError(f"{path} holds no embeddings yet: run `dimefm encode` first")
        tables, ids = {}, {}
        for modality in ("image", "text"):
            files = man.shard_files(modality)
            if not files and ((modality == "image" and need_images) or (modality == "text" and need_texts)):
                raise DimefmError(f"{path} holds no {modality} embeddings: run `dimefm encode {modality}s` first")
            tables[modality] = EmbeddingTable([f[0] for f in files], [f[2] for f in files], [f[3] for f in files], verify=verify)
            ids[modality] = man.query(
                "SELECT i.item_id FROM items i JOIN shards s ON i.shard = s.shard_id "
                "WHERE i.modality = ? ORDER BY s.shard_id, i.row", [modality]
            ).fetchnumpy()["item_id"].astype(np.int64)
            if len(ids[modality]) != len(tables[modality]):
                raise DimefmError(f"{path}: {modality} items and shard rows disagree ({len(ids[modality])} vs {len(tables[modality])})")
        units: dict[tuple[int, int], UnitShards] = {}
        offset = 0
        for sid, unit, pq_path, rows in man.query(
            "SELECT source, unit, parquet_path, rows FROM shards WHERE modality = 'image' AND state = 'complete' ORDER BY shard_id"
        ).fetchall():
            u = units.setdefault((sid, unit), UnitShards(sid, unit, [], [], 0))
            u.parquet.append(str(man.cache_dir / pq_path))
            u.first_rows.append(offset)
            u.items += rows
            offset += rows
        sources = {
            r[0]: (r[1], r[2], r[3], json.loads(r[4]), r[5], r[6])
            for r in man.query("SELECT source_id, modality, uri, format, options, fingerprint, shard_size FROM sources").fetchall()
        }
    return CacheIndex(Path(path), teacher, tables["image"], tables["text"], ids["image"], ids["text"], list(units.values()), sources)
