"""Sentence files read line by line: `.txt` (a sentence per line) and JSONL (`.jsonl`, `.json`: an
object per line, the sentence in its text field), plus what every line-based format shares.

A file is cut into units of --shard-size lines; a unit records the byte offset of its first line,
so encoding seeks straight to it. Keys are line numbers (from 1), or a JSONL key field's value.
Files are UTF-8, or UTF-16 when they start with its byte-order mark. A line is read with a bound
(`MAX_LINE_BYTES`): a longer one is recorded and skipped without being held, so no line costs more
memory than that.
"""

from __future__ import annotations

import json
from typing import Iterator

from dimefm_pipeline.core.errors import DimefmError
from dimefm_pipeline.formats.base import TEXT_FIELDS, Listing, SourceFormat, TextRecord, Unit, check_text, key_text
from dimefm_pipeline.formats.files import size_text

MAX_LINE_BYTES = 4 << 20  # a longer line is recorded as too long, never read whole
CHUNK = 1 << 20
TOO_LONG = object()  # a line's bytes, when the line was over MAX_LINE_BYTES


def encoding_of(path: str) -> str:
    """utf-16-le or utf-16-be when the file starts with that byte-order mark, else utf-8."""
    with open(path, "rb") as f:
        head = f.read(4)
    if head.startswith(b"\xff\xfe") and not head.startswith(b"\xff\xfe\x00\x00"):
        return "utf-16-le"
    if head.startswith(b"\xfe\xff"):
        return "utf-16-be"
    return "utf-8"


def read_lines(f, encoding: str) -> Iterator[tuple[int, object]]:
    """(byte offset, bytes of the line with its break, or TOO_LONG) from the file's position on."""
    offset = f.tell()
    if encoding == "utf-8":
        while raw := f.readline(MAX_LINE_BYTES + 1):
            start = offset
            offset += len(raw)
            if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
                while (more := f.readline(CHUNK)) and not more.endswith(b"\n"):
                    offset += len(more)
                offset += len(more)
                raw = TOO_LONG
            yield start, raw
        return
    yield from _utf16_lines(f, offset, b"\n\x00" if encoding == "utf-16-le" else b"\x00\n")


def _utf16_lines(f, offset: int, newline: bytes) -> Iterator[tuple[int, object]]:
    """Lines of UTF-16 text: a break is the two-byte newline at an even distance from the line's start.
    Of a line over MAX_LINE_BYTES only its length is kept."""
    buf, start, dropped = b"", offset, 0  # dropped: bytes of the current line already let go
    while True:
        at = 0
        while (hit := buf.find(newline, at)) >= 0 and hit % 2:
            at = hit + 1
        if hit >= 0:
            line, buf = buf[: hit + 2], buf[hit + 2 :]
            yield start, TOO_LONG if dropped + len(line) > MAX_LINE_BYTES else line
            start, dropped = start + dropped + len(line), 0
            continue
        chunk = f.read(CHUNK)
        if not chunk:
            if buf or dropped:
                yield start, TOO_LONG if dropped + len(buf) > MAX_LINE_BYTES else buf
            return
        if dropped + len(buf) > MAX_LINE_BYTES:  # let go of an even number of bytes: code units stay aligned
            cut = len(buf) - len(buf) % 2
            dropped, buf = dropped + cut, buf[cut:]
        buf += chunk


