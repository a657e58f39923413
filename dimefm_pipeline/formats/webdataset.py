"""WebDataset tar shards (`.tar`, `.tgz`, `.tar.gz`): members grouped by key (`dir/KEY.EXT`).

Images: one unit per tar, read front to back by one worker. An uncompressed tar's members are read
by offset (its headers are scanned, data skipped), so stage two reads a member again in place; a
compressed tar is streamed and its image bytes are copied into the cache (packed). Sentences: per
key, its `.txt` member, else the `text_field` (default `caption`) of its `.json` member.
"""

from __future__ import annotations

import json
import os
import tarfile
from typing import Iterator

from dimefm_pipeline.formats.base import IMAGE_EXTS, ImageRecord, SourceFormat, TextRecord, Unit, check_text
from dimefm_pipeline.formats.files import BadItem, read_regular


def _plain_tar(path: str) -> bool:
    """An uncompressed tar (members can be read by offset)."""
    try:
        with open(path, "rb") as f:
            head = f.read(512)
    except OSError:
        return True  # unreadable: reading it records the reason
    return len(head) == 512 and head[257:262] == b"ustar" or (len(head) == 512 and _tar_checksum_ok(head))


def _tar_checksum_ok(block: bytes) -> bool:
    try:
        stored = int(block[148:156].split(b"\0", 1)[0].strip() or b"-1", 8)
    except ValueError:
        return False
    return stored == sum(block[:148]) + 8 * 32 + sum(block[156:])


def _split_member(name: str) -> tuple[str, str]:
    """WebDataset convention: `dir/KEY.EXT` -> (`dir/KEY`, `.ext`), splitting at the basename's first dot."""
    base = os.path.basename(name)
    stem, _, ext = base.partition(".")
    return name[: len(name) - len(base)] + stem, "." + ext.lower()


def _named_members(tf) -> Iterator[tuple[tarfile.TarInfo, str, str]]:
    """A tar's regular-file members whose name has an extension, each with its (key, extension)."""
    for member in tf:
        if member.isfile() and "." in os.path.basename(member.name):
            yield (member, *_split_member(member.name))


def _indexed_records(unit: Unit) -> Iterator[ImageRecord]:
    """An uncompressed tar: headers are scanned (data is skipped by seeking), members are grouped by
    key wherever they sit in the tar, and only each key's image member is read."""
    path = unit.abspath
    groups: dict[str, list] = {}
    damage = None
    try:
        # unbuffered: a buffered file would read 8 KiB around every 512-byte header it skips to
        with open(path, "rb", buffering=0) as raw, tarfile.open(fileobj=raw, mode="r:") as tf:
            while True:
                try:
                    m = tf.next()
                except (tarfile.TarError, OSError, EOFError) as exc:
                    damage = f"damaged tar {unit.path}: {exc}"
                    break
                if m is None:
                    break
                if not m.isfile() or "." not in os.path.basename(m.name):
                    continue
                key, ext = _split_member(m.name)
                g = groups.setdefault(key, [None])
                if g[0] is None and ext.endswith(IMAGE_EXTS) and not m.issparse():
                    g[0] = m
    except (tarfile.TarError, OSError, EOFError) as exc:
        yield ImageRecord(0, "", unit.file, error=f"unreadable tar {unit.path}: {exc}")
        return
    for pos, (key, (member,)) in enumerate(groups.items()):
        rec = ImageRecord(pos, key, unit.file)
        if member is None:
            rec.error = "no image member for this key"
        else:
            rec.offset, rec.length = member.offset_data, member.size
            try:
                rec.data = read_regular(path, rec.offset, rec.length)
            except BadItem as exc:
                rec.error = str(exc)
            if rec.data is not None and not rec.data:
                rec.data, rec.error = None, "zero-byte file"
        yield rec
    if damage:
        yield ImageRecord(len(groups), "", unit.file, error=damage)


