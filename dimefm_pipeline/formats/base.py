"""The contract between the planner, stage one, stage two and the source formats (one file each).

A source is one CLI argument (a folder, a file, or a brace/glob pattern of files) of one format. The
planner splits it into deterministic *units* (a chunk of files, one tar, a row range, a line range):
the unit of work, of resume and of distribution across ranks. Stage one cuts a unit into *read
blocks*, each read by one loader worker, into records; stage two reads an image again where its
record said its bytes lie (its locator: file-table number, byte offset, length).
"""

from __future__ import annotations

import hashlib
import os
import re
import unicodedata
from dataclasses import dataclass, field
from typing import Iterator, NamedTuple

from dimefm_pipeline.formats.files import FileEntry, file_entries, fingerprint_files, read_regular
from dimefm_pipeline.formats.image_kinds import IMAGE_EXTS

MAX_IMAGE_PIXELS = 32_000_000  # default --max-image-pixels: decoding costs at most about 7 bytes per pixel (224 MB)
MAX_IMAGE_BYTES = 48 << 20  # default --max-image-bytes: an item's encoded bytes, checked before they are read
B64 = "b64"  # payload tag: base64 text still to decode
PACKED = -1  # locator file number of bytes copied into the cache's pack file of the unit
TEXT_FIELDS = ("text", "caption", "sentence")  # sentence column/field names, guessed in this order


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
    records: int = -1  # text units: records planning found (reading must find as many)
    options: dict = field(default_factory=dict, hash=False, compare=False)

    @property
    def abspath(self) -> str:
        return os.path.join(self.root, self.path)


@dataclass
class Plan:
    """A planned source: its units, its file table and what planning learned about it."""

    units: list[Unit]
    files: list[FileEntry]
    fingerprint: str
    duplicates: int = 0  # exact-duplicate sentences skipped (text only)
    problems: list = field(default_factory=list)  # (key, reason) found while listing: recorded as errors
    other_files: dict = field(default_factory=dict)  # extension -> files of a folder that are not images
    empty: str = ""  # why the source holds no item (a warning; a command whose every source is empty fails)


@dataclass
class ImageRecord:
    """One image item as stage one reads it: its bytes and where they lie (its locator)."""

    pos: int  # position within the unit: rows of a unit are stored in this order
    key: str  # the source's own key
    file: int  # file-table number of the file the item came from
    offset: int = 0  # byte offset of the bytes in that file
    length: int = 0  # number of bytes
    data: object = None  # bytes, or (B64, text) for base64 payloads; None when `error` is set
    error: str | None = None
    entry: object = None  # the listed entry it accounts for, when that is not `pos` (a tar's key)


class TextRecord(NamedTuple):
    """One sentence item: exactly one of `text` and `error` is set (validation is part of reading,
    so planning and encoding agree on every record)."""

    pos: int
    key: str | None
    text: str | None
    error: str | None
    entry: int = -1  # the listed entry it came from (line, row or key number in the unit; -1: the whole unit)


@dataclass(frozen=True)
class Limits:
    """What one input may cost stage one: sizes are checked before anything is read or decoded."""

    max_bytes: int = MAX_IMAGE_BYTES  # an image's encoded bytes (a file, a tar member, a Parquet cell, a TSV field)
    max_pixels: int = MAX_IMAGE_PIXELS  # an image's pixels, read from its header


@dataclass(frozen=True)
class Listing:
    """The entries a read block holds, listed by plain enumeration (every file, tar member, row or
    line), before they are read: each must come back as exactly one record, so none can be
    dropped without a trace (`formats.accounting`)."""

    entries: tuple  # entry ids in order: the pos of the record each must give (texts: the entry it came from)
    names: tuple = ()  # what a person calls each entry (a path, a member name), for the error naming it


def unit_of(spec: SourceSpec, source_id: int, index: int, path: str, file: int, **kw) -> Unit:
    """Unit `index` of a source, reading file `path` (number `file` of its file table)."""
    return Unit(source_id, index, spec.modality, spec.fmt, spec.root, path, file, options=spec.options, **kw)


