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

from dimefm_pipeline.core.errors import DimefmError

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")


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


@dataclass
class FolderListing:
    """What listing an image folder found: images, and what it skipped and why."""

    entries: list[FileEntry]
    problems: list[tuple[str, str]]  # (relative path, reason): recorded in the manifest's errors
    other_files: dict[str, int]  # extension -> files that are not images (sidecars: .json, .txt...)


def list_image_folder(root: str) -> FolderListing:
    """All images below `root`, recursively and following symlinks, as file-table rows sorted by path.

    Each folder is listed once (a symlink loop or a second link to a folder is recorded, not
    followed again); folders that cannot be listed and file names that are not UTF-8 are recorded;
    files that cannot be stat'ed are kept (size -1) so that reading them records the reason.
    """
    entries: list[FileEntry] = []
    problems: list[tuple[str, str]] = []
    other: dict[str, int] = {}
    seen: dict[tuple[int, int], str] = {}

    def unlistable(exc: OSError) -> None:
        problems.append((printable(os.path.relpath(exc.filename, root)), f"cannot list folder: {exc.strerror}"))

    for dirpath, dirnames, filenames in os.walk(root, onerror=unlistable, followlinks=True):
        rel_dir = os.path.relpath(dirpath, root)
        try:
            st = os.stat(dirpath)
        except OSError:
            dirnames[:] = []
            continue
        first = seen.setdefault((st.st_dev, st.st_ino), rel_dir)
        if first != rel_dir:
            problems.append((printable(rel_dir), f"folder already listed as {printable(first)} (a symlink loop or a second link): not listed again"))
            dirnames[:] = []
            continue
        dirnames.sort()
        for fn in sorted(filenames):
            rel = os.path.normpath(os.path.join(rel_dir, fn))
            ext = os.path.splitext(fn)[1].lower()
            if ext not in IMAGE_EXTS:
                other[ext or "(none)"] = other.get(ext or "(none)", 0) + 1
            elif not is_utf8(rel):
                problems.append((printable(rel), "file name is not valid UTF-8: rename it to encode it"))
            else:
                try:
                    st = os.stat(os.path.join(dirpath, fn))
                    size, mtime = st.st_size, st.st_mtime_ns
                except OSError:
                    size, mtime = -1, 0
                entries.append(FileEntry(rel, size, mtime))
    entries.sort(key=lambda e: e.path)
    return FolderListing(entries, problems, dict(sorted(other.items())))


def payload_hash(data: bytes) -> int:
    """64-bit content hash of an item's bytes as stage one read them: stage two checks every read."""
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little", signed=True)


def pack_mask(mask) -> bytes:
    import numpy as np

    return np.packbits(np.asarray(mask, dtype=bool)).tobytes()


def unpack_mask(data: bytes, n: int):
    import numpy as np

    return np.unpackbits(np.frombuffer(data, dtype=np.uint8), count=n).astype(bool)
