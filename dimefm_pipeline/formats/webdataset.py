"""WebDataset tar shards (`.tar`, `.tgz`, `.tar.gz`): members grouped by key (`dir/KEY.EXT`).

Images: one unit per tar. Its headers are listed first (data skipped, unbuffered), then each key's
image member is read by offset. An uncompressed tar is read in place, so stage two reads a member
again there; a compressed one (gzip, bzip2, xz, whatever its name) is decompressed forwards
(`streams.Decompressed`, bounded against decompression bombs) and its image bytes are copied into the
cache (packed). Sentences: per key, its `.txt` member, else the `text_field` (default `caption`) of
its `.json` member.

Every member is listed; every key of a member that is not a folder is an entry, cached or recorded.
Links mean what they mean to GNU tar, inside the archive: a hardlink or a symlink to another member
reads that member's bytes; a link out of the archive, and a name that is absolute or climbs out
with `..`, is recorded, never followed.
"""

from __future__ import annotations

import json
import os
import posixpath
import tarfile
from dataclasses import dataclass
from typing import Iterator

from dimefm_pipeline.formats.base import IMAGE_EXTS, ImageRecord, Limits, Listing, SourceFormat, TextRecord, Unit, check_text
from dimefm_pipeline.formats.files import BadItem, check_size, printable, read_regular, size_text
from dimefm_pipeline.formats.streams import Decompressed, Expanded, compression

MAX_CAPTION_BYTES = 1 << 20  # a caption member (.txt, .json) larger than this is recorded, not read
_KINDS = {tarfile.CHRTYPE: "character device", tarfile.BLKTYPE: "block device", tarfile.FIFOTYPE: "FIFO"}


@dataclass
class Entry:
    """One key of a tar: its members in order, and the member whose bytes are its value."""

    key: str
    members: list
    chosen: object = None  # the member read (an image, or a caption); after links, a regular member
    error: str | None = None


def _open(path: str):
    """The tar's bytes as a stream that can skip forwards: the file itself (unbuffered: a buffered file
    would read 8 KiB around every 512-byte header it skips to), or its decompressed content."""
    with open(path, "rb") as f:
        kind = compression(f.read(6))
    if kind is None:
        return open(path, "rb", buffering=0), False
    return Decompressed(path, kind, os.path.getsize(path)), True


def _split_member(name: str) -> tuple[str, str]:
    """WebDataset convention: `dir/KEY.EXT` -> (`dir/KEY`, `.ext`), splitting at the basename's first dot."""
    base = os.path.basename(name)
    stem, _, ext = base.partition(".")
    return name[: len(name) - len(base)] + stem, ("." + ext.lower()) if ext else ""


def list_members(path: str) -> tuple[list, bool, str | None]:
    """Every member of a tar, from its headers: (members, compressed, why listing stopped early)."""
    members, damage = [], None
    try:
        stream, compressed = _open(path)
    except OSError as exc:
        return [], False, f"unreadable tar: {exc.strerror or exc}"
    try:
        with tarfile.open(fileobj=stream, mode="r:") as tf:
            while True:
                try:
                    m = tf.next()
                except (tarfile.TarError, OSError, EOFError, Expanded) as exc:
                    damage = f"damaged tar: {exc}" if members else f"unreadable tar: {exc}"
                    break
                if m is None:
                    break
                members.append(m)
    except (tarfile.TarError, OSError, EOFError, Expanded) as exc:
        damage = f"unreadable tar: {exc}"
    finally:
        stream.close()
    return members, compressed, damage


def group(members: list, wanted) -> list[Entry]:
    """Keys in order of first appearance, with the member each reads (`wanted(ext)`: the extensions
    that can be a key's value, in order of preference); links resolved, bad names recorded."""
    by_name = {}
    for m in members:
        by_name[posixpath.normpath(m.name)] = m  # a later member of the same name wins, as on extraction
    entries: dict[str, Entry] = {}
    for m in members:
        if m.isdir():
            continue
        key, ext = _split_member(m.name)
        e = entries.setdefault(printable(key), Entry(printable(key), []))
        e.members.append(m)
        if e.chosen is None and e.error is None and wanted(ext):
            try:
                e.chosen = _resolve(m, by_name)
            except BadItem as exc:
                e.error = str(exc)
    return list(entries.values())