class SourceFormat:
    """A source format: how a source is planned into units, how stage one reads a unit's records and
    how stage two reads an image again at its locator. Each format is one module of this package
    holding `FORMATS`, its instances; the defaults here suit formats that read files as they are."""

    name = ""  # as the manifest records it (`sources.format`)
    suffixes: dict[str, tuple[str, ...]] = {}  # modality -> file-name endings of this format
    splits_texts = True  # a sentence file is cut into units of --shard-size records (else one unit per file)
    text_option = ""  # the CLI option naming where its sentences are, for the hint when none is found
    whole_folder = False  # a source of this format is a folder, whatever files it holds (else: its files)

    def options(self, path: str, modality: str, options: dict) -> dict:
        """The source's options, completed from its first file (guessed column or field names)."""
        return options

    # ---- planning ------------------------------------------------------------------------------
    def plan_images(self, spec: SourceSpec, source_id: int, shard_size: int) -> Plan:
        """One or more units per file (`image_ranges`)."""
        entries = file_entries(spec.root, spec.files)
        units: list[Unit] = []
        for file, rel in enumerate(spec.files):
            for start, stop in self.image_ranges(os.path.join(spec.root, rel), entries[file].size, shard_size):
                units.append(unit_of(spec, source_id, len(units), rel, file, start=start, stop=stop))
        plan = Plan(units, entries, fingerprint_files(entries))
        if not units:
            plan.empty = f"{spec.uri} holds no images"
        return plan

    def image_ranges(self, path: str, size: int, shard_size: int) -> list[tuple[int, int]]:
        """(start, stop) of the image units of one file."""
        raise NotImplementedError(f"{self.name} holds no images")

    def scan_texts(self, path: str, options: dict) -> Iterator[tuple[int, int, list]]:
        """The whole file for planning: (position, byte offset, its (key, text, error) records)."""
        raise NotImplementedError(f"{self.name} holds no sentences")

    def planned_records(self, unit: Unit) -> int | None:
        """Records a unit will yield when that is known before reading it."""
        return unit.stop - unit.start if unit.modality == "text" else None

    # ---- stage one ----------------------------------------------------------------------------
    def blocks(self, unit: Unit, batch_size: int) -> list:
        """The unit's read blocks, in order (each read by one worker); by default the whole unit."""
        return [None]

    def image_records(self, unit: Unit, block, limits: Limits = Limits()) -> Iterator:
        """The `Listing` of one read block's entries and a record for each, bytes included (errors as
        records with `error` set); no item is read past `limits`."""
        raise NotImplementedError(f"{self.name} holds no images")

    def text_records(self, unit: Unit) -> Iterator:
        """The `Listing` of a text unit's entries (lines, rows, keys) and every record they give, in order."""
        raise NotImplementedError(f"{self.name} holds no sentences")

    def packed(self, unit: Unit) -> bool:
        """True when a unit's items cannot be read alone later: their bytes are copied into the cache."""
        return False

    # ---- stage two ----------------------------------------------------------------------------
    def read_at(self, path: str, offset: int, length: int, pread=read_regular) -> bytes:
        """An item's bytes again, at its locator (`pread(path, offset, length)`: a reader may keep
        files open)."""
        return pread(path, offset, length)

    def payload(self, data: bytes):
        """What `images.decode_image` takes for these bytes."""
        return data


_SURROGATES = re.compile("[\ud800-\udfff]")
# Letters that draw nothing (fillers and blanks); with the format, control and combining characters
# and whitespace they make a line that looks empty.
_BLANK_LETTERS = frozenset("\u115f\u1160\u3164\uffa0\u2800\u17b4\u17b5\u180e")
_INVISIBLE = frozenset(("Cc", "Cf", "Cn", "Co", "Cs", "Mn", "Me", "Zs", "Zl", "Zp"))
MAX_SENTENCE_CHARS = 1000  # a sentence is cut here before tokenizing (far past any context length)
MAX_WORD_CHARS = 32  # letters in a row before the tokenizer's input gets a break: its cost grows with the square


def check_text(text: str) -> tuple[str | None, str | None]:
    """(sentence, None) of a valid sentence, else (None, why it is skipped)."""
    if _SURROGATES.search(text):
        return None, "lone UTF-16 surrogate in sentence: not text"
    text = text.strip()
    if not text:
        return None, "empty or whitespace-only sentence"
    if "\x00" in text:
        return None, "NUL byte in sentence"
    if not any(unicodedata.category(c) not in _INVISIBLE and c not in _BLANK_LETTERS for c in text):
        return None, "empty after removing invisible characters"
    return text, None


_LONG_WORD = re.compile(f"[^\\W\\d_]{{{MAX_WORD_CHARS}}}(?=[^\\W\\d_])")


def bounded_text(text: str) -> tuple[str, bool]:
    """What the tokenizer is given for a sentence, so that one sentence costs it a few milliseconds:
    the first MAX_SENTENCE_CHARS characters, runs of letters broken every MAX_WORD_CHARS. Returns
    (text, whether it was changed); a changed sentence is recorded as truncated."""
    cut = text[:MAX_SENTENCE_CHARS]
    cut = _LONG_WORD.sub(lambda m: m.group(0) + " ", cut)
    return cut, cut != text


def key_text(value) -> str | None:
    """A key as a user reads it, whatever its type (the rule of docs/cache-format.md): text as it is
    (a lone surrogate as its escape), bytes as UTF-8 text or, when they are not UTF-8, as hex; numbers
    in decimal; true/false; dates and times in ISO 8601; lists and structs as JSON; null stays null."""
    import datetime
    import json

    if value is None:
        return None
    if isinstance(value, str):
        return _SURROGATES.sub(lambda m: f"\\u{ord(m.group()):04x}", value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            return bytes(value).hex()
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value, default=str, ensure_ascii=False)
    return str(value)


def text_hash(text: str) -> int:
    """64-bit content hash used for exact-duplicate detection (stored in the manifest)."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little", signed=True)


def one_line(exc: Exception) -> str:
    return " ".join(str(exc).split())[:200]


def pack_mask(mask) -> bytes:
    import numpy as np

    return np.packbits(np.asarray(mask, dtype=bool)).tobytes()


def unpack_mask(data: bytes, n: int):
    import numpy as np

    return np.unpackbits(np.frombuffer(data, dtype=np.uint8), count=n).astype(bool)
