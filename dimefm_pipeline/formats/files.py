"""A source's files: patterns expanded, the file table (names relative to a root, sizes, times), and
reading items' bytes from regular files only.

Every file a source reads is listed once, relative to the source's root folder, in its *file table*
(`source_files` in the manifest). Items point into that table by number, so a source can move (a
copy on a node's local disk) by changing its root alone.
"""

from __future__ import annotations

import glob
import hashlib
import os
import re
import stat
from dataclasses import dataclass

from dimefm_pipeline.core.errors import DimefmError


class BadItem(Exception):
    """An item that cannot be encoded; its message is the reason recorded in the manifest."""


def size_text(n: int) -> str:
    """A byte count as people read it (3.2 GB, 512.0 MB, 900 bytes)."""
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"


def check_size(n: int, limit: int | None) -> None:
    """Refuse an item of `n` bytes over `limit` (--max-image-bytes) before any of it is read."""
    if limit is not None and n > limit:
        raise BadItem(f"too large: {size_text(n)} > --max-image-bytes ({size_text(limit)})")


@dataclass(frozen=True)
class FileEntry:
    """One row of a source's file table."""

    path: str  # relative to the source root
    size: int
    mtime_ns: int


def expand_braces(pattern: str) -> list[str]:
    """Expand `{000..099}` ranges (zero padding kept) and `{a,b}` alternatives, as WebDataset does."""
    m = re.search(r"\{([^{}]*)\}", pattern)
    if not m:
        return [pattern]
    head, body, tail = pattern[: m.start()], m.group(1), pattern[m.end() :]
    rng = re.fullmatch(r"(\d+)\.\.(\d+)", body)
    if rng:
        lo, hi = rng.group(1), rng.group(2)
        width = len(lo) if lo.startswith("0") else 0
        choices = [str(i).zfill(width) for i in range(int(lo), int(hi) + 1)]
    else:
        choices = body.split(",")
    return [p for c in choices for p in expand_braces(head + c + tail)]


def expand_pattern(arg: str) -> list[str]:
    """A source argument's files: braces and globs expanded, sorted, each checked to exist.

    A path that exists as typed is taken literally, so real names with `[`, `*` or `{` work.
    """
    if os.path.exists(arg):
        return [os.path.abspath(arg)]
    out: list[str] = []
    for part in expand_braces(arg):
        if os.path.exists(part):
            out.append(part)
        elif any(ch in part for ch in "*?["):
            hits = sorted(glob.glob(part))
            if not hits:
                raise DimefmError(f"no file matches {part}")
            out.extend(hits)
        else:
            raise DimefmError(f"no such file or folder: {part}")
    return [os.path.abspath(p) for p in out]


def common_root(paths: list[str]) -> str:
    """The deepest folder holding every path (a folder source is its own root)."""
    if len(paths) == 1 and os.path.isdir(paths[0]):
        return paths[0]
    return os.path.commonpath([os.path.dirname(p) for p in paths])


def fingerprint_files(entries) -> str:
    """sha256 over (relative name, size) of each file: what defines the source's units and items.

    Timestamps are left out on purpose: copying or touching data changes them, not the bytes; a file
    whose timestamp moved is checked by content instead (`store.source_check`).
    """
    h = hashlib.sha256()
    for e in entries:
        h.update(f"{e.path}\0{e.size}\n".encode("utf-8", "surrogateescape"))
    return h.hexdigest()


def printable(name: str) -> str:
    """A file name as text: bytes that are not UTF-8 (kept by Python as surrogates) shown as escapes."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def is_utf8(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def file_entries(root: str, rel_paths) -> list[FileEntry]:
    """File-table rows for files of a source; an unreadable or non-regular file is a user error."""
    out = []
    for rel in rel_paths:
        p = os.path.join(root, rel)
        if not is_utf8(p):
            raise DimefmError(f"{printable(p)}: the file name is not valid UTF-8; rename it")
        try:
            st = os.stat(p)
        except OSError as exc:
            raise DimefmError(f"cannot read {p}: {exc.strerror}") from None
        if not stat.S_ISREG(st.st_mode):
            raise DimefmError(f"{p} is not a regular file")
        out.append(FileEntry(rel, st.st_size, st.st_mtime_ns))
    return out


def read_regular(path: str, offset: int = 0, length: int | None = None, *, max_bytes: int | None = None) -> bytes:
    """Bytes of a regular file (all, or `length` bytes at `offset`). FIFOs, sockets and devices are
    refused without blocking on them (opened non-blocking, checked before any read), and so is a
    file over `max_bytes` (its apparent size, before any of it is read)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as exc:
        raise BadItem(f"unreadable file: {exc.strerror or exc}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise BadItem("not a regular file")
        check_size(st.st_size if length is None else length, max_bytes)
        with os.fdopen(fd, "rb", closefd=False) as f:
            f.seek(offset)
            data = f.read() if length is None else f.read(length)
    except OSError as exc:
        raise BadItem(f"unreadable file: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    if length is not None and len(data) != length:
        raise BadItem(f"short read: {len(data)} of {length} bytes (a truncated or changed file)")
    return data


def payload_hash(data: bytes) -> int:
    """64-bit content hash of an item's bytes as stage one read them: stage two checks every read."""
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little", signed=True)
