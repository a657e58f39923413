"""Parquet files: a row per item; images as bytes, paths or {bytes, path} structs; sentences as strings.

Units are row ranges of --shard-size rows; an image unit's read blocks are its row groups. A
Parquet cell has no byte address (a row can only be read with its whole row group), so stage one
copies image bytes into the cache (packed) and stage two reads them there.
"""

from __future__ import annotations

import os
from typing import Iterator

from dimefm_pipeline.core.errors import DimefmError
from dimefm_pipeline.formats.base import (TEXT_FIELDS, ImageRecord, Limits, Listing, SourceFormat, TextRecord, Unit, check_text,
                                          key_text, one_line)
from dimefm_pipeline.formats.files import BadItem, check_size, read_regular, size_text

IMAGE_COLUMNS = ("image", "jpg", "png", "webp", "img", "image_bytes", "bytes", "image_path", "path", "filepath")
KEY_COLUMNS = ("key", "__key__", "id")


READ_ROWS = 64  # rows turned into Python objects at a time
# pyarrow reads a row group's column whole, holding about 4 times its bytes while it does: a row group
# whose image (or sentence) column is larger than this is recorded row by row, unread.
MAX_ROW_GROUP_BYTES = {"image": 256 << 20, "text": 64 << 20}
MAX_TEXT_BYTES = 4 << 20  # a sentence cell longer than this is recorded, as a sentence line would be


class TooLarge(int):
    """A cell over the size limit, in place of its value (its size in bytes): never made a Python object."""


def _column_size(pf, rg: int, col: str) -> int:
    """Uncompressed bytes of one column of a row group, from the file's metadata (nothing read)."""
    meta = pf.metadata.row_group(rg)
    for i in range(meta.num_columns):
        c = meta.column(i)
        if c.path_in_schema.split(".")[0] == col:
            return c.total_uncompressed_size
    return 0


def open_file(path: str, col: str):
    """A Parquet file to read `col` from; a column of bytes or text is read as a dictionary, as it may
    be stored, so a value repeated a million times is not decoded a million times."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(path)
    kind = pf.schema_arrow.field(col).type if col in pf.schema_arrow.names else None
    if kind is None or not any(f(kind) for f in (pa.types.is_binary, pa.types.is_string, pa.types.is_large_binary,
                                                 pa.types.is_large_string, pa.types.is_dictionary)):
        return pf
    return pq.ParquetFile(path, read_dictionary=[col])


def _cells(column, max_cell: int) -> list:
    """The Python values of a column slice; a bytes or text cell over `max_cell` as TooLarge(size)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    codes, values = None, column
    if pa.types.is_dictionary(column.type):
        codes, values = column.indices.to_pylist(), column.dictionary
    if not any(f(values.type) for f in (pa.types.is_binary, pa.types.is_string, pa.types.is_large_binary,
                                        pa.types.is_large_string)):
        return column.to_pylist()
    sizes = pc.binary_length(values).to_pylist()
    codes = codes if codes is not None else range(len(values))
    return [None if i is None else TooLarge(sizes[i]) if sizes[i] > max_cell else values[i].as_py() for i in codes]


def rows(pf, start: int, stop: int, col: str, key_col: str | None, max_cell: int, max_group: int):
    """Rows [start, stop) of a Parquet file as (row, key, value, error), reading only the row groups
    that overlap. A row group is read whole (pyarrow's unit of reading), so one whose `col` holds more
    than `max_group` bytes is not read: its rows come with that reason; a cell over `max_cell` comes
    as TooLarge(size). Every row of a row group that cannot be read comes with the reason (rows given
    before the damage was met stay as they were)."""
    cols = [col] + ([key_col] if key_col else [])
    first = 0
    for rg in range(pf.metadata.num_row_groups):
        n = pf.metadata.row_group(rg).num_rows
        lo, hi = max(start, first), min(stop, first + n)
        size = _column_size(pf, rg, col) if lo < hi else 0
        if lo < hi and size > max_group:
            for r in range(lo, hi):
                yield r, None, None, (f"too large: Parquet row group {rg} holds {size_text(size)} of {col!r}, over "
                                      f"{size_text(max_group)}: rewrite the file with smaller row groups")
        elif lo < hi:
            row = first
            try:
                for batch in pf.iter_batches(batch_size=READ_ROWS, row_groups=[rg], columns=cols, use_threads=False):
                    a, b = max(lo, row), min(hi, row + batch.num_rows)
                    if a < b:
                        part = batch.slice(a - row, b - a)
                        values = _cells(part.column(col), max_cell)
                        keys = part.column(key_col).to_pylist() if key_col else [None] * len(values)
                        for i, (k, v) in enumerate(zip(keys, values)):
                            yield a + i, k, v, None
                    row += batch.num_rows
                    if row >= hi:
                        break
            except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for a damaged page
                for r in range(max(lo, row), hi):
                    yield r, None, None, f"unreadable Parquet row group {rg} (row {r}): {one_line(exc)}"
        first += n
        if first >= stop:
            break


def _key(value, row: int, key_col: str | None) -> str | None:
    """A row's key: its key cell as text (`key_text`; None when the cell is null), or the row number
    when the file has no key column."""
    if key_col is None:
        return str(row)
    return key_text(value)


