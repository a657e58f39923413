"""The small data contract shared by source readers: a source, its file table, and its units of work.

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
from dataclasses import dataclass, field

from dimefm_pipeline.errors import DimefmError

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif")


class BadItem(Exception):
    """An item that cannot be encoded; its message is the reason recorded in the manifest."""


@dataclass(frozen=True)
class SourceSpec:
    """One source as the manifest records it: where, what format, which options."""

    uri: str  # absolute path or pattern (braces and globs kept): the source's identity in a manifest
    modality: str  # "image" or "text"
    fmt: str  # folder | webdataset | parquet | tsv | txt | jsonl
    root: str  # absolute folder that every path of the file table is relative to
    files: tuple[str, ...]  # the files the uri resolves to, relative to root, sorted (folders: listed by planning)
    options: dict = field(default_factory=dict, hash=False)  # column/field names chosen by the user


@dataclass(frozen=True)
class FileEntry:
    """One row of a source's file table."""

    path: str  # relative to the source root
    size: int
    mtime_ns: int


@dataclass(frozen=True)
class Unit:
    """A deterministic slice of a source: the unit of work, of commit and of resume."""

    source_id: int
    index: int
    modality: str
    fmt: str
    root: str  # the source root (absolute)
    path: str  # relative to root: the file this unit reads (tar, parquet, tsv, txt, jsonl); "" for folder units
    file: int  # number of `path` in the source's file table (folder units: of the first member)
    start: int = 0  # first row/line (or byte offset for image TSV)
    stop: int = 0  # one past the last row/line (or byte offset)
    offset: int = 0  # byte offset of line `start` (line-based text files)
    members: tuple[str, ...] = ()  # folder units: paths of the images, relative to root
    keep: bytes | None = None  # text units: packed mask of lines to encode (first occurrences)
    options: dict = field(default_factory=dict, hash=False, compare=False)

    @property
    def abspath(self) -> str:
        return os.path.join(self.root, self.path)


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
    whose timestamp moved is checked by content instead (`manifest.Manifest.register_source`).
    """
    h = hashlib.sha256()
    for e in entries:
        h.update(f"{e.path}\0{e.size}\n".encode("utf-8", "surrogateescape"))
    return h.hexdigest()


def file_entries(root: str, rel_paths) -> list[FileEntry]:
    """File-table rows for files of a source; an unreadable or non-regular file is a user error."""
    out = []
    for rel in rel_paths:
        p = os.path.join(root, rel)
        try:
            st = os.stat(p)
        except OSError as exc:
            raise DimefmError(f"cannot read {p}: {exc.strerror}") from None
        if not stat.S_ISREG(st.st_mode):
            raise DimefmError(f"{p} is not a regular file")
        out.append(FileEntry(rel, st.st_size, st.st_mtime_ns))
    return out


def list_image_folder(root: str) -> list[FileEntry]:
    """All images below `root`, recursively, as file-table rows sorted by relative path.

    Files that cannot be stat'ed are kept (size -1) so that reading them records the reason.
    """
    out = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames.sort()
        for fn in sorted(filenames):
            if fn.lower().endswith(IMAGE_EXTS):
                full = os.path.join(dirpath, fn)
                try:
                    st = os.stat(full)
                    size, mtime = st.st_size, st.st_mtime_ns
                except OSError:
                    size, mtime = -1, 0
                out.append(FileEntry(os.path.relpath(full, root), size, mtime))
    out.sort(key=lambda e: e.path)
    return out


def payload_hash(data: bytes) -> int:
    """64-bit content hash of an item's bytes as stage one read them: stage two checks every read."""
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little", signed=True)


def pack_mask(mask) -> bytes:
    import numpy as np

    return np.packbits(np.asarray(mask, dtype=bool)).tobytes()


def unpack_mask(data: bytes, n: int):
    import numpy as np

    return np.unpackbits(np.frombuffer(data, dtype=np.uint8), count=n).astype(bool)
