"""Record streams of one unit, per format, and the random reads of stage two.

Stage one cuts every image unit into *read blocks* (a chunk of a folder's files, one tar, one Parquet
row group, a byte range of a TSV) and each block is read by exactly one loader worker. Image records
carry their bytes and a *locator*: where the bytes lie (file of the source's file table, byte offset,
length), so stage two reads exactly those bytes again, by position and never by key. Formats with no
byte-addressable items (Parquet, compressed tars) are marked `packed`: stage one copies their encoded
bytes into the cache (`docs/cache-format.md`).

Text records are `(pos, key, text, error)` with exactly one of `text`/`error` set: validation is
part of reading so planning and encoding agree on every line.
"""

from __future__ import annotations

import json
import os
import stat
import tarfile
from dataclasses import dataclass
from typing import Iterator

from dimefm_pipeline.formats.base import IMAGE_EXTS, BadItem, Unit

B64 = "b64"  # payload tag: base64 text still to decode
TSV_BLOCK_BYTES = 16 << 20  # read block of an image TSV: a line belongs to the block holding its first byte
PACKED = -1  # locator file number of bytes copied into the cache's pack file of the unit


@dataclass
class ImageRecord:
    pos: int  # position within the unit: rows of a unit are stored in this order
    key: str  # the source's own key
    file: int  # file-table number of the file the item came from
    offset: int = 0  # byte offset of the bytes in that file
    length: int = 0  # number of bytes
    data: object = None  # bytes, or (B64, text) for base64 payloads; None when `error` is set
    error: str | None = None


# ---------------------------------------------------------------------------------------- files


def read_regular(path: str, offset: int = 0, length: int | None = None) -> bytes:
    """Bytes of a regular file (all, or `length` bytes at `offset`). FIFOs, sockets and devices are
    refused without blocking on them (opened non-blocking, checked before any read)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as exc:
        raise BadItem(f"unreadable file: {exc.strerror or exc}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise BadItem("not a regular file")
        with os.fdopen(fd, "rb", closefd=False) as f:
            f.seek(offset)
            data = f.read() if length is None else f.read(length)
    except OSError as exc:
        raise BadItem(f"unreadable file: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    if length is not None and len(data) != length:
        raise BadItem(f"short read: {len(data)} of {length} bytes (a truncated or changed file)")
    return data


# ---------------------------------------------------------------------------------------- images


def is_packed(unit: Unit) -> bool:
    """True when the unit's bytes cannot be read alone later and are copied into the cache."""
    return unit.fmt == "parquet" or (unit.fmt == "webdataset" and not _plain_tar(unit.abspath))


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


def image_blocks(unit: Unit, batch_size: int) -> list:
    """The unit's read blocks, in order (each read by one worker)."""
    if unit.fmt == "folder":
        n = len(unit.members)
        return [(lo, min(lo + batch_size, n)) for lo in range(0, n, batch_size)] or [(0, 0)]
    if unit.fmt == "parquet":
        return _parquet_blocks(unit)
    if unit.fmt == "tsv":
        return [(lo, min(lo + TSV_BLOCK_BYTES, unit.stop)) for lo in range(unit.start, unit.stop, TSV_BLOCK_BYTES)] or [(0, 0)]
    return [None]  # a tar is read front to back by one worker


def image_block_records(unit: Unit, block) -> Iterator[ImageRecord]:
    """The records of one read block, bytes included (errors as records with `error` set)."""
    if unit.fmt == "folder":
        lo, hi = block
        for pos in range(lo, hi):
            rel = unit.members[pos]
            rec = ImageRecord(pos, rel, unit.file + pos)
            try:
                rec.data = read_regular(os.path.join(unit.root, rel))
                rec.length = len(rec.data)
            except BadItem as exc:
                rec.error = str(exc)
            yield rec
    elif unit.fmt == "webdataset":
        yield from (_tar_records if _plain_tar(unit.abspath) else _tar_stream_records)(unit)
    elif unit.fmt == "parquet":
        yield from _parquet_image_records(unit, block)
    elif unit.fmt == "tsv":
        yield from _tsv_records(unit, *block)
    else:  # pragma: no cover - formats are validated when the source is resolved
        raise ValueError(unit.fmt)


def _split_member(name: str) -> tuple[str, str]:
    """WebDataset convention: `dir/KEY.EXT` -> (`dir/KEY`, `.ext`), splitting at the basename's first dot."""
    base = os.path.basename(name)
    stem, _, ext = base.partition(".")
    return name[: len(name) - len(base)] + stem, "." + ext.lower()


def _tar_records(unit: Unit) -> Iterator[ImageRecord]:
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


def _tar_stream_records(unit: Unit) -> Iterator[ImageRecord]:
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