def _image_bytes(value, base: str, limits: Limits) -> bytes:
    """An image cell: bytes, a path (relative to the Parquet file), or a {bytes, path} struct."""
    if isinstance(value, dict):  # HF-datasets style struct {bytes, path}
        value = value.get("bytes") or value.get("path")
    if value is None:
        raise BadItem("null image")
    if isinstance(value, TooLarge):
        check_size(int(value), limits.max_bytes)
    if isinstance(value, (bytes, bytearray)):
        if not value:
            raise BadItem("zero-byte file")
        check_size(len(value), limits.max_bytes)
        return bytes(value)
    if isinstance(value, str):
        data = read_regular(value if os.path.isabs(value) else os.path.join(base, value), max_bytes=limits.max_bytes)
        if not data:
            raise BadItem("zero-byte file")
        return data
    raise BadItem(f"image cell holds {type(value).__name__}, not bytes or a path")


def parquet_text(value) -> tuple[str | None, str | None]:
    """A text cell as (text, error): only strings are sentences (an int or a list is refused, not
    turned into its string form)."""
    if value is None:
        return None, "null text"
    if isinstance(value, TooLarge):
        return None, f"text too long: {size_text(int(value))} > {size_text(MAX_TEXT_BYTES)}"
    if not isinstance(value, str):
        return None, f"text cell holds {type(value).__name__}, not a string"
    return check_text(value)


def _texts(pf, start: int, stop: int, options: dict) -> Iterator:
    key_col = options.get("key_column")
    yield Listing(tuple(range(start, stop)))
    for row, key, value, err in rows(pf, start, stop, options["text_column"], key_col, MAX_TEXT_BYTES,
                                     MAX_ROW_GROUP_BYTES["text"]):
        if err is not None:  # the row group could not be read: its keys are unknown too
            yield TextRecord(row, None, None, err, row)
        else:
            yield TextRecord(row, _key(key, row, key_col), *parquet_text(value), row)


def _columns(path: str, modality: str, options: dict) -> dict:
    """The options with the image or text column and the key column named (guessed when not given)."""
    import pyarrow.parquet as pq

    try:
        names = pq.read_schema(path).names
    except Exception as exc:
        raise DimefmError(f"cannot read Parquet {path}: {exc}") from None
    out = dict(options)
    wanted = "image_column" if modality == "image" else "text_column"
    if wanted not in out:
        guesses = IMAGE_COLUMNS if modality == "image" else TEXT_FIELDS  # the one used is recorded with the source
        found = [c for c in guesses if c in names]
        if not found:
            raise DimefmError(f"{path} has no {modality} column (columns: {', '.join(names)}); pass --{wanted.replace('_', '-')}")
        out[wanted] = found[0]
    if out[wanted] not in names:
        raise DimefmError(f"{path} has no column {out[wanted]!r} (columns: {', '.join(names)})")
    if "key_column" not in out:
        keys = [c for c in KEY_COLUMNS if c in names]
        if keys:
            out["key_column"] = keys[0]
    elif out["key_column"] not in names:
        raise DimefmError(f"{path} has no column {out['key_column']!r} (columns: {', '.join(names)})")
    return out


class Parquet(SourceFormat):
    name = "parquet"
    suffixes = {"image": (".parquet",), "text": (".parquet",)}
    text_option = "--text-column"

    def options(self, path: str, modality: str, options: dict) -> dict:
        return _columns(path, modality, options)

    def image_ranges(self, path: str, size: int, shard_size: int) -> list[tuple[int, int]]:
        import pyarrow.parquet as pq

        try:
            n = pq.ParquetFile(path).metadata.num_rows
        except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for damaged files
            raise DimefmError(f"cannot read Parquet {path}: {exc}") from None
        return [(lo, min(lo + shard_size, n)) for lo in range(0, n, shard_size)]

    def planned_records(self, unit: Unit) -> int:
        return unit.stop - unit.start

    def blocks(self, unit: Unit, batch_size: int) -> list:
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

    def image_records(self, unit: Unit, block, limits: Limits = Limits()) -> Iterator:
        if block[0] == "error":  # the file cannot be read: every row of the unit is recorded
            yield Listing(tuple(range(unit.start, unit.stop)))
            for row in range(unit.start, unit.stop):
                yield ImageRecord(row, None, unit.file, error=f"{block[1]} (row {row})")
            return
        rg, lo, hi = block
        yield Listing(tuple(range(lo, hi)))
        if rg is None:
            return
        col, key_col = unit.options["image_column"], unit.options.get("key_column")
        try:
            pf = open_file(unit.abspath, col)
        except Exception as exc:  # noqa: BLE001 - a damaged file: every row of the block is recorded
            for row in range(lo, hi):
                yield ImageRecord(row, None, unit.file, error=f"unreadable Parquet row group {rg} (row {row}): {one_line(exc)}")
            return
        base = os.path.dirname(unit.abspath)
        for row, key, value, err in rows(pf, lo, hi, col, key_col, limits.max_bytes, MAX_ROW_GROUP_BYTES["image"]):
            rec = ImageRecord(row, None if err else _key(key, row, key_col), unit.file, error=err)
            if err is None:
                try:
                    rec.data = _image_bytes(value, base, limits)
                    rec.length = len(rec.data)
                except BadItem as exc:
                    rec.error = str(exc)
            yield rec

    def packed(self, unit: Unit) -> bool:
        return True

    def scan_texts(self, path: str, options: dict) -> Iterator[tuple[int, int, list]]:
        pf = open_file(path, options["text_column"])
        for rec in _texts(pf, 0, pf.metadata.num_rows, options):
            if not isinstance(rec, Listing):
                yield rec.pos, 0, [(rec.key, rec.text, rec.error)]

    def text_records(self, unit: Unit) -> Iterator[TextRecord]:
        yield from _texts(open_file(unit.abspath, unit.options["text_column"]), unit.start, unit.stop, unit.options)


FORMATS = (Parquet(),)