def _resolve(m, by_name: dict, hops: int = 0):
    """The regular member whose bytes `m` holds, following links inside the archive."""
    name = posixpath.normpath(m.name)
    if m.name.startswith("/") or name == ".." or name.startswith("../"):
        raise BadItem(f"member name {printable(m.name)!r} leaves the archive (absolute or ..): not read")
    if m.isreg():
        if m.issparse():
            raise BadItem("sparse tar member: not supported (repack the tar without --sparse)")
        return m
    if not (m.issym() or m.islnk()):
        raise BadItem(f"member is a {_KINDS.get(m.type, 'special file')}, not a file")
    if hops > 8:
        raise BadItem("symlink loop in the archive")
    target = m.linkname if m.islnk() else posixpath.join(posixpath.dirname(m.name), m.linkname)
    norm = posixpath.normpath(target)
    if m.linkname.startswith("/") or norm == ".." or norm.startswith("../"):
        raise BadItem(f"{'hardlink' if m.islnk() else 'symlink'} outside the archive: {printable(m.linkname)}")
    found = by_name.get(norm)
    if found is None:
        raise BadItem(f"{'hardlink' if m.islnk() else 'symlink'} to a member not in the archive: {printable(m.linkname)}")
    if found.isdir():
        raise BadItem(f"link to a folder of the archive: {printable(m.linkname)}")
    return _resolve(found, by_name, hops + 1)


def read_chosen(path: str, entries: list[Entry], max_bytes: int) -> Iterator[tuple[int, Entry, bytes | None]]:
    """(position, entry, bytes) of every entry, reading each chosen member once by offset (in offset
    order: a compressed tar is decompressed once more, forwards); bytes is None for an entry with an
    error, which may be set here (too large, unreadable)."""
    order = sorted((e.chosen.offset_data, i) for i, e in enumerate(entries) if e.error is None and e.chosen is not None)
    stream, compressed = _open(path)
    try:
        for offset, i in order:
            e = entries[i]
            try:
                check_size(e.chosen.size, max_bytes)
                if not compressed:  # in place, as stage two reads it again
                    data = read_regular(path, offset, e.chosen.size)
                else:
                    stream.seek(offset)
                    data = stream.read(e.chosen.size)
                if len(data) != e.chosen.size:
                    raise BadItem(f"short read: {len(data)} of {e.chosen.size} bytes (a truncated or changed file)")
            except BadItem as exc:
                e.error = str(exc)
                continue
            except (OSError, Expanded) as exc:
                e.error = f"unreadable member: {exc}"
                continue
            yield i, e, data
    finally:
        stream.close()
    for i, e in enumerate(entries):
        if e.error is not None or e.chosen is None:
            yield i, e, None


REST = "(the rest of the tar)"  # the entry of what could not be listed past damage


def listing(members: list, damage: str | None) -> Listing:
    """The keys of every member that is not a folder, in order of first appearance, plainly."""
    keys = tuple(dict.fromkeys(printable(_split_member(m.name)[0]) for m in members if not m.isdir()))
    return Listing(keys + ((REST,) if damage else ()))


def _image_records(unit: Unit, limits: Limits) -> Iterator:
    members, compressed, damage = list_members(unit.abspath)
    yield listing(members, damage)
    entries = group(members, lambda ext: ext.endswith(IMAGE_EXTS))
    for pos, e, data in read_chosen(unit.abspath, entries, limits.max_bytes):
        rec = ImageRecord(pos, e.key, unit.file, entry=e.key)
        if data is not None and not data:
            rec.error = "zero-byte file"
        elif data is not None:
            rec.data, rec.length = data, len(data)
            rec.offset = 0 if compressed else e.chosen.offset_data
        else:
            rec.error = e.error or "no image member for this key"
        yield rec
    if damage:
        yield ImageRecord(len(entries), "", unit.file, error=damage, entry=REST)


