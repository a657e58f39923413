"""TSV files: the reference's image layout (key, base64 image) and sentences (key, text; or key and a
JSON object with a `captions` list, one item per caption).

Image TSVs are split by byte range (no line index needed): units of 256 MiB, read blocks of 16 MiB,
a line belonging to the block that holds its first byte. An image's locator is its base64 field,
read in place by stage two. Sentence TSVs are read line by line like the other sentence files.
"""

from __future__ import annotations

from typing import Iterator

from dimefm_pipeline.formats.base import B64, ImageRecord, Limits, Listing, Unit, check_text, key_text
from dimefm_pipeline.formats.files import size_text
from dimefm_pipeline.formats.lines import LineFormat, parse_json

UNIT_BYTES = 256 << 20  # image TSVs are split into units by byte range
BLOCK_BYTES = 16 << 20  # read block of an image TSV: a line belongs to the block holding its first byte


def _field_limit(limits: Limits) -> int:
    """The longest line an image TSV may hold: a key and the base64 form of --max-image-bytes."""
    return 4 * (limits.max_bytes // 3 + 1) + 4096


def _line_starts(f, lo: int, hi: int) -> list[int]:
    """Byte offsets of the lines with something on them whose first byte lies in [lo, hi): a plain scan
    of the block, the list its records are held to."""
    f.seek(max(lo - 1, 0))
    if lo > 0:
        _skip_line(f, hi)
    starts = []
    while (start := f.tell()) < hi:
        head = f.read(64)
        if not head:
            break
        first = head.split(b"\n", 1)[0]
        if first.strip(b"\r") or (b"\n" not in head and len(head) == 64):  # not a line of line breaks only
            starts.append(start)
        f.seek(start)
        _skip_line(f)
    return starts


def _skip_line(f, until: int | None = None) -> None:
    """Read past the end of the current line, or stop at byte `until` (the end of a block): a line
    that straddles many blocks is read once, not once per block."""
    while (part := f.readline(1 << 20)) and not part.endswith(b"\n"):
        if until is not None and f.tell() >= until:
            return


def _image_lines(unit: Unit, lo: int, hi: int, limits: Limits) -> Iterator:
    """Lines whose first byte lies in [lo, hi): byte ranges split a file without an index."""
    try:
        f = open(unit.abspath, "rb")
    except OSError as exc:
        yield Listing((lo,))
        yield ImageRecord(lo, "", unit.file, error=f"unreadable file: {exc.strerror}")
        return
    limit = _field_limit(limits)
    with f:
        yield Listing(tuple(_line_starts(f, lo, hi)))
        f.seek(max(lo - 1, 0))
        if lo > 0:
            _skip_line(f, hi)  # finish the line that straddles `lo`; it belongs to the previous block
        while (start := f.tell()) < hi:
            line = f.readline(limit + 1)
            if not line:
                break
            if len(line) > limit and not line.endswith(b"\n"):
                _skip_line(f)
                key = line.partition(b"\t")[0][:200]
                yield ImageRecord(start, key_text(key), unit.file, error=f"too large: the line is over {size_text(limit)} "
                                  f"(--max-image-bytes {size_text(limits.max_bytes)} as base64)")
                continue
            body = line.rstrip(b"\r\n")
            if not body:
                continue
            key, tab, rest = body.partition(b"\t")
            rec = ImageRecord(start, key_text(key), unit.file)
            if not tab:
                rec.error = "no tab-separated image column"
            else:
                rec.offset, rec.length = start + len(key) + 1, len(rest)
                rec.data = (B64, rest.decode("ascii", "replace"))
            yield rec


class Tsv(LineFormat):
    name = "tsv"
    suffixes = {"image": (".tsv",), "text": (".tsv",)}

    def image_ranges(self, path: str, size: int, shard_size: int) -> list[tuple[int, int]]:
        return [(lo, min(lo + UNIT_BYTES, size)) for lo in range(0, max(size, 1), UNIT_BYTES)]

    def blocks(self, unit: Unit, batch_size: int) -> list:
        return [(lo, min(lo + BLOCK_BYTES, unit.stop)) for lo in range(unit.start, unit.stop, BLOCK_BYTES)] or [(0, 0)]

    def image_records(self, unit: Unit, block, limits: Limits = Limits()) -> Iterator:
        yield from _image_lines(unit, *block, limits)

    def payload(self, data: bytes):
        return B64, data.decode("ascii")  # the base64 field as stage one read it

    def parse(self, lineno: int, line: str, options: dict):
        key, tab, rest = line.partition("\t")
        if not tab:
            yield key or str(lineno + 1), None, "no tab-separated text column"
            return
        if "\t" in rest:
            yield key, None, f"{line.count(chr(9)) + 1} tab-separated fields, expected 2 (key, text)"
            return
        stripped = rest.strip()
        if not stripped.startswith("{"):
            yield key, *check_text(rest)
            return
        obj, err = parse_json(stripped)
        if err:
            yield key, None, err
            return
        caps = obj.get("captions") if isinstance(obj, dict) else None
        if not isinstance(caps, list):
            yield key, None, "JSON column has no 'captions' list"
            return
        if not caps:
            yield key, None, "empty 'captions' list"
            return
        for i, cap in enumerate(caps):
            yield f"{key}#{i}", *(check_text(cap) if isinstance(cap, str) else (None, "caption is not a string"))


FORMATS = (Tsv(),)
