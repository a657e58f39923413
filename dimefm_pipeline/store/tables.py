"""The read side of the cache: memory-mapped `.npy` shards as one table of rows, and the locator
record of an image row (where its bytes lie, which view of the image it is)."""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from dimefm_pipeline.core.errors import DimefmError
from dimefm_pipeline.formats.base import PACKED
from dimefm_pipeline.store.files import check_file


@dataclass(frozen=True)
class Locator:
    """One row of an image shard's `NAME.loc.npy` (int64 columns, in this order): where stage two
    reads the bytes stage one encoded, and the view of the image the row's embedding is of."""

    loc_file: int  # file-table number of the source file, or PACKED: the unit's pack file in the cache
    offset: int  # byte offset of the bytes in that file
    length: int  # number of bytes
    payload_hash: int  # 64-bit BLAKE2b of the bytes (`formats.files.payload_hash`)
    view: int  # 0: the image as the teacher's preprocessing sees it; 1..K-1: a cached crop and flip
    crop_x0: int  # the view's crop box in source pixels
    crop_y0: int
    crop_x1: int
    crop_y1: int
    flip: int  # 1: flipped left-right after the crop

    @property
    def packed(self) -> bool:
        return self.loc_file == PACKED

    @property
    def box(self) -> tuple[int, int, int, int]:
        return self.crop_x0, self.crop_y0, self.crop_x1, self.crop_y1

    @classmethod
    def rows(cls, array: np.ndarray) -> list["Locator"]:
        """The records of a [n, len(LOC_COLUMNS)] int64 block of a locator table."""
        return [cls(*(int(v) for v in row)) for row in array]


LOC_COLUMNS = tuple(f.name for f in fields(Locator))


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
