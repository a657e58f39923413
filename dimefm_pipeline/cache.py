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

from dimefm_pipeline.errors import DimefmError

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


@dataclass
class UnitCommit:
    """Everything a finished unit contributes to the manifest; written as a JSON marker."""

    source_id: int
    unit: int
    modality: str
    rank: int
    shards: list[ShardRecord] = field(default_factory=list)
    errors: list[tuple[str, str]] = field(default_factory=list)  # (key, reason)
    items: int = 0
    duplicates: int = 0
    truncated: int = 0


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


class UnitWriter:
    """Collects one unit's embeddings and writes them as shards of at most `shard_size` rows."""

    def __init__(self, cache_dir: Path, source_id: int, unit: int, modality: str, dim: int, shard_size: int, rank: int = 0):
        self.cache_dir, self.dim, self.shard_size = Path(cache_dir), dim, shard_size
        self.commit = UnitCommit(source_id, unit, modality, rank)
        self._rows: list[np.ndarray] = []
        self._cols: dict[str, list] = {}
        self._n = 0
        (self.cache_dir / modality).mkdir(parents=True, exist_ok=True)

    def add(self, emb: np.ndarray, **columns) -> None:
        """Append rows (fp16 embeddings plus per-row metadata columns such as key and text)."""
        assert emb.dtype == np.float16 and emb.shape[1] == self.dim
        start = 0
        while start < len(emb):
            take = min(len(emb) - start, self.shard_size - self._n)
            self._rows.append(emb[start : start + take])
            for k, v in columns.items():
                self._cols.setdefault(k, []).extend(v[start : start + take])
            self._n += take
            start += take
            if self._n == self.shard_size:
                self._flush()

    def _flush(self) -> None:
        if self._n == 0:
            return
        c = self.commit
        part = len(c.shards)
        name = f"{c.modality}/{c.source_id:05d}-{c.unit:07d}-{part:03d}"
        emb = np.concatenate(self._rows)
        cols = {"source_id": np.full(self._n, c.source_id, np.int32), "row": np.arange(self._n, dtype=np.int32), **self._cols}
        npy, pq_data = npy_bytes(emb), parquet_bytes(cols, emb)
        write_durable(self.cache_dir / f"{name}.npy", npy)
        write_durable(self.cache_dir / f"{name}.parquet", pq_data)
        c.shards.append(
            ShardRecord(name, part, self._n, self.dim, "float16", hashlib.sha256(npy).hexdigest(),
                        hashlib.sha256(pq_data).hexdigest(), len(npy) + len(pq_data))
        )
        c.items += self._n
        self._rows, self._cols, self._n = [], {}, 0

    def finish(self) -> UnitCommit:
        """Write the last shard and the unit's commit marker; after this the unit is durable."""
        self._flush()
        write_marker(self.cache_dir, self.commit)
        return self.commit


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
        for p in (cache_dir / sub).glob(f"{source_id:05d}-{unit:07d}-*"):
            p.unlink(missing_ok=True)


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

    def __init__(self, paths: list[Path], rows: list[int], checksums: list[str] | None = None, *, verify: bool = True,
                 dtype=np.float16):
        self.dtype = np.dtype(dtype)
        self.paths = [Path(p) for p in paths]
        self.offsets = np.concatenate([[0], np.cumsum(rows, dtype=np.int64)])
        self.arrays = []
        for i, p in enumerate(self.paths):
            if not p.exists():
                raise DimefmError(f"cache shard missing: {p}")
            if verify and checksums is not None and sha256_file(p) != checksums[i]:
                raise DimefmError(f"cache shard {p} no longer matches its checksum: the cache is damaged")
            arr = np.load(p, mmap_mode="r")
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
        """Rows `idx` (global row numbers) as a [len(idx), dim] array, in the order given."""
        idx = np.asarray(idx, dtype=np.int64)
        out = np.empty((len(idx), self.dim), dtype=self.dtype)
        shard = np.searchsorted(self.offsets, idx, side="right") - 1
        order = np.argsort(shard, kind="stable")
        bounds = np.searchsorted(shard[order], np.arange(len(self.arrays) + 1))
        for s in range(len(self.arrays)):
            sel = order[bounds[s] : bounds[s + 1]]
            if len(sel):
                local = idx[sel] - self.offsets[s]
                out[sel] = self.arrays[s][local]
        return out
