"""Image folders (recursive): each image file is an item; its key is its path below the folder.

A folder is split into units of at most --shard-size files (in path order), and a unit into read
blocks of a batch of files. Stage two reads an image as the whole file again and checks its length.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterator

from dimefm_pipeline.formats.accounting import bug
from dimefm_pipeline.formats.base import IMAGE_EXTS, ImageRecord, Limits, Listing, Plan, SourceFormat, SourceSpec, Unit, unit_of
from dimefm_pipeline.formats.files import BadItem, FileEntry, fingerprint_files, is_utf8, printable, read_regular


@dataclass
class FolderListing:
    """What listing an image folder found: images, and what it skipped and why."""

    entries: list[FileEntry]
    problems: list[tuple[str, str]]  # (relative path, reason): recorded in the manifest's errors
    other_files: dict[str, int]  # extension -> files that are not images (sidecars: .json, .txt...)


def list_image_folder(root: str) -> FolderListing:
    """All images below `root`, recursively and following symlinks, as file-table rows sorted by path.

    Each folder is listed once (a symlink loop or a second link to a folder is recorded, not
    followed again); folders that cannot be listed and image names that are not UTF-8 are recorded;
    files that cannot be stat'ed are kept (size -1) so that reading them records the reason. Every
    file name met is one of: an image, a recorded problem, a file that is not an image (counted).
    """
    entries: list[FileEntry] = []
    problems: list[tuple[str, str]] = []
    other: dict[str, int] = {}
    seen: dict[tuple[int, int], str] = {}
    met = 0  # every file name the walk met, counted plainly

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
        met += len(filenames)
        for fn in sorted(filenames):
            _classify(dirpath, os.path.normpath(os.path.join(rel_dir, fn)), entries, problems, other)
    entries.sort(key=lambda e: e.path)
    files_problems = sum(1 for _, why in problems if not why.startswith(("cannot list folder", "folder already")))
    if met != len(entries) + files_problems + sum(other.values()):
        raise bug(f"listing {root}", f"{met} files met, but {len(entries)} images + {files_problems} recorded + "
                                     f"{sum(other.values())} not images = {len(entries) + files_problems + sum(other.values())}")
    return FolderListing(entries, problems, dict(sorted(other.items())))


def _classify(dirpath: str, rel: str, entries: list, problems: list, other: dict) -> None:
    """One file of the walk: an image (a file-table row), a recorded problem, or a file that is not an image."""
    ext = os.path.splitext(rel)[1].lower()
    if ext not in IMAGE_EXTS:
        other[ext or "(none)"] = other.get(ext or "(none)", 0) + 1
    elif not is_utf8(rel):
        problems.append((printable(rel), "file name is not valid UTF-8: rename it to encode it"))
    else:
        try:
            st = os.stat(os.path.join(dirpath, os.path.basename(rel)))
            size, mtime = st.st_size, st.st_mtime_ns
        except OSError:
            size, mtime = -1, 0
        entries.append(FileEntry(rel, size, mtime))


class Folder(SourceFormat):
    name = "folder"
    suffixes = {}  # a folder is recognised as a folder, not by a name
    whole_folder = True

    def plan_images(self, spec: SourceSpec, source_id: int, shard_size: int) -> Plan:
        listing = list_image_folder(spec.root)
        entries = listing.entries
        members = [e.path for e in entries]
        units = [unit_of(spec, source_id, j, "", i, members=tuple(members[i : i + shard_size]))
                 for j, i in enumerate(range(0, len(members), shard_size))]
        plan = Plan(units, entries, fingerprint_files(entries), problems=listing.problems, other_files=listing.other_files)
        if not entries:
            others = ", ".join(f"{n} {ext}" for ext, n in listing.other_files.items()) or "no files"
            plan.empty = f"no images under {spec.root} ({others})"
        return plan

    def planned_records(self, unit: Unit) -> int:
        return len(unit.members)

    def blocks(self, unit: Unit, batch_size: int) -> list:
        n = len(unit.members)
        return [(lo, min(lo + batch_size, n)) for lo in range(0, n, batch_size)] or [(0, 0)]

    def image_records(self, unit: Unit, block, limits: Limits = Limits()) -> Iterator:
        lo, hi = block
        yield Listing(tuple(range(lo, hi)), unit.members[lo:hi])
        for pos in range(lo, hi):
            rel = unit.members[pos]
            rec = ImageRecord(pos, rel, unit.file + pos)
            try:
                rec.data = read_regular(os.path.join(unit.root, rel), max_bytes=limits.max_bytes)
                rec.length = len(rec.data)
            except BadItem as exc:
                rec.error = str(exc)
            yield rec

    def read_at(self, path: str, offset: int, length: int, pread=read_regular) -> bytes:
        """The whole file (an image file is read whole, never by range), checked to be as long as it was."""
        data = read_regular(path)
        if len(data) != length:
            raise BadItem(f"{len(data)} bytes, cached from {length}: the source changed since stage one")
        return data


FORMATS = (Folder(),)
