"""Embedding shards on disk: fp16 `.npy` for memory-mapped training reads, Parquet for SQL.

Each shard is a pair of files with the same stem: `NAME.npy` (a plain [rows, dim] float16 array,
read by `np.load(mmap_mode="r")` in stage two: no decode, no copy) and `NAME.parquet` (key, text,
and the same embedding as a fixed-size float16 list, read by DuckDB). Files are written under a
temporary name, fsynced, then renamed, so a file with its final name is always complete.
`docs/cache-format.md` has the measurements behind this layout.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from dimefm_pipeline.core.errors import write_failed
from dimefm_pipeline.store.files import fsync_dir, npy_bytes, sample_digest, write_durable
from dimefm_pipeline.store.tables import LOC_COLUMNS

COMMITS_DIR = "_commits"


@dataclass
class ShardRecord:
    """One written shard, as a commit marker and the manifest's `shards` table describe it."""

    name: str  # relative to the cache dir, without extension: "image/00001-0000003-000"
    part: int
    rows: int
    dim: int
    dtype: str
    checksum: str  # sha256 of the .npy file
    parquet_checksum: str
    bytes: int
    loc_checksum: str = ""  # sha256 of the .loc.npy file (image shards: where each row's bytes lie)
    sample: str = ""  # sample_digest of the .npy file (checked at every distill start)
    loc_sample: str = ""


@dataclass
class UnitCommit:
    """Everything a finished unit contributes to the manifest; written as a JSON marker."""

    source_id: int
    unit: int
    modality: str
    rank: int
    shards: list[ShardRecord] = field(default_factory=list)
    errors: list[tuple] = field(default_factory=list)  # (key, reason, file-table number)
    items: int = 0  # items (images, not rows: an image cached with K views is K rows)
    imported: int = 0  # rows taken from teacher embeddings computed elsewhere
    duplicates: int = 0
    truncated: int = 0
    listed: int = 0  # records its readers gave, each held to a listed entry: items (images: not views) + errors + duplicates
    pack: str | None = None  # "image/00001-0000003.pack": encoded bytes of packed items, if any
    pack_checksum: str = ""
    pack_bytes: int = 0
    pack_sample: str = ""


def parquet_bytes(columns: dict, emb: np.ndarray) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    flat = pa.array(np.ascontiguousarray(emb).reshape(-1), type=pa.float16())
    table = pa.table({**columns, "embedding": pa.FixedSizeListArray.from_arrays(flat, emb.shape[1])})
    sink = pa.BufferOutputStream()
    # fp16 embeddings barely compress; zstd still pays for keys and text. A dictionary only helps
    # the string columns (on the embedding it costs bytes and 2.6x decode time, docs/cache-format.md).
    # Small row groups keep DuckDB's per-row-group work parallel.
    pq.write_table(table, sink, compression="zstd", row_group_size=8192,
                   use_dictionary=[c for c in ("key", "text") if c in columns])
    return sink.getvalue().to_pybytes()


def unit_stem(source_id: int, unit: int) -> str:
    return f"{source_id:05d}-{unit:07d}"


RESUME_HINT = "units already committed are kept: free space and run the same command again to resume"


