"""Everything stage two (and mining) reads from the manifest, in one read-only open at start-up: the
teacher, the shards and item ids of both modalities, where image bytes lie (units, pack files, file
tables), the sources, and on request the mined pseudo pairs. Nothing keeps the manifest open after,
so the cache stays writable (another encode, `dimefm sql`) while a student trains."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dimefm_pipeline.core.errors import DimefmError
from dimefm_pipeline.store.manifest.catalog import TeacherInfo, shard_files, teacher, views_per_image
from dimefm_pipeline.store.manifest.connection import Manifest
from dimefm_pipeline.store.manifest import teachers as named
from dimefm_pipeline.store.manifest.sources import source_files


@dataclass(frozen=True)
class ImageShardRow:
    """An image shard with its unit's pack file (paths relative to the cache folder)."""

    source_id: int
    unit: int
    rows: int
    loc_path: str
    loc_checksum: str
    loc_sample: str
    pack_path: str | None  # the unit's pack file: its items' bytes were copied into the cache
    pack_checksum: str | None
    pack_sample: str | None


@dataclass(frozen=True)
class SourceRow:
    source_id: int
    modality: str
    uri: str
    fmt: str
    root: str  # absolute folder the source's file table is relative to
    options: dict
    shard_size: int


@dataclass(frozen=True)
class MinedPairs:
    """A complete mining's pairs as item ids: `image_item[i]`'s neighbour of rank `rank[i]` is `text_item[i]`."""

    mining_id: int
    k: int
    image_item: np.ndarray
    rank: np.ndarray
    text_item: np.ndarray


@dataclass
class Snapshot:
    cache_dir: Path
    teacher: TeacherInfo | None
    views: int  # embedding rows per image
    shards: dict  # modality -> (npy path, parquet path, rows, checksum, sampled checksum) of complete shards
    item_ids: dict  # modality -> int64 item id of each global row
    text_parquet_checksums: list[str]  # of the text shards, in shard order (token files are named after them)
    image_shards: list[ImageShardRow]
    sources: dict  # source_id -> SourceRow
    file_tables: dict = field(default_factory=dict)  # image source read in place -> its file table (Arrow)
    pairs: MinedPairs | None = None
    teachers: list = field(default_factory=list)  # (teachers.NamedTeacher, {modality: shard files}) asked for


def read_snapshot(path, *, wait: float = 0.0, file_tables: bool = False, pairs: bool = False,
                  mining_id: int | None = None, teachers: tuple[str, ...] = ()) -> Snapshot:
    """Read the snapshot of the manifest at `path`; `file_tables`: also the file tables of the image
    sources whose bytes stage two reads in place; `pairs`: also mining `mining_id` (default: the
        latest complete one); `teachers`: also the shard files of these teachers of the cache (by name),
    each aligned row for row with the cache's shards. `wait`: seconds to wait for another process's
    write."""
    with Manifest(path, read_only=True, wait=wait) as man:
        snap = Snapshot(man.cache_dir, teacher(man), views_per_image(man),
                        {m: shard_files(man, m) for m in ("image", "text")},
                        {m: _item_ids(man, m) for m in ("image", "text")}, _text_checksums(man), _image_shards(man),
                        _sources(man))
        if file_tables:
            packed_only = ({s.source_id for s in snap.image_shards if s.pack_path}
                           - {s.source_id for s in snap.image_shards if not s.pack_path})
            snap.file_tables = {sid: source_files(man, sid) for sid, src in snap.sources.items()
                                if src.modality == "image" and sid not in packed_only}
        if pairs:
            snap.pairs = _mined_pairs(man, path, mining_id)
        snap.teachers = [_teacher_files(man, path, name, snap.shards) for name in teachers]
    return snap


def _teacher_files(man: Manifest, path, name: str, own: dict) -> tuple:
    """A teacher of the cache and its shard files of both modalities, refused unless it has every shard's rows."""
    t = named.teacher_named(man, name)
    if t.teacher_id == 1:
        return t, own
    files = {}
    for modality in ("image", "text"):
        files[modality], missing = named.companion_files(man, t.teacher_id, modality)
        if missing:
            raise DimefmError(f"teacher {name!r} has no rows for {missing} {modality} shard(s) of {path} (encoded after "
                              f"it was added): run dimefm encode teacher --cache {path} --name {name} again, with its "
                              f"--teacher and --pretrained (dimefm info lists them)")
    return t, files


def _item_ids(man: Manifest, modality: str) -> np.ndarray:
    return man.query("SELECT i.item_id FROM items i JOIN shards s ON i.shard = s.shard_id "
                     "WHERE i.modality = ? ORDER BY s.shard_id, i.row", [modality]).fetchnumpy()["item_id"].astype(np.int64)


def _text_checksums(man: Manifest) -> list[str]:
    return [r[0] for r in man.query("SELECT parquet_checksum FROM shards WHERE modality = 'text' AND state = 'complete' "
                                    "ORDER BY shard_id").fetchall()]


def _image_shards(man: Manifest) -> list[ImageShardRow]:
    return [ImageShardRow(*r) for r in man.query(
        "SELECT s.source, s.unit, s.rows, s.loc_path, s.loc_checksum, s.loc_sample, u.pack_path, u.pack_checksum, "
        "u.pack_sample FROM shards s JOIN units u ON u.source = s.source AND u.unit = s.unit "
        "WHERE s.modality = 'image' AND s.state = 'complete' ORDER BY s.shard_id").fetchall()]


def _sources(man: Manifest) -> dict:
    return {r[0]: SourceRow(r[0], r[1], r[2], r[3], r[4], json.loads(r[5]), r[6]) for r in
            man.query("SELECT source_id, modality, uri, format, root, options, shard_size FROM sources").fetchall()}


def _mined_pairs(man: Manifest, path, mining_id: int | None) -> MinedPairs:
    if mining_id is None:
        mining_id = man.query("SELECT max(mining_id) FROM minings WHERE state = 'complete'").fetchall()[0][0]
    if mining_id is None:
        raise DimefmError(f"{path} has no mined pseudo pairs: run `dimefm mine --cache {path}` first")
    k = man.query("SELECT k FROM minings WHERE mining_id = ? AND state = 'complete'", [mining_id]).fetchall()
    if not k:
        raise DimefmError(f"{path} has no complete mining {mining_id}")
    rows = man.query("SELECT image_item, rank, text_item FROM pseudo_pairs WHERE mining_id = ?", [mining_id]).fetchnumpy()
    return MinedPairs(mining_id, k[0][0], rows["image_item"], rows["rank"], rows["text_item"])
