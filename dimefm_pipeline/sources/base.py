"""The small data contract shared by source readers: a source spec and its units of work."""

from __future__ import annotations

import glob
import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from dimefm_pipeline.errors import DimefmError

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif")


@dataclass(frozen=True)
class SourceSpec:
    """One source as the manifest records it: where, what format, which options."""

    uri: str  # absolute path or pattern, as resolved from the user's argument
    modality: str  # "image" or "text"
    fmt: str  # folder | webdataset | parquet | tsv | txt | jsonl
    files: tuple[str, ...]  # the concrete files (or the folder) the uri resolves to, sorted
    options: dict = field(default_factory=dict, hash=False)  # column/field names chosen by the user


@dataclass(frozen=True)
class Unit:
    """A deterministic slice of a source: the unit of work, of commit and of resume."""

    source_id: int
    index: int
    modality: str
    fmt: str
    path: str  # the file this unit reads (tar, parquet, tsv, txt, jsonl) or the folder root
    start: int = 0  # first row/line (or byte offset for image TSV)
    stop: int = 0  # one past the last row/line (or byte offset)
    offset: int = 0  # byte offset of line `start` (line-based text files)
    members: tuple[str, ...] = ()  # folder units: relative paths of the images
    keep: bytes | None = None  # text units: packed mask of lines to encode (first occurrences)
    options: dict = field(default_factory=dict, hash=False, compare=False)


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
    """A source argument's files: braces and globs expanded, sorted, each checked to exist."""
    out: list[str] = []
    for part in expand_braces(arg):
        if any(ch in part for ch in "*?["):
            hits = sorted(glob.glob(part))
            if not hits:
                raise DimefmError(f"no file matches {part}")
            out.extend(hits)
        else:
            if not os.path.exists(part):
                raise DimefmError(f"no such file or folder: {part}")
            out.append(part)
    return [os.path.abspath(p) for p in out]


def fingerprint_files(entries) -> str:
    """sha256 over (name, size, mtime) of each entry: cheap at scale, changes when a file changes."""
    h = hashlib.sha256()
    for name, st in entries:
        h.update(f"{name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def file_entries(paths) -> list[tuple[str, os.stat_result]]:
    """(path, stat) pairs for fingerprinting; unreadable paths are a user error."""
    out = []
    for p in paths:
        try:
            out.append((p, os.stat(p)))
        except OSError as exc:
            raise DimefmError(f"cannot read {p}: {exc.strerror}") from None
    return out


def list_image_folder(root: str) -> list[tuple[str, os.stat_result]]:
    """All images below `root`, recursively, as (relative path, stat), sorted for determinism."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames.sort()
        for fn in sorted(filenames):
            if fn.lower().endswith(IMAGE_EXTS):
                full = os.path.join(dirpath, fn)
                try:
                    st = os.stat(full)
                except OSError:
                    st = os.stat_result((0,) * 10)  # unreadable: kept as an item, reported when read
                out.append((os.path.relpath(full, root), st))
    out.sort(key=lambda e: e[0])
    return out


def pack_mask(mask) -> bytes:
    import numpy as np

    return np.packbits(np.asarray(mask, dtype=bool)).tobytes()


def unpack_mask(data: bytes, n: int):
    import numpy as np

    return np.unpackbits(np.frombuffer(data, dtype=np.uint8), count=n).astype(bool)
