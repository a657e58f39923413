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

from dimefm_pipeline.core.errors import DimefmError

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
    items: int = 0
    duplicates: int = 0
    truncated: int = 0
    pack: str | None = None  # "image/00001-0000003.pack": encoded bytes of packed items, if any
    pack_checksum: str = ""
    pack_bytes: int = 0
    pack_sample: str = ""


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_durable(path: Path, data: bytes) -> None:
    """Write bytes to `path` atomically: temporary name, fsync, rename, fsync the folder."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def npy_bytes(arr: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.ascontiguousarray(arr), allow_pickle=False)
    return buf.getvalue()


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


# One int64 row per image row: where stage two reads its bytes (file-table number, or -1 for the unit's
# pack file), how many, their hash, and which view of the image the row is (views.VIEW_COLUMNS: the
# view number, its crop box in source pixels and its flip).
LOC_COLUMNS = ("loc_file", "offset", "length", "payload_hash", "view", "crop_x0", "crop_y0", "crop_x1", "crop_y1", "flip")


def unit_stem(source_id: int, unit: int) -> str:
    return f"{source_id:05d}-{unit:07d}"


class UnitWriter:
    """Collects one unit's rows, in any order, and writes them when the unit is complete.

    Loader workers finish a unit's read blocks in any order; rows carry their position in the unit
    and are written sorted by it, so a unit's shards are the same whatever the number of workers or
    ranks. Image rows also carry their locator (`LOC_COLUMNS`), written beside the embeddings as
    `NAME.loc.npy`; bytes of packed formats are appended to the unit's pack file as they arrive.
    """

    def __init__(self, cache_dir: Path, source_id: int, unit: int, modality: str, dim: int, shard_size: int, rank: int = 0):
        self.cache_dir, self.dim, self.shard_size = Path(cache_dir), dim, shard_size
        self.commit = UnitCommit(source_id, unit, modality, rank)
        self._emb: list[np.ndarray] = []
        self._cols: dict[str, list] = {}
        self._pack = None
        (self.cache_dir / modality).mkdir(parents=True, exist_ok=True)
        remove_partial_files(self.cache_dir, source_id, unit)

    def add(self, emb: np.ndarray, **columns) -> None:
        """Append rows: fp16 embeddings plus per-row columns (`pos` always; `key`, locators, text...)."""
        assert emb.dtype == np.float16 and emb.shape[1] == self.dim
        assert all(len(v) == len(emb) for v in columns.values())
        self._emb.append(emb)
        for k, v in columns.items():
            self._cols.setdefault(k, []).extend(v)

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
        table = {"source_id": np.full(n, c.source_id, np.int32), "row": np.arange(n, dtype=np.int32)}
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
        c.items += n


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


SAMPLE_BLOCKS, SAMPLE_BLOCK = 16, 64 << 10  # 1 MiB read per file, whatever its size


def sample_digest(source) -> str:
    """sha256 of a file's size and 16 blocks of 64 KiB spread evenly over it (first and last
    included): the check every distill start can afford. `source`: a path, or the file's bytes."""
    if isinstance(source, (bytes, bytearray)):
        size = len(source)

        def read(off, n):
            return source[off : off + n]
    else:
        size = os.path.getsize(source)
        f = open(source, "rb")

        def read(off, n):
            f.seek(off)
            return f.read(n)
    try:
        h = hashlib.sha256(str(size).encode())
        last = max(size - SAMPLE_BLOCK, 0)
        for i in range(SAMPLE_BLOCKS):
            h.update(read(last * i // (SAMPLE_BLOCKS - 1), SAMPLE_BLOCK))
        return h.hexdigest()
    finally:
        if not isinstance(source, (bytes, bytearray)):
            f.close()


VERIFY_MODES = ("sample", "full", "off")


def check_file(path: Path, checksum: str | None, sample: str | None, verify: str) -> str | None:
    """What is wrong with a cache file (None when nothing is): missing, or not matching its sampled
    digest (`verify="sample"`) or its full sha256 (`verify="full"`)."""
    if not Path(path).is_file():
        return f"cache file missing: {path}"
    if verify == "full" and checksum and sha256_file(path) != checksum:
        return f"cache file {path} no longer matches its checksum: the cache is damaged"
    if verify == "sample" and sample and sample_digest(path) != sample:
        return f"cache file {path} no longer matches its sampled checksum: the cache is damaged"
    return None


def sha256_file(path: Path, chunk: int = 8 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


class EmbeddingTable:
    """Random row access over many `.npy` shards by memory mapping.

    Rows are numbered globally in shard order. Reading a batch groups the requested rows by shard
    and fancy-indexes each memmap: the OS page cache, not this process, holds the data, so memory
    does not grow with the size of the cache.
    """

    def __init__(self, paths: list[Path], rows: list[int], checksums: list[str] | None = None, *, verify: str = "off",
                 samples: list[str] | None = None, dtype=np.float16):
        self.dtype = np.dtype(dtype)
        self.paths = [Path(p) for p in paths]
        self.offsets = np.concatenate([[0], np.cumsum(rows, dtype=np.int64)])
        self.arrays = []
        for i, p in enumerate(self.paths):
            problem = check_file(p, checksums[i] if checksums else None, samples[i] if samples else None, verify)
            if problem:
                raise DimefmError(problem)
            try:
                arr = np.load(p, mmap_mode="r")
            except (ValueError, OSError) as exc:
                raise DimefmError(f"cache shard {p} cannot be read ({exc}): the cache is damaged") from None
            if arr.shape[0] != rows[i] or arr.dtype != self.dtype:
                raise DimefmError(f"cache shard {p} has shape {arr.shape} {arr.dtype}, expected {rows[i]} {self.dtype} rows")
            self.arrays.append(arr)
        self.dim = self.arrays[0].shape[1] if self.arrays else 0

    def __len__(self) -> int:
        return int(self.offsets[-1])

    # Enough of the ndarray interface (shape, dtype, slicing, fancy indexing) for code written
    # against arrays, such as index building, to stream over the shards instead of a loaded copy.
    ndim = 2

    @property
    def shape(self) -> tuple[int, int]:
        return (len(self), self.dim)

    def __getitem__(self, key) -> np.ndarray:
        if isinstance(key, slice):
            return self.take(np.arange(*key.indices(len(self))))
        return self.take(np.asarray(key))

    def take(self, idx: np.ndarray) -> np.ndarray:
        """Rows `idx` (global row numbers) as a [len(idx), dim] array, in the order given.

        The rows are read in sorted order, one gather per shard they fall in, so each memory map is
        walked forwards. Ascending `idx` (what stage two asks for: a batch is a set) is gathered
        straight into the result; any other order is gathered sorted, then placed where the caller
        asked for it, which costs about as much again (docs/benchmarks.md, "Cache reads")."""
        idx = np.asarray(idx, dtype=np.int64)
        out = np.empty((len(idx), self.dim), dtype=self.dtype)
        if not len(idx):
            return out
        ascending = bool(np.all(idx[1:] >= idx[:-1]))
        order = None if ascending else np.argsort(idx, kind="stable")
        sidx = idx if ascending else idx[order]
        if sidx[0] < 0 or sidx[-1] >= len(self):
            bad = sidx[0] if sidx[0] < 0 else sidx[-1]
            raise IndexError(f"row {bad} is outside the table of {len(self)} rows")
        cut = np.searchsorted(sidx, self.offsets)  # sidx[cut[s]:cut[s + 1]] fall in shard s
        for s in np.flatnonzero(np.diff(cut)):
            a, b = cut[s], cut[s + 1]
            if ascending:
                np.take(self.arrays[s], sidx[a:b] - self.offsets[s], axis=0, out=out[a:b], mode="clip")  # bounds checked above
            else:
                out[order[a:b]] = self.arrays[s][sidx[a:b] - self.offsets[s]]
        return out
