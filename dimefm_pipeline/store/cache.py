"""Read-side view of a cache for mining and training: embeddings by global row, item ids, locators.

Global rows number a modality's cached embeddings in shard order, as `EmbeddingTable` does; the
arrays here translate between rows, manifest item ids and where each image's bytes lie (its
locator, `cache.LOC_COLUMNS`). Nothing here keeps the manifest open: it is read once, read-only,
and closed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dimefm_pipeline.store.files import check_file
from dimefm_pipeline.store.tables import EmbeddingTable
from dimefm_pipeline.core.errors import DimefmError


@dataclass(frozen=True)
class ImageShard:
    """One image shard: the rows it holds and, for packed formats, its unit's pack file."""

    source_id: int
    unit: int
    first_row: int  # global row of its first row
    rows: int
    pack: str | None  # absolute path of the unit's pack file (None: the bytes stay in the source)


@dataclass(frozen=True)
class SourceInfo:
    source_id: int
    modality: str
    uri: str
    fmt: str
    root: str  # absolute folder the source's file table is relative to
    options: dict
    shard_size: int


@dataclass
class CacheIndex:
    path: Path
    cache_dir: Path
    teacher: object  # manifest.TeacherInfo
    images: EmbeddingTable
    texts: EmbeddingTable
    image_item_ids: np.ndarray  # int64 [n_images]: item id of each global image row
    text_item_ids: np.ndarray
    image_locs: EmbeddingTable | None = None  # int64 [n_images, 4]: where each image row's bytes lie
    image_shards: list[ImageShard] = field(default_factory=list)
    sources: dict = field(default_factory=dict)  # source_id -> SourceInfo
    views: int = 1  # image rows per image: image j's view v is global row j * views + v


def load_cache(path: str | Path, *, verify: bool | str = "sample", need_images: bool = True, need_texts: bool = True,
               wait: float = 0.0) -> CacheIndex:
    """Open a manifest read-only and memory-map its shards, after checking them: `verify="sample"`
    (sampled blocks of every file, 1 MiB each), `"full"` (every byte's sha256) or `"off"`.

    `wait`: seconds to retry while another process holds the manifest's write lock.
    """
    verify = {True: "full", False: "off"}.get(verify, verify)
    import json

    from dimefm_pipeline.store.manifest import Manifest

    with Manifest(path, read_only=True, wait=wait) as man:
        teacher = man.teacher()
        if teacher is None:
            raise DimefmError(f"{path} holds no embeddings yet: run `dimefm encode` first")
        tables, ids = {}, {}
        for modality in ("image", "text"):
            files = man.shard_files(modality)
            if not files and ((modality == "image" and need_images) or (modality == "text" and need_texts)):
                raise DimefmError(f"{path} holds no {modality} embeddings: run `dimefm encode {modality}s` first")
            tables[modality] = EmbeddingTable([f[0] for f in files], [f[2] for f in files], [f[3] for f in files],
                                              samples=[f[4] for f in files], verify=verify)
            ids[modality] = man.query(
                "SELECT i.item_id FROM items i JOIN shards s ON i.shard = s.shard_id "
                "WHERE i.modality = ? ORDER BY s.shard_id, i.row", [modality]
            ).fetchnumpy()["item_id"].astype(np.int64)
            if len(ids[modality]) != len(tables[modality]):
                raise DimefmError(f"{path}: {modality} items and shard rows disagree ({len(ids[modality])} vs {len(tables[modality])})")
        cache_dir = man.cache_dir
        shards, loc_paths, loc_sums, loc_samples, packs, offset = [], [], [], [], {}, 0
        for sid, unit, rows, loc, loc_sum, loc_sample, pack, pack_sum, pack_sample in man.query(
            "SELECT s.source, s.unit, s.rows, s.loc_path, s.loc_checksum, s.loc_sample, u.pack_path, u.pack_checksum, "
            "u.pack_sample FROM shards s JOIN units u ON u.source = s.source AND u.unit = s.unit "
            "WHERE s.modality = 'image' AND s.state = 'complete' ORDER BY s.shard_id"
        ).fetchall():
            shards.append(ImageShard(sid, unit, offset, rows, str(cache_dir / pack) if pack else None))
            loc_paths.append(cache_dir / loc)
            loc_sums.append(loc_sum)
            loc_samples.append(loc_sample)
            if pack:
                packs[cache_dir / pack] = (pack_sum, pack_sample)
            offset += rows
        locs = None
        if shards:
            locs = EmbeddingTable(loc_paths, [s.rows for s in shards], loc_sums, samples=loc_samples, verify=verify,
                                  dtype=np.int64)
        for pack, (checksum, sample) in packs.items():
            problem = check_file(pack, checksum, sample, verify)
            if problem:
                raise DimefmError(problem)
        views = man.views
        if len(tables["image"]) % views:
            raise DimefmError(f"{path}: {len(tables['image'])} image rows are not {views} views of every image")
        sources = {
            r[0]: SourceInfo(r[0], r[1], r[2], r[3], r[4], json.loads(r[5]), r[6])
            for r in man.query("SELECT source_id, modality, uri, format, root, options, shard_size FROM sources").fetchall()
        }
    return CacheIndex(Path(path), cache_dir, teacher, tables["image"], tables["text"], ids["image"], ids["text"], locs,
                      shards, sources, views)
