"""Record streams of one unit, per format.

Image records are `(key, payload)` where payload is bytes, a file path, or base64 text; decoding
happens later, in DataLoader workers. Text records are `(key, text, error)` with exactly one of
`text`/`error` set: validation is part of reading so planning and encoding agree on every line.
"""

from __future__ import annotations

import json
import os
import tarfile
from typing import Iterator

from dimefm_pipeline.sources.base import IMAGE_EXTS, Unit

B64 = "b64"  # payload tag: base64 text still to decode


# ---------------------------------------------------------------------------------------- images


def image_records(unit: Unit) -> Iterator[tuple[str, object]]:
    """Yield (key, payload) for every item of an image unit, in a fixed order."""
    if unit.fmt == "folder":
        for rel in unit.members:
            yield rel, os.path.join(unit.path, rel)
    elif unit.fmt == "webdataset":
        yield from _tar_records(unit.path)
    elif unit.fmt == "parquet":
        yield from _parquet_image_records(unit)
    elif unit.fmt == "tsv":
        for key, rest in _tsv_byte_range(unit.path, unit.start, unit.stop):
            yield key, (B64, rest)
    else:  # pragma: no cover - formats are validated when the source is resolved
        raise ValueError(unit.fmt)


def _tar_records(path: str) -> Iterator[tuple[str, object]]:
    """WebDataset convention: members `KEY.EXT` grouped by KEY; the first image extension wins.

    A damaged tar yields what precedes the damage, then one `(None, reason)` record.
    """
    stem = os.path.basename(path)
    for suffix in (".tar.gz", ".tgz", ".tar"):
        if stem.endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    current, found = None, None
    try:
        with tarfile.open(path, "r|*") as tf:
            for member in tf:
                if not member.isfile():
                    continue
                base = os.path.basename(member.name)
                if "." not in base:
                    continue
                key = member.name[: len(member.name) - len(base)] + base.split(".", 1)[0]
                ext = "." + base.split(".", 1)[1].lower()
                if key != current:
                    if current is not None:
                        yield f"{stem}/{current}", found
                    current, found = key, None
                if found is None and ext in IMAGE_EXTS:
                    found = tf.extractfile(member).read()
        if current is not None:
            yield f"{stem}/{current}", found
    except (tarfile.TarError, OSError, EOFError) as exc:
        yield None, f"unreadable tar {path}: {exc}"


def _parquet_image_records(unit: Unit) -> Iterator[tuple[str, object]]:
    import pyarrow.parquet as pq

    col = unit.options["image_column"]
    key_col = unit.options.get("key_column")
    base = os.path.dirname(unit.path)
    for row, key, value in _parquet_rows(pq.ParquetFile(unit.path), unit.start, unit.stop, col, key_col):
        if isinstance(value, dict):  # HF-datasets style struct {bytes, path}
            value = value.get("bytes") or value.get("path")
        if isinstance(value, str):
            value = value if os.path.isabs(value) else os.path.join(base, value)
        yield (str(row) if key is None else str(key)), value


def _parquet_rows(pf, start: int, stop: int, col: str, key_col: str | None):
    """Rows [start, stop) of a Parquet file, reading only the row groups that overlap."""
    cols = [col] + ([key_col] if key_col else [])
    first = 0
    for rg in range(pf.metadata.num_row_groups):
        n = pf.metadata.row_group(rg).num_rows
        lo, hi = max(start, first), min(stop, first + n)
        if lo < hi:
            table = pf.read_row_group(rg, columns=cols).slice(lo - first, hi - lo)
            values = table.column(col).to_pylist()
            keys = table.column(key_col).to_pylist() if key_col else [None] * len(values)
            for i, (k, v) in enumerate(zip(keys, values)):
                yield lo + i, k, v
        first += n
        if first >= stop:
            break


def _tsv_byte_range(path: str, start: int, stop: int) -> Iterator[tuple[str, str]]:
    """Lines whose first byte lies in [start, stop): byte ranges split a file without an index."""
    with open(path, "rb") as f:
        if start > 0:
            f.seek(start - 1)
            f.readline()  # finish the line that straddles `start`; it belongs to the previous range
        while f.tell() < stop:
            line = f.readline()
            if not line:
                break
            line = line.rstrip(b"\r\n")
            if not line:
                continue
            key, _, rest = line.partition(b"\t")
            yield key.decode("utf-8", "replace"), rest.decode("ascii", "replace")


# ----------------------------------------------------------------------------------------- texts


def text_records(unit: Unit) -> Iterator[tuple[str, str | None, str | None]]:
    """Yield (key, text, error) for every item of a text unit (lines [start, stop))."""
    opts = unit.options
    if unit.fmt == "parquet":
        import pyarrow.parquet as pq

        pf = pq.ParquetFile(unit.path)
        for row, key, value in _parquet_rows(pf, unit.start, unit.stop, opts["text_column"], opts.get("key_column")):
            key = str(row) if key is None else str(key)
            if value is None:
                yield key, None, "null text"
            else:
                yield key, *_check_text(str(value))
        return
    with open(unit.path, "rb") as f:
        f.seek(unit.offset)
        for lineno in range(unit.start, unit.stop):
            raw = f.readline()
            if not raw:
                break
            yield from _text_line(unit.fmt, lineno, raw, opts)


def text_lines(path: str, fmt: str, opts: dict) -> Iterator[tuple[int, int, list]]:
    """Whole-file scan for planning: (line number, byte offset, records of that line)."""
    with open(path, "rb") as f:
        lineno, offset = 0, 0
        for raw in f:
            yield lineno, offset, list(_text_line(fmt, lineno, raw, opts))
            offset += len(raw)
            lineno += 1


def _text_line(fmt: str, lineno: int, raw: bytes, opts: dict):
    raw = raw.rstrip(b"\r\n")
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        yield str(lineno + 1), None, f"invalid UTF-8 at byte {exc.start}"
        return
    if fmt == "txt":
        yield str(lineno + 1), *_check_text(line)
    elif fmt == "jsonl":
        if not line.strip():
            yield str(lineno + 1), None, "empty line"
            return
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            yield str(lineno + 1), None, f"invalid JSON: {exc.msg}"
            return
        field, key_field = opts.get("text_field", "text"), opts.get("key_field")
        key = str(obj.get(key_field, lineno + 1)) if key_field and isinstance(obj, dict) else str(lineno + 1)
        if not isinstance(obj, dict) or field not in obj:
            yield key, None, f"missing field {field!r}"
        elif not isinstance(obj[field], str):
            yield key, None, f"field {field!r} is not a string"
        else:
            yield key, *_check_text(obj[field])
    elif fmt == "tsv":
        key, tab, rest = line.partition("\t")
        if not tab:
            yield key or str(lineno + 1), None, "no tab-separated text column"
            return
        stripped = rest.strip()
        if stripped.startswith("{"):
            try:
                obj = json.loads(stripped)
            except json.JSONDecodeError as exc:
                yield key, None, f"invalid JSON: {exc.msg}"
                return
            caps = obj.get("captions") if isinstance(obj, dict) else None
            if not isinstance(caps, list):
                yield key, None, "JSON column has no 'captions' list"
                return
            for i, cap in enumerate(caps):
                yield f"{key}#{i}", *(_check_text(cap) if isinstance(cap, str) else (None, "caption is not a string"))
        else:
            yield key, *_check_text(rest)


def _check_text(text: str) -> tuple[str | None, str | None]:
    text = text.strip()
    if not text:
        return None, "empty or whitespace-only sentence"
    if "\x00" in text:
        return None, "NUL byte in sentence"
    return text, None