class LineFormat(SourceFormat):
    """A sentence file whose every line is read on its own (`parse` turns one into records)."""

    def parse(self, lineno: int, line: str, options: dict) -> Iterator[tuple[str | None, str | None, str | None]]:
        """The (key, text, error) records of one decoded line (without its line break)."""
        raise NotImplementedError

    def line_records(self, lineno: int, raw, options: dict, encoding: str = "utf-8"):
        if raw is TOO_LONG:
            yield str(lineno + 1), None, f"line too long: more than {size_text(MAX_LINE_BYTES)}"
            return
        try:
            line = raw.decode(encoding)
        except UnicodeDecodeError as exc:
            yield str(lineno + 1), None, f"invalid {encoding.split('-le')[0].split('-be')[0].upper()} at byte {exc.start}"
            return
        line = line.rstrip("\r\n")
        if lineno == 0 and line.startswith("\ufeff"):  # a byte-order mark is not text
            line = line[1:]
        yield from self.parse(lineno, line, options)

    def scan_texts(self, path: str, options: dict) -> Iterator[tuple[int, int, list]]:
        encoding = encoding_of(path)
        with open(path, "rb") as f:
            for lineno, (offset, raw) in enumerate(read_lines(f, encoding)):
                yield lineno, offset, list(self.line_records(lineno, raw, options, encoding))

    def text_records(self, unit: Unit) -> Iterator:
        yield Listing(tuple(range(unit.start, unit.stop)))
        pos = 0
        encoding = encoding_of(unit.abspath)
        with open(unit.abspath, "rb") as f:
            f.seek(unit.offset)
            for lineno, (_, raw) in zip(range(unit.start, unit.stop), read_lines(f, encoding)):
                for key, text, err in self.line_records(lineno, raw, unit.options, encoding):
                    yield TextRecord(pos, key, text, err, lineno)
                    pos += 1


class Txt(LineFormat):
    name = "txt"
    suffixes = {"text": (".txt",)}

    def parse(self, lineno: int, line: str, options: dict):
        yield str(lineno + 1), *check_text(line)


def parse_json(text: str):
    """(object, None), or (None, why it is not JSON): any line, however pathological, ends as one or the
    other (too deep, numbers of thousands of digits and bad escapes included)."""
    try:
        return json.loads(text), None
    except RecursionError:
        return None, "invalid JSON: nested too deeply"
    except ValueError as exc:  # JSONDecodeError, and integers past Python's digit limit
        return None, f"invalid JSON: {' '.join(getattr(exc, 'msg', str(exc)).split())[:120]}"


class Jsonl(LineFormat):
    name = "jsonl"
    suffixes = {"text": (".jsonl", ".json")}
    text_option = "--text-field"

    def options(self, path: str, modality: str, options: dict) -> dict:
        return options if "text_field" in options else {**options, "text_field": _jsonl_field(path)}

    def parse(self, lineno: int, line: str, options: dict):
        if not line.strip():
            yield str(lineno + 1), None, "empty line"
            return
        obj, err = parse_json(line)
        if err:
            yield str(lineno + 1), None, err
            return
        field, key_field = options.get("text_field", "text"), options.get("key_field")
        key = str(lineno + 1)
        if key_field and isinstance(obj, dict) and key_field in obj:
            key = key_text(obj[key_field])
        if not isinstance(obj, dict) or field not in obj:
            yield key, None, f"missing field {field!r}"
        elif not isinstance(obj[field], str):
            yield key, None, f"field {field!r} is not a string"
        else:
            yield key, *check_text(obj[field])


def _jsonl_field(path: str) -> str:
    """The sentence field of a JSONL file, from its first JSON object: the first of TEXT_FIELDS it has."""
    try:
        encoding = encoding_of(path)
        with open(path, "rb") as f:
            for _, raw in read_lines(f, encoding):
                if raw is TOO_LONG:
                    continue
                try:
                    obj, _ = parse_json(raw.decode(encoding).lstrip("\ufeff"))
                except UnicodeDecodeError:
                    continue
                if isinstance(obj, dict):
                    hits = [k for k in TEXT_FIELDS if k in obj]
                    if not hits:
                        raise DimefmError(f"{path}: no sentence field ({', '.join(TEXT_FIELDS)}) in its records (fields: "
                                          f"{', '.join(map(str, obj))[:200]}): pass --text-field")
                    return hits[0]
    except OSError as exc:
        raise DimefmError(f"cannot read {path}: {exc.strerror}") from None
    return "text"


FORMATS = (Txt(), Jsonl())
