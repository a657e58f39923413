"""A cache opened for reading (mining and training): embeddings by global row, item ids, locators,
and where each image's bytes lie, from one read of the manifest (`manifest.snapshot`).

Global rows number a modality's cached embeddings in shard order, as `EmbeddingTable` does; the
arrays here translate between rows, manifest item ids and where each image's bytes lie (its
locator, `tables.Locator`). The files are checked before they are mapped (`verify`), and on request
the image sources too (their files present, with the sizes stage one saw).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dimefm_pipeline.core.errors import DimefmError
from dimefm_pipeline.store.files import check_file
from dimefm_pipeline.store.manifest.snapshot import Snapshot, read_snapshot
from dimefm_pipeline.store.source_check import check_files
from dimefm_pipeline.store.tables import EmbeddingTable

SOURCE_SAMPLE = 1000  # files per image source whose presence and size are checked at start-up


@dataclass(frozen=True)
class ImageShard:
    """One image shard: the rows it holds and, for packed formats, its unit's pack file."""

    source_id: int
    unit: int
    first_row: int  # global row of its first row
    rows: int
    pack: str | None  # absolute path of the unit's pack file (None: the bytes stay in the source)


@dataclass
class CacheIndex:
    path: Path
    cache_dir: Path
    teacher: object  # manifest.TeacherInfo
    images: EmbeddingTable
    texts: EmbeddingTable
    image_item_ids: np.ndarray  # int64 [n_images]: item id of each global image row
    text_item_ids: np.ndarray
    image_locs: EmbeddingTable | None = None  # int64 [n_images, len(LOC_COLUMNS)]: each image row's Locator
    image_shards: list[ImageShard] = field(default_factory=list)
    sources: dict = field(default_factory=dict)  # source_id -> manifest.snapshot.SourceRow
    views: int = 1  # image rows per image: image j's view v is global row j * views + v
    text_shards: list = field(default_factory=list)  # (npy, parquet, rows, ...) of the text shards, in order
    text_checksums: list = field(default_factory=list)  # sha256 of each text shard's Parquet file
    file_paths: dict = field(default_factory=dict)  # image source read in place -> Arrow array of its file paths
    pairs: np.ndarray | None = None  # int32 [n_images, k]: mined neighbours as text rows (-1: none)
    mining_id: int | None = None
    teachers: list = field(default_factory=list)  # CacheTeacher of each teacher asked for, in the order asked


@dataclass(frozen=True)
class CacheTeacher:
    """One teacher of the cache with its rows: global row r of `images` / `texts` is the same item
    (and view) as row r of the cache's own tables."""

    name: str
    info: object  # manifest.TeacherInfo
    images: EmbeddingTable
    texts: EmbeddingTable


def load_cache(path: str | Path, *, verify: bool | str = "sample", need_images: bool = True, need_texts: bool = True,
               wait: float = 0.0, sources: bool = False, pairs: bool = False, mining_id: int | None = None,
               teachers: tuple[str, ...] = ()) -> CacheIndex:
    """Read the manifest once, read-only, and memory-map its shards after checking them:
    `verify="sample"` (sampled blocks of every file, 1 MiB each), `"full"` (every byte's sha256) or
    `"off"`. `sources`: also the file paths of the image sources read in place, after checking that
    their files are there with the sizes stage one saw (a seeded sample of each source). `pairs`: also
    mining `mining_id` (default: the latest complete one). `teachers`: also the rows of these teachers
    of the cache, by name (`idx.teachers`). `wait`: seconds to wait for a writer.
    """
    verify = {True: "full", False: "off"}.get(verify, verify)
    snap = read_snapshot(path, wait=wait, file_tables=sources, pairs=pairs, mining_id=mining_id, teachers=teachers)
    if snap.teacher is None:
        raise DimefmError(f"{path} holds no embeddings yet: run `dimefm encode` first")
    tables = {}
    for modality, needed in (("image", need_images), ("text", need_texts)):
        files = snap.shards[modality]
        if not files and needed:
            raise DimefmError(f"{path} holds no {modality} embeddings: run `dimefm encode {modality}s` first")
        tables[modality] = EmbeddingTable([f[0] for f in files], [f[2] for f in files], [f[3] for f in files],
                                          samples=[f[4] for f in files], verify=verify)
        if len(snap.item_ids[modality]) != len(tables[modality]):
            raise DimefmError(f"{path}: {modality} items and shard rows disagree "
                              f"({len(snap.item_ids[modality])} vs {len(tables[modality])})")
    shards, locs = _image_shards(snap, verify)
    if len(tables["image"]) % snap.views:
        raise DimefmError(f"{path}: {len(tables['image'])} image rows are not {snap.views} views of every image")
    idx = CacheIndex(Path(path), snap.cache_dir, snap.teacher, tables["image"], tables["text"], snap.item_ids["image"],
                     snap.item_ids["text"], locs, shards, snap.sources, snap.views, snap.shards["text"],
                     snap.text_parquet_checksums)
    if sources:
        idx.file_paths = _checked_file_paths(path, snap, shards)
    if snap.pairs is not None:
        idx.pairs, idx.mining_id = _pairs_by_row(idx, snap.pairs), snap.pairs.mining_id
    for t, files in snap.teachers:
        own = t.teacher_id == 1
        idx.teachers.append(CacheTeacher(t.name, t.info, *[tables[m] if own else EmbeddingTable(
            [f[0] for f in files[m]], [f[2] for f in files[m]], [f[3] for f in files[m]], samples=[f[4] for f in files[m]],
            verify=verify) for m in ("image", "text")]))
    return idx


