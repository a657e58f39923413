"""Cache files on disk: written durably (temporary name, fsync, rename), and checked against their
recorded checksums (the full sha256, or a sampled digest every distill start can afford)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_durable(path: Path, data: bytes) -> None:
    """Write bytes to `path` atomically: temporary name, fsync, rename, fsync the folder."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:  # a full disk: no half-written file is left behind
        tmp.unlink(missing_ok=True)
        if exc.filename is None:
            exc.filename = str(tmp)
        raise
    fsync_dir(path.parent)


def npy_bytes(arr: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.ascontiguousarray(arr), allow_pickle=False)
    return buf.getvalue()


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