def _streamed_records(unit: Unit) -> Iterator[ImageRecord]:
    """A compressed tar, streamed: members of a key are grouped while they are contiguous. A key that
    comes back later with another image is a repeated key (a second item); side members that come
    back (a late `.json`) are ignored."""
    path = unit.abspath
    pos = 0
    with_image: set[str] = set()
    current, found = None, None
    try:
        with tarfile.open(path, "r|*") as tf:
            for member, key, ext in _named_members(tf):
                if key != current:
                    if current is not None and (found is not None or current not in with_image):
                        yield _stream_record(pos, current, unit.file, found)
                        pos += 1
                        if found is not None:
                            with_image.add(current)
                    current, found = key, None
                if found is None and ext.endswith(IMAGE_EXTS):
                    found = tf.extractfile(member).read()
        if current is not None and (found is not None or current not in with_image):
            yield _stream_record(pos, current, unit.file, found)
    except (tarfile.TarError, OSError, EOFError) as exc:
        yield ImageRecord(pos + 1, "", unit.file, error=f"unreadable tar {unit.path}: {exc}")


def _stream_record(pos, key, file, data) -> ImageRecord:
    if data is None:
        return ImageRecord(pos, key, file, error="no image member for this key")
    if not data:
        return ImageRecord(pos, key, file, error="zero-byte file")
    return ImageRecord(pos, key, file, length=len(data), data=data)


def tar_texts(path: str, opts: dict) -> Iterator[TextRecord]:
    """Captions of a WebDataset tar as sentences: per key, its `.txt` member, else the `text_field`
    (default `caption`) of its `.json` member; keys with neither are recorded."""
    field = opts.get("text_field", "caption")
    groups: dict[str, dict] = {}
    order: list[str] = []
    try:
        with tarfile.open(path, "r|*") as tf:
            for m, key, ext in _named_members(tf):
                if key not in groups:
                    groups[key] = {}
                    order.append(key)
                if ext in (".txt", ".json") and ext not in groups[key]:
                    groups[key][ext] = tf.extractfile(m).read()
    except (tarfile.TarError, OSError, EOFError) as exc:
        yield TextRecord(len(order), "", None, f"unreadable tar: {exc}")
    for pos, key in enumerate(order):
        yield TextRecord(pos, key, *_caption(groups[key], field))


def _caption(members: dict, field: str) -> tuple[str | None, str | None]:
    """(text, error) of one key's caption members."""
    if ".txt" in members:
        try:
            return check_text(members[".txt"].decode("utf-8"))
        except UnicodeDecodeError as exc:
            return None, f"invalid UTF-8 at byte {exc.start}"
    if ".json" in members:
        try:
            obj = json.loads(members[".json"])
        except ValueError as exc:
            return None, f"invalid JSON: {exc}"
        value = obj.get(field) if isinstance(obj, dict) else None
        if not isinstance(value, str):
            return None, f"missing field {field!r}" if value is None else f"field {field!r} is not a string"
        return check_text(value)
    return None, "no caption member (.txt or .json)"


class WebDataset(SourceFormat):
    name = "webdataset"
    suffixes = {"image": (".tar", ".tgz", ".tar.gz"), "text": (".tar", ".tgz", ".tar.gz")}
    splits_texts = False  # a tar's captions are one unit, as its images are
    text_option = "--text-field"

    def options(self, path: str, modality: str, options: dict) -> dict:
        return {"text_field": "caption", **options} if modality == "text" else options  # a `.txt` member wins

    def image_ranges(self, path: str, size: int, shard_size: int) -> list[tuple[int, int]]:
        return [(0, 0)]  # the whole tar

    def image_records(self, unit: Unit, block) -> Iterator[ImageRecord]:
        yield from (_indexed_records if _plain_tar(unit.abspath) else _streamed_records)(unit)

    def packed(self, unit: Unit) -> bool:
        return not _plain_tar(unit.abspath)

    def scan_texts(self, path: str, options: dict) -> Iterator[tuple[int, int, list]]:
        for rec in tar_texts(path, options):
            yield rec.pos, 0, [(rec.key, rec.text, rec.error)]

    def text_records(self, unit: Unit) -> Iterator[TextRecord]:
        yield from tar_texts(unit.abspath, unit.options)


FORMATS = (WebDataset(),)