def tar_texts(path: str, opts: dict) -> Iterator:
    """Captions of a WebDataset tar as sentences: per key, its `.txt` member, else the `text_field`
    (default `caption`) of its `.json` member; keys with neither are recorded."""
    field = opts.get("text_field", "caption")
    members, _, damage = list_members(path)
    by_key: dict[str, dict] = {}
    for m in members:  # a key's caption members, by extension (the first of each)
        if not m.isdir():
            key, ext = _split_member(m.name)
            by_key.setdefault(printable(key), {}).setdefault(ext, m)
    entries = group(members, lambda ext: ext in (".txt", ".json"))
    by_name = {posixpath.normpath(m.name): m for m in members}
    for e in entries:  # a .txt member wins over a .json one wherever it comes
        txt = by_key[e.key].get(".txt")
        if txt is not None and e.error is None and e.chosen is not None and e.chosen is not txt:
            try:
                e.chosen = _resolve(txt, by_name)
            except BadItem as exc:
                e.error = str(exc)
    yield listing(members, damage)
    for pos, e, data in read_chosen(path, entries, MAX_CAPTION_BYTES):
        if data is None:
            err = e.error or "no caption member (.txt or .json)"
            if err.startswith("too large"):
                err = f"caption member too large: {size_text(e.chosen.size)} > {size_text(MAX_CAPTION_BYTES)}"
            yield TextRecord(pos, e.key, None, err, e.key)
        else:
            yield TextRecord(pos, e.key, *_caption(_split_member(e.chosen.name)[1], data, field), e.key)
    if damage:
        yield TextRecord(len(entries), "", None, damage, REST)


def _caption(ext: str, data: bytes, field: str) -> tuple[str | None, str | None]:
    """(text, error) of one key's caption member."""
    if ext == ".txt":
        try:
            return check_text(data.decode("utf-8"))
        except UnicodeDecodeError as exc:
            return None, f"invalid UTF-8 at byte {exc.start}"
    try:
        obj = json.loads(data)
    except (ValueError, RecursionError) as exc:
        return None, f"invalid JSON: {' '.join(str(exc).split())[:120]}"
    value = obj.get(field) if isinstance(obj, dict) else None
    if not isinstance(value, str):
        return None, f"missing field {field!r}" if value is None else f"field {field!r} is not a string"
    return check_text(value)


class WebDataset(SourceFormat):
    name = "webdataset"
    suffixes = {"image": (".tar", ".tgz", ".tar.gz"), "text": (".tar", ".tgz", ".tar.gz")}
    splits_texts = False  # a tar's captions are one unit, as its images are
    text_option = "--text-field"

    def options(self, path: str, modality: str, options: dict) -> dict:
        return {"text_field": "caption", **options} if modality == "text" else options  # a `.txt` member wins

    def image_ranges(self, path: str, size: int, shard_size: int) -> list[tuple[int, int]]:
        return [(0, 0)]  # the whole tar

    def image_records(self, unit: Unit, block, limits: Limits = Limits()) -> Iterator:
        yield from _image_records(unit, limits)

    def packed(self, unit: Unit) -> bool:
        try:
            with open(unit.abspath, "rb") as f:
                return compression(f.read(6)) is not None
        except OSError:
            return False  # unreadable: reading it records the reason

    def scan_texts(self, path: str, options: dict) -> Iterator[tuple[int, int, list]]:
        for rec in tar_texts(path, options):
            if not isinstance(rec, Listing):
                yield rec.pos, 0, [(rec.key, rec.text, rec.error)]

    def text_records(self, unit: Unit) -> Iterator:
        yield from tar_texts(unit.abspath, unit.options)

    def read_at(self, path: str, offset: int, length: int, pread=read_regular) -> bytes:
        return pread(path, offset, length)


FORMATS = (WebDataset(),)