def _parquet_blocks(unit: Unit) -> list:
    """Row groups overlapping the unit's rows, as (row group, first row, stop row) in file rows."""
    import pyarrow.parquet as pq

    try:
        meta = pq.ParquetFile(unit.abspath).metadata
    except Exception as exc:  # noqa: BLE001 - any damage ends in one recorded error for the unit
        return [("error", f"unreadable Parquet {unit.path}: {exc}")]
    out, first = [], 0
    for rg in range(meta.num_row_groups):
        n = meta.row_group(rg).num_rows
        lo, hi = max(unit.start, first), min(unit.stop, first + n)
        if lo < hi:
            out.append((rg, lo, hi))
        first += n
    return out or [(None, 0, 0)]


def _parquet_image_records(unit: Unit, block) -> Iterator[ImageRecord]:
    import pyarrow.parquet as pq

    if block[0] == "error":
        yield ImageRecord(unit.start, "", unit.file, error=block[1])
        return
    rg, lo, hi = block
    if rg is None:
        return
    col, key_col = unit.options["image_column"], unit.options.get("key_column")
    base = os.path.dirname(unit.abspath)
    try:
        table = _row_group(pq.ParquetFile(unit.abspath), rg, [col] + ([key_col] if key_col else []), lo, hi)
    except Exception as exc:  # noqa: BLE001 - a damaged page: every row of the block is recorded
        for row in range(lo, hi):
            yield ImageRecord(row, None, unit.file, error=f"unreadable Parquet row group {rg} (row {row}): {_one_line(exc)}")
        return
    values = table.column(col).to_pylist()
    keys = table.column(key_col).to_pylist() if key_col else [None] * len(values)
    for i, (key, value) in enumerate(zip(keys, values)):
        row = lo + i
        rec = ImageRecord(row, _key(key, row, key_col), unit.file)
        try:
            rec.data = _parquet_payload(value, base)
            rec.length = len(rec.data)
        except BadItem as exc:
            rec.error = str(exc)
        yield rec


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split())[:200]


def _key(value, row: int, key_col: str | None) -> str | None:
    """A Parquet row's key: its key cell as text (None when the cell is null), or the row number
    when the file has no key column."""
    if key_col is None:
        return str(row)
    return None if value is None else str(value)


def _row_group(pf, rg: int, cols: list[str], lo: int, hi: int):
    first = sum(pf.metadata.row_group(i).num_rows for i in range(rg))
    return pf.read_row_group(rg, columns=cols).slice(lo - first, hi - lo)


def _parquet_payload(value, base: str) -> bytes:
    """A Parquet image cell: bytes, a path (relative to the Parquet file), or a {bytes, path} struct."""
    if isinstance(value, dict):  # HF-datasets style struct {bytes, path}
        value = value.get("bytes") or value.get("path")
    if value is None:
        raise BadItem("null image")
    if isinstance(value, (bytes, bytearray)):
        if not value:
            raise BadItem("zero-byte file")
        return bytes(value)
    if isinstance(value, str):
        data = read_regular(value if os.path.isabs(value) else os.path.join(base, value))
        if not data:
            raise BadItem("zero-byte file")
        return data
    raise BadItem(f"image cell holds {type(value).__name__}, not bytes or a path")


def _tsv_records(unit: Unit, lo: int, hi: int) -> Iterator[ImageRecord]:
    """Lines whose first byte lies in [lo, hi): byte ranges split a file without an index."""
    try:
        f = open(unit.abspath, "rb")
    except OSError as exc:
        yield ImageRecord(lo, "", unit.file, error=f"unreadable file: {exc.strerror}")
        return
    with f:
        if lo > 0:
            f.seek(lo - 1)
            f.readline()  # finish the line that straddles `lo`; it belongs to the previous block
        while (start := f.tell()) < hi:
            line = f.readline()
            if not line:
                break
            body = line.rstrip(b"\r\n")
            if not body:
                continue
            key, tab, rest = body.partition(b"\t")
            rec = ImageRecord(start, key.decode("utf-8", "replace"), unit.file)
            if not tab:
                rec.error = "no tab-separated image column"
            else:
                rec.offset, rec.length = start + len(key) + 1, len(rest)
                rec.data = (B64, rest.decode("ascii", "replace"))
            yield rec


# ----------------------------------------------------------------------------------------- texts


def _named_members(tf) -> Iterator[tuple[tarfile.TarInfo, str, str]]:
    """A tar's regular-file members whose name has an extension, each with its (key, extension)."""
    for member in tf:
        if member.isfile() and "." in os.path.basename(member.name):
            yield (member, *_split_member(member.name))


def tar_text_records(path: str, opts: dict) -> Iterator[tuple[int, str, str | None, str | None]]:
    """Captions of a WebDataset tar as sentences: per key, its `.txt` member, else the `text_field`
    (default `caption`) of its `.json` member; keys with neither are recorded. (pos, key, text, error)."""
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
        yield len(order), "", None, f"unreadable tar: {exc}"
    for pos, key in enumerate(order):
        members = groups[key]
        if ".txt" in members:
            try:
                yield pos, key, *check_text(members[".txt"].decode("utf-8"))
            except UnicodeDecodeError as exc:
                yield pos, key, None, f"invalid UTF-8 at byte {exc.start}"
        elif ".json" in members:
            try:
                obj = json.loads(members[".json"])
            except ValueError as exc:
                yield pos, key, None, f"invalid JSON: {exc}"
                continue
            value = obj.get(field) if isinstance(obj, dict) else None
            if not isinstance(value, str):
                yield pos, key, None, f"missing field {field!r}" if value is None else f"field {field!r} is not a string"
            else:
                yield pos, key, *check_text(value)
        else:
            yield pos, key, None, "no caption member (.txt or .json)"