def _image_shards(snap: Snapshot, verify: str) -> tuple[list[ImageShard], EmbeddingTable | None]:
    """The image shards with their global first rows, and their locators as one table (files checked)."""
    cache_dir, shards, offset, packs = snap.cache_dir, [], 0, {}
    for s in snap.image_shards:
        shards.append(ImageShard(s.source_id, s.unit, offset, s.rows, str(cache_dir / s.pack_path) if s.pack_path else None))
        if s.pack_path:
            packs[cache_dir / s.pack_path] = (s.pack_checksum, s.pack_sample)
        offset += s.rows
    locs = None
    if shards:
        rows = snap.image_shards
        locs = EmbeddingTable([cache_dir / s.loc_path for s in rows], [s.rows for s in rows],
                              [s.loc_checksum for s in rows], samples=[s.loc_sample for s in rows], verify=verify,
                              dtype=np.int64)
    for pack, (checksum, sample) in packs.items():
        problem = check_file(pack, checksum, sample, verify)
        if problem:
            raise DimefmError(problem)
    return shards, locs


def _checked_file_paths(path, snap: Snapshot, shards: list[ImageShard]) -> dict:
    """Paths of every image source's files (sources whose bytes stage two reads in place), as Arrow
    string arrays: 30 MB per million paths, against 85 MB as a Python list; forked workers share them.
    Before that, the files are checked to exist with the sizes stage one saw (a seeded sample of
    SOURCE_SAMPLE per source), and every pack file to be there."""
    out = {}
    for sid, table in snap.file_tables.items():
        src = snap.sources[sid]
        problems, _ = check_files(src.root, table, sample=SOURCE_SAMPLE)
        if problems:
            raise DimefmError(f"image source {src.uri} no longer matches the cache: {problems[0]}"
                              f"{f' (and {len(problems) - 1} more)' if len(problems) > 1 else ''}; if the data "
                              f"moved: dimefm sources relocate --cache {path} {sid} NEW_FOLDER")
        out[sid] = table.column("path").combine_chunks()
    for pack in {s.pack for s in shards if s.pack}:
        if not os.path.isfile(pack):
            raise DimefmError(f"pack file missing from the cache: {pack}")
    return out


def _pairs_by_row(idx: CacheIndex, mined) -> np.ndarray:
    """Mined neighbours as global text rows: int32 [n_images, k] (-1 where missing). Row j is image j
    (its views are global image rows j * views ...)."""
    img_row = _rows_of(idx.image_item_ids, mined.image_item)
    txt_row = _rows_of(idx.text_item_ids, mined.text_item)
    out = np.full((len(idx.image_item_ids) // idx.views, mined.k), -1, dtype=np.int32)  # int32: 40M images x k=8 is 1.3 GB
    ok = (img_row >= 0) & (txt_row >= 0)
    out[img_row[ok] // idx.views, mined.rank[ok]] = txt_row[ok]
    return out


def _rows_of(item_ids: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """Global row of each wanted item id (-1 if the item is not in the cache)."""
    order = np.argsort(item_ids)
    pos = np.searchsorted(item_ids[order], wanted)
    pos = np.clip(pos, 0, len(order) - 1)
    found = item_ids[order][pos] == wanted
    return np.where(found, order[pos], -1)
