"""A compressed file (gzip, bzip2, xz) read as the bytes it holds, forwards, with bounded memory and a
bound on how far it may expand.

`tarfile`'s own stream mode skips a member by decompressing it 16 KiB at a time in Python (a
gigabyte of zeros took 49 s); this reader decompresses a MiB at a time and skips at C speed, so a
compressed tar can be listed and read like an uncompressed one (`seek` forwards, `read`). An archive
that expands beyond `MAX_EXPANSION` times its size, or beyond `MIN_EXPANSION_BYTES` for a small
file, is a decompression bomb: reading it stops with `Expanded`.
"""

from __future__ import annotations

import bz2
import lzma
import zlib

MAX_EXPANSION = 100  # decompressed bytes per compressed byte before an archive is refused
MIN_EXPANSION_BYTES = 1 << 30  # ... but a small archive may always expand this far
CHUNK = 1 << 20  # compressed bytes read at a time; decompressed output is produced at most this much at a time


class Expanded(Exception):
    """The archive expands beyond its bound; the message says how far it got."""


def compression(head: bytes) -> str | None:
    """gzip, bz2 or xz from a file's first bytes; None for anything else."""
    if head.startswith(b"\x1f\x8b"):
        return "gzip"
    if head.startswith(b"BZh"):
        return "bz2"
    if head.startswith(b"\xfd7zXZ\x00"):
        return "xz"
    return None


def _decompressor(kind: str):
    if kind == "gzip":
        return zlib.decompressobj(wbits=31)
    return bz2.BZ2Decompressor() if kind == "bz2" else lzma.LZMADecompressor()


class Decompressed:
    """The decompressed bytes of a file as a forward-only, seekable-forwards binary stream (a backward
    seek starts again from the start). Concatenated gzip members are read as one stream."""

    def __init__(self, path: str, kind: str, size: int):
        self.path, self.kind = path, kind
        self.limit = max(MAX_EXPANSION * size, MIN_EXPANSION_BYTES)
        self._open()

    def _open(self) -> None:
        self._f = open(self.path, "rb")
        self._d = _decompressor(self.kind)
        self._buf, self._at, self._pos, self._eof = b"", 0, 0, False  # buffer, read position in it

    def close(self) -> None:
        self._f.close()

    def tell(self) -> int:
        return self._pos

    def _more(self) -> None:
        """Decompress the next piece into the buffer (at most CHUNK bytes of output)."""
        while True:
            if self._d.eof:  # the end of one gzip member: another may follow
                rest = self._d.unused_data
                if not rest:
                    rest = self._f.read(CHUNK)
                if not rest or self.kind != "gzip":
                    self._eof = True
                    return
                self._d = _decompressor(self.kind)
                data = rest
            elif getattr(self._d, "unconsumed_tail", b""):
                data = self._d.unconsumed_tail
            else:
                data = self._f.read(CHUNK)
                if not data:
                    self._eof = True
                    return
            out = self._d.decompress(data, CHUNK) if self.kind == "gzip" else self._d.decompress(data, max_length=CHUNK)
            if out:
                self._buf, self._at = self._buf[self._at:] + out, 0
                return

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            raise ValueError("read() of a whole decompressed stream is not bounded")
        parts, want = [], n
        while want > 0:
            if self._at >= len(self._buf):
                if self._eof:
                    break
                self._more()
                continue
            take = self._buf[self._at : self._at + want]
            self._at += len(take)
            parts.append(take)
            want -= len(take)
            self._pos += len(take)
            if self._pos > self.limit:
                raise Expanded(f"decompression bomb: it expands beyond {self.limit:,} bytes (the larger of "
                               f"{MAX_EXPANSION} x its size and {MIN_EXPANSION_BYTES:,} bytes)")
        return b"".join(parts)

    def seek(self, pos: int, whence: int = 0) -> int:
        if whence == 1:
            pos += self._pos
        elif whence != 0:
            raise OSError("seek from the end of a compressed stream")
        if pos < self._pos:
            self._f.close()
            self._open()
        while self._pos < pos:
            if not self.read(min(pos - self._pos, CHUNK)):
                break
        return self._pos
