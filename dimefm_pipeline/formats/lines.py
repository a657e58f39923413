"""Sentence files read line by line: `.txt` (a sentence per line) and JSONL (`.jsonl`, `.json`: an
object per line, the sentence in its text field), plus what every line-based format shares.

A file is cut into units of --shard-size lines; a unit records the byte offset of its first line,
so encoding seeks straight to it. Keys are line numbers (from 1), or a JSONL key field's value.
"""

from __future__ import annotations

import json
from typing import Iterator

from dimefm_pipeline.core.errors import DimefmError
from dimefm_pipeline.formats.base import TEXT_FIELDS, SourceFormat, TextRecord, Unit, check_text


class LineFormat(SourceFormat):
    """A sentence file whose every line is read on its own (`parse` turns one into records)."""

    def parse(self, lineno: int, line: str, options: dict) -> Iterator[tuple[str | None, str | None, str | None]]:
        """The (key, text, error) records of one decoded line (without its line break)."""
        raise NotImplementedError

    def line_records(self, lineno: int, raw: bytes, options: dict):
        raw = raw.rstrip(b"\r\n")
        if lineno == 0 and raw.startswith(b"\xef\xbb\xbf"):  # a UTF-8 byte-order mark is not text
            raw = raw[3:]
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            yield str(lineno + 1), None, f"invalid UTF-8 at byte {exc.start}"
            return
        yield from self.parse(lineno, line, options)

    def scan_texts(self, path: str, options: dict) -> Iterator[tuple[int, int, list]]:
        with open(path, "rb") as f:
            lineno, offset = 0, 0
            for raw in f:
                yield lineno, offset, list(self.line_records(lineno, raw, options))
                offset += len(raw)
                lineno += 1

    def text_records(self, unit: Unit) -> Iterator[TextRecord]:
        pos = 0
        with open(unit.abspath, "rb") as f:
            f.seek(unit.offset)
            for lineno in range(unit.start, unit.stop):
                raw = f.readline()
                if not raw:
                    break
                for key, text, err in self.line_records(lineno, raw, unit.options):
                    yield TextRecord(pos, key, text, err)
                    pos += 1


class Txt(LineFormat):
    name = "txt"
    suffixes = {"text": (".txt",)}

    def parse(self, lineno: int, line: str, options: dict):
        yield str(lineno + 1), *check_text(line)


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
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            yield str(lineno + 1), None, f"invalid JSON: {exc.msg}"
            return
        field, key_field = options.get("text_field", "text"), options.get("key_field")
        key = str(lineno + 1)
        if key_field and isinstance(obj, dict) and key_field in obj:
            key = None if obj[key_field] is None else str(obj[key_field])
        if not isinstance(obj, dict) or field not in obj:
            yield key, None, f"missing field {field!r}"
        elif not isinstance(obj[field], str):
            yield key, None, f"field {field!r} is not a string"
        else:
            yield key, *check_text(obj[field])


def _jsonl_field(path: str) -> str:
    """The sentence field of a JSONL file, from its first JSON object: the first of TEXT_FIELDS it has."""
    try:
        with open(path, "rb") as f:
            for raw in f:
                try:
                    obj = json.loads(raw)
                except ValueError:
                    continue
                if isinstance(obj, dict):
                    hits = [k for k in TEXT_FIELDS if k in obj]
                    if not hits:
                        raise DimefmError(f"{path}: no sentence field ({', '.join(TEXT_FIELDS)}) in its records (fields: "
                                          f"{', '.join(obj)}): pass --text-field")
                    return hits[0]
    except OSError as exc:
        raise DimefmError(f"cannot read {path}: {exc.strerror}") from None
    return "text"


FORMATS = (Txt(), Jsonl())