def text_records(unit: Unit) -> Iterator[tuple[int, str, str | None, str | None]]:
    """Yield (pos, key, text, error) for every item of a text unit (lines or rows [start, stop))."""
    opts = unit.options
    if unit.fmt == "webdataset":
        yield from tar_text_records(unit.abspath, opts)
        return
    if unit.fmt == "parquet":
        import pyarrow.parquet as pq

        pf = pq.ParquetFile(unit.abspath)
        key_col = opts.get("key_column")
        for row, key, value, err in parquet_rows(pf, unit.start, unit.stop, opts["text_column"], key_col):
            if err is not None:  # the row group could not be read: its keys are unknown too
                yield row, None, None, err
            else:
                yield row, _key(key, row, key_col), *parquet_text(value)
        return
    pos = 0
    with open(unit.abspath, "rb") as f:
        f.seek(unit.offset)
        for lineno in range(unit.start, unit.stop):
            raw = f.readline()
            if not raw:
                break
            for key, text, err in text_line(unit.fmt, lineno, raw, opts):
                yield pos, key, text, err
                pos += 1


def parquet_rows(pf, start: int, stop: int, col: str, key_col: str | None):
    """Rows [start, stop) of a Parquet file as (row, key, value, error), reading only the row groups
    that overlap; every row of a row group that cannot be read comes with the reason."""
    cols = [col] + ([key_col] if key_col else [])
    first = 0
    for rg in range(pf.metadata.num_row_groups):
        n = pf.metadata.row_group(rg).num_rows
        lo, hi = max(start, first), min(stop, first + n)
        if lo < hi:
            try:
                table = pf.read_row_group(rg, columns=cols).slice(lo - first, hi - lo)
                values = table.column(col).to_pylist()
                keys = table.column(key_col).to_pylist() if key_col else [None] * len(values)
            except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for a damaged page
                for row in range(lo, hi):
                    yield row, None, None, f"unreadable Parquet row group {rg} (row {row}): {_one_line(exc)}"
            else:
                for i, (k, v) in enumerate(zip(keys, values)):
                    yield lo + i, k, v, None
        first += n
        if first >= stop:
            break


def parquet_text(value) -> tuple[str | None, str | None]:
    """A Parquet text cell as (text, error): only strings are sentences (an int or a list is refused,
    not turned into its string form)."""
    if value is None:
        return None, "null text"
    if not isinstance(value, str):
        return None, f"text cell holds {type(value).__name__}, not a string"
    return check_text(value)


def text_lines(path: str, fmt: str, opts: dict) -> Iterator[tuple[int, int, list]]:
    """Whole-file scan for planning: (line number, byte offset, records of that line)."""
    with open(path, "rb") as f:
        lineno, offset = 0, 0
        for raw in f:
            yield lineno, offset, list(text_line(fmt, lineno, raw, opts))
            offset += len(raw)
            lineno += 1


def text_line(fmt: str, lineno: int, raw: bytes, opts: dict):
    """The (key, text, error) records of one line of a txt, JSONL or TSV sentence file."""
    raw = raw.rstrip(b"\r\n")
    if lineno == 0 and raw.startswith(b"\xef\xbb\xbf"):  # a UTF-8 byte-order mark is not text
        raw = raw[3:]
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        yield str(lineno + 1), None, f"invalid UTF-8 at byte {exc.start}"
        return
    if fmt == "txt":
        yield str(lineno + 1), *check_text(line)
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
        key = str(lineno + 1)
        if key_field and isinstance(obj, dict) and key_field in obj:
            key = None if obj[key_field] is None else str(obj[key_field])
        if not isinstance(obj, dict) or field not in obj:
            yield key, None, f"missing field {field!r}"
        elif not isinstance(obj[field], str):
            yield key, None, f"field {field!r} is not a string"
        else:
            yield key, *check_text(obj[field])
    elif fmt == "tsv":
        key, tab, rest = line.partition("\t")
        if not tab:
            yield key or str(lineno + 1), None, "no tab-separated text column"
            return
        if "\t" in rest:
            yield key, None, f"{line.count(chr(9)) + 1} tab-separated fields, expected 2 (key, text)"
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
                yield f"{key}#{i}", *(check_text(cap) if isinstance(cap, str) else (None, "caption is not a string"))
        else:
            yield key, *check_text(rest)


def check_text(text: str) -> tuple[str | None, str | None]:
    text = text.strip()
    if not text:
        return None, "empty or whitespace-only sentence"
    if "\x00" in text:
        return None, "NUL byte in sentence"
    return text, None
