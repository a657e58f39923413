"""The bytes of cached image rows, read back where stage one found them (a row's locator: a file of
the source, a byte offset and a length, or the cache's pack file) and checked against the hash stage
one stored. Stage two reads its batches through it, and so does every added teacher."""

from __future__ import annotations

import os
from collections import OrderedDict

import numpy as np

from dimefm_pipeline.formats import format_named
from dimefm_pipeline.formats.files import BadItem, payload_hash
from dimefm_pipeline.store.tables import Locator

MAX_OPEN_FILES = 64  # file descriptors each reader keeps open (tars, TSVs, pack files)


class ImageReader:
    """The bytes of a cached image row, read where stage one found them and checked against its hash.

    Uses `os.pread`, which never moves a shared file position, so descriptors opened before the
    DataLoader forks stay correct in every worker; each process keeps its own bounded set open.
    """

    def __init__(self, idx):
        """`idx`: the cache, loaded with `sources=True` (the file paths of the sources read in place)."""
        self.locs = idx.image_locs
        self.first_rows = np.array([s.first_row for s in idx.image_shards], dtype=np.int64)
        self.shards = idx.image_shards
        self.sources = idx.sources
        self.files = idx.file_paths  # source id -> Arrow array of paths relative to its root (unpacked sources)
        self._open: OrderedDict = OrderedDict()
        self._pid = os.getpid()

    def read(self, row: int, loc: Locator | None = None):
        """What `decode_image` takes for `row` (its format's payload of the bytes); BadItem if they are
        gone or changed. `loc`: the row's locator when the caller has it already."""
        loc = Locator.rows(self.locs.take(np.array([row])))[0] if loc is None else loc
        shard = self.shards[int(np.searchsorted(self.first_rows, row, side="right")) - 1]
        fmt = format_named(self.sources[shard.source_id].fmt)
        if loc.packed:
            data = self._pread(shard.pack, loc.offset, loc.length)
        else:
            path = os.path.join(self.sources[shard.source_id].root, self.files[shard.source_id][loc.loc_file].as_py())
            data = fmt.read_at(path, loc.offset, loc.length, pread=self._pread)
        if payload_hash(data) != loc.payload_hash:
            raise BadItem("bytes differ from what stage one encoded: the source changed since")
        return fmt.payload(data)

    def _pread(self, path: str, offset: int, length: int) -> bytes:
        if os.getpid() != self._pid:  # a forked worker: open its own descriptors
            self._open, self._pid = OrderedDict(), os.getpid()
        fd = self._open.get(path)
        if fd is None:
            try:
                fd = os.open(path, os.O_RDONLY)
            except OSError as exc:
                raise BadItem(f"unreadable file {path}: {exc.strerror}") from None
            self._open[path] = fd
            if len(self._open) > MAX_OPEN_FILES:
                os.close(self._open.popitem(last=False)[1])
        else:
            self._open.move_to_end(path)
        data = os.pread(fd, length, offset)
        if len(data) != length:
            raise BadItem(f"short read: {len(data)} of {length} bytes (the file changed)")
        return data