def _writes(method):
    """A write into the cache that fails (a full disk, a quota, a folder that is not writable) is one
    clear error naming the file."""
    def wrapped(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except OSError as exc:
            self.abandon()
            raise write_failed(exc, "the cache" if exc.filename else f"the cache folder {self.cache_dir}", RESUME_HINT) from None

    wrapped.__doc__, wrapped.__name__ = method.__doc__, method.__name__
    return wrapped


class UnitWriter:
    """Collects one unit's rows, in any order, and writes them when the unit is complete.

    Loader workers finish a unit's read blocks in any order; rows carry their position in the unit
    and are written sorted by it, so a unit's shards are the same whatever the number of workers or
    ranks. Image rows also carry their locator (`tables.Locator`), written beside the embeddings as
    `NAME.loc.npy`; bytes of packed formats are appended to the unit's pack file as they arrive.
    """

    @_writes
    def __init__(self, cache_dir: Path, source_id: int, unit: int, modality: str, dim: int, shard_size: int, rank: int = 0):
        self.cache_dir, self.dim, self.shard_size = Path(cache_dir), dim, shard_size
        self.commit = UnitCommit(source_id, unit, modality, rank)
        self._emb: list[np.ndarray] = []
        self._cols: dict[str, list] = {}
        self._pack = None
        (self.cache_dir / modality).mkdir(parents=True, exist_ok=True)
        remove_partial_files(self.cache_dir, source_id, unit)

    @property
    def rows(self) -> int:
        """Rows added so far."""
        return sum(len(e) for e in self._emb)

    def add(self, emb: np.ndarray, **columns) -> None:
        """Append rows: fp16 embeddings plus per-row columns (`pos` always; `key`, locators, text...)."""
        assert emb.dtype == np.float16 and emb.shape[1] == self.dim
        assert all(len(v) == len(emb) for v in columns.values())
        self._emb.append(emb)
        for k, v in columns.items():
            self._cols.setdefault(k, []).extend(v)

    @_writes
    def add_packed(self, data: bytes) -> int:
        """Append an item's encoded bytes to the unit's pack file; returns their offset."""
        if self._pack is None:
            self.commit.pack = f"{self.commit.modality}/{unit_stem(self.commit.source_id, self.commit.unit)}.pack"
            self._pack = open(self.cache_dir / (self.commit.pack + ".tmp"), "wb")
            self._pack_hash = hashlib.sha256()
        offset = self._pack.tell()
        self._pack.write(data)
        self._pack_hash.update(data)
        return offset

    def abandon(self) -> None:
        """Drop the unit's partial pack file (a failed write; the unit is redone whole by the rerun)."""
        f, self._pack = getattr(self, "_pack", None), None
        if f is not None:
            try:
                f.close()  # flushes what is buffered, which may fail again
            except OSError:
                pass
            Path(f.name).unlink(missing_ok=True)

    def _close_pack(self) -> None:
        if self._pack is None:
            return
        f, self._pack = self._pack, None
        f.flush()
        os.fsync(f.fileno())
        self.commit.pack_bytes = f.tell()
        f.close()
        self.commit.pack_checksum = self._pack_hash.hexdigest()
        final = self.cache_dir / self.commit.pack
        os.replace(final.with_name(final.name + ".tmp"), final)
        fsync_dir(final.parent)
        self.commit.pack_sample = sample_digest(final)

    @_writes
    def finish(self) -> UnitCommit:
        """Write the unit's shards (rows in position order) and its commit marker: the unit is durable."""
        self._close_pack()
        if self._emb:
            emb = np.concatenate(self._emb)
            pos = np.asarray(self._cols["pos"], dtype=np.int64)
            view = np.asarray(self._cols.get("view", np.zeros(len(pos))), dtype=np.int64)
            order = np.lexsort((view, pos))  # by position in the unit, then view
            emb = emb[order]
            cols = {k: [v[i] for i in order] for k, v in self._cols.items()}
            for lo in range(0, len(emb), self.shard_size):
                hi = min(lo + self.shard_size, len(emb))
                self._write_shard(emb[lo:hi], {k: v[lo:hi] for k, v in cols.items()})
        self._emb, self._cols = [], {}
        write_marker(self.cache_dir, self.commit)
        return self.commit

    def _write_shard(self, emb: np.ndarray, cols: dict) -> None:
        c = self.commit
        part, n = len(c.shards), len(emb)
        name = f"{c.modality}/{unit_stem(c.source_id, c.unit)}-{part:03d}"
        table = {"source_id": np.full(n, c.source_id, np.int32), "row": np.arange(n, dtype=np.int32),
                 # rows taken from teacher embeddings computed elsewhere (encode --embeddings-from)
                 "imported": np.asarray(cols.pop("imported", np.zeros(n, bool)), dtype=bool)}
        loc = None
        if c.modality == "image":
            loc = np.stack([np.asarray(cols.pop(k), dtype=np.int64) for k in LOC_COLUMNS], axis=1)
            table.update(key=cols.pop("key"), pos=np.asarray(cols.pop("pos"), np.int64),
                         file=np.asarray(cols.pop("file"), np.int32), packed=loc[:, 0] < 0, offset=loc[:, 1],
                         length=loc[:, 2], payload_hash=loc[:, 3], view=loc[:, 4].astype(np.int16),
                         crop_x0=loc[:, 5].astype(np.int32), crop_y0=loc[:, 6].astype(np.int32),
                         crop_x1=loc[:, 7].astype(np.int32), crop_y1=loc[:, 8].astype(np.int32), flip=loc[:, 9] > 0)
        else:
            table.update(key=cols.pop("key"), pos=np.asarray(cols.pop("pos"), np.int64),
                         file=np.asarray(cols.pop("file"), np.int32), **cols)
        npy, pq_data = npy_bytes(emb), parquet_bytes(table, emb)
        write_durable(self.cache_dir / f"{name}.npy", npy)
        write_durable(self.cache_dir / f"{name}.parquet", pq_data)
        loc_sum, loc_bytes, loc_sample = "", 0, ""
        if loc is not None:
            loc_data = npy_bytes(loc)
            write_durable(self.cache_dir / f"{name}.loc.npy", loc_data)
            loc_sum, loc_bytes, loc_sample = hashlib.sha256(loc_data).hexdigest(), len(loc_data), sample_digest(loc_data)
        c.shards.append(ShardRecord(name, part, n, self.dim, "float16", hashlib.sha256(npy).hexdigest(),
                                    hashlib.sha256(pq_data).hexdigest(), len(npy) + len(pq_data) + loc_bytes, loc_sum,
                                    sample_digest(npy), loc_sample))
        c.items += n if loc is None else int(np.count_nonzero(loc[:, 4] == 0))  # images, not their cached views
        c.imported += int(np.count_nonzero(table["imported"]))


def marker_path(cache_dir: Path, source_id: int, unit: int) -> Path:
    return Path(cache_dir) / COMMITS_DIR / f"{source_id:05d}-{unit:07d}.json"


def write_marker(cache_dir: Path, commit: UnitCommit) -> None:
    path = marker_path(cache_dir, commit.source_id, commit.unit)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_durable(path, json.dumps(asdict(commit)).encode())


def read_markers(cache_dir: Path) -> list[tuple[Path, UnitCommit]]:
    """All complete commit markers in a cache dir (temporary files are ignored)."""
    out = []
    folder = Path(cache_dir) / COMMITS_DIR
    for path in sorted(folder.glob("*.json")) if folder.exists() else []:
        d = json.loads(path.read_text())
        d["shards"] = [ShardRecord(**s) for s in d["shards"]]
        d["errors"] = [tuple(e) for e in d["errors"]]
        out.append((path, UnitCommit(**d)))
    return out


def remove_partial_files(cache_dir: Path, source_id: int, unit: int) -> None:
    """Delete leftovers of an interrupted unit (temporary files and uncommitted shards)."""
    cache_dir = Path(cache_dir)
    for sub in ("image", "text"):
        for p in (cache_dir / sub).glob(f"{unit_stem(source_id, unit)}[-.]*"):
            p.unlink(missing_ok=True)
