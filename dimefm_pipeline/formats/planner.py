"""Resolve a source argument to a SourceSpec, and split it into deterministic units of work."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field

import numpy as np

from dimefm_pipeline.core.errors import DimefmError
from dimefm_pipeline.formats.base import (
    IMAGE_EXTS,
    FileEntry,
    SourceSpec,
    Unit,
    common_root,
    expand_pattern,
    file_entries,
    fingerprint_files,
    list_image_folder,
    pack_mask,
)
from dimefm_pipeline.formats.readers import parquet_rows, parquet_text, text_lines

TSV_IMAGE_CHUNK_BYTES = 256 << 20  # image TSVs are split by byte range: no line index needed
IMAGE_COLUMNS = ("image", "jpg", "png", "webp", "img", "image_bytes", "bytes", "image_path", "path", "filepath")
KEY_COLUMNS = ("key", "__key__", "id")
TEXT_FIELDS = ("text", "caption", "sentence")  # guessed in this order; the one used is recorded with the source


@dataclass
class Plan:
    """A planned source: its units, its file table and what planning learned about it."""

    units: list[Unit]
    files: list[FileEntry]
    fingerprint: str
    duplicates: int = 0  # exact-duplicate sentences skipped (text only)
    problems: list = field(default_factory=list)  # (key, reason) found while listing: recorded as errors
    other_files: dict = field(default_factory=dict)  # extension -> files of a folder that are not images


def resolve_sources(args, modality: str, options: dict | None = None) -> list[SourceSpec]:
    """Every source of one command: a pattern matching folders gives one image source per folder; a
    source given twice is a user error (encoding it twice would cache its items twice)."""
    specs: list[SourceSpec] = []
    for arg in args:
        if modality == "image" and not os.path.exists(arg):
            hits = expand_pattern(arg)
            folders = [h for h in hits if os.path.isdir(h)]
            if folders and len(folders) < len(hits):
                raise DimefmError(f"{arg} matches folders and files: give the folders and the files as separate sources")
            if folders:
                specs.extend(resolve_source(f, modality, options) for f in folders)
                continue
        specs.append(resolve_source(arg, modality, options))
    seen: dict[str, int] = {}
    for i, spec in enumerate(specs):
        if spec.uri in seen:
            raise DimefmError(f"{spec.uri} is given twice in one command")
        seen[spec.uri] = i
    return specs


def resolve_source(arg: str, modality: str, options: dict | None = None) -> SourceSpec:
    """Expand and classify one source argument; a bad path or format is a user error."""
    options = {k: v for k, v in (options or {}).items() if v is not None}
    files = expand_pattern(arg)
    uri = os.path.abspath(arg)
    if modality == "image" and len(files) == 1 and os.path.isdir(files[0]):
        return SourceSpec(uri, modality, "folder", files[0], (), options)
    fmts = {_format_of(f, modality) for f in files}
    if len(fmts) != 1:
        raise DimefmError(f"{arg} mixes formats ({', '.join(sorted(fmts))}): give one source per format")
    fmt = fmts.pop()
    if fmt == "parquet":
        options = _parquet_columns(files[0], modality, options)
    elif fmt == "jsonl" and "text_field" not in options:
        options = {**options, "text_field": _jsonl_field(files[0])}
    elif fmt == "webdataset" and modality == "text":
        options = {"text_field": "caption", **options}  # of `.json` members; a `.txt` member wins
    root = common_root(files)
    return SourceSpec(uri, modality, fmt, root, tuple(os.path.relpath(f, root) for f in files), options)


def _format_of(path: str, modality: str) -> str:
    low = path.lower()
    if os.path.isdir(path):
        raise DimefmError(f"{path} is a folder: only image sources can be folders")
    table = {
        "image": {".tar": "webdataset", ".tgz": "webdataset", ".tar.gz": "webdataset", ".parquet": "parquet", ".tsv": "tsv"},
        "text": {".txt": "txt", ".jsonl": "jsonl", ".json": "jsonl", ".parquet": "parquet", ".tsv": "tsv",
                 ".tar": "webdataset", ".tgz": "webdataset", ".tar.gz": "webdataset"},
    }[modality]
    for ext, fmt in sorted(table.items(), key=lambda kv: -len(kv[0])):
        if low.endswith(ext):
            return fmt
    raise DimefmError(f"unsupported {modality} source {path}: expected one of {', '.join(sorted(table))}")


def _jsonl_field(path: str) -> str:
    """The sentence field of a JSONL file, from its first JSON object: the first of TEXT_FIELDS it has."""
    import json

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


def _parquet_columns(path: str, modality: str, options: dict) -> dict:
    import pyarrow.parquet as pq

    try:
        names = pq.read_schema(path).names
    except Exception as exc:
        raise DimefmError(f"cannot read Parquet {path}: {exc}") from None
    out = dict(options)
    wanted = "image_column" if modality == "image" else "text_column"
    if wanted not in out:
        guesses = IMAGE_COLUMNS if modality == "image" else TEXT_FIELDS
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


class SeenHashes:
    """Content hashes of sentences already cached or planned, for exact-duplicate skipping.

    Kept as a few sorted int64 arrays (8 bytes per sentence; a Python set of the same ints takes
    about 70), merged as they grow, so 28M sentences cost about 230 MB (docs/benchmarks.md).
    """

    def __init__(self, existing=()):
        existing = np.sort(np.asarray(existing, dtype=np.int64))
        self.runs: list[np.ndarray] = [existing] if len(existing) else []

    def __len__(self) -> int:
        return sum(len(r) for r in self.runs)

    def contains(self, h: np.ndarray) -> np.ndarray:
        found = np.zeros(len(h), dtype=bool)
        for run in self.runs:
            pos = np.minimum(np.searchsorted(run, h), len(run) - 1)
            found |= run[pos] == h
        return found

    def keep(self, hashes: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """Keep flags of a chunk of records: a valid sentence is kept the first time its hash is seen
        (within the chunk and ever before); an invalid record is kept so encoding records its error."""
        h = hashes[valid]
        first = np.zeros(len(h), dtype=bool)
        first[np.unique(h, return_index=True)[1]] = True
        new = first & ~self.contains(h)
        self._add(h[new])
        keep = np.ones(len(hashes), dtype=bool)
        keep[valid] = new
        return keep

    def _add(self, h: np.ndarray) -> None:
        if not len(h):
            return
        self.runs.append(np.sort(h))
        while len(self.runs) > 1 and len(self.runs[-2]) <= 2 * len(self.runs[-1]):  # merge runs of like size
            b, a = self.runs.pop(), self.runs.pop()
            self.runs.append(np.sort(np.concatenate([a, b]), kind="mergesort"))


def plan_source(spec: SourceSpec, source_id: int, shard_size: int, seen_hashes: SeenHashes | None = None) -> Plan:
    """Split a source into units of at most `shard_size` items (one tar is one unit).

    Text planning scans the whole source once: exact-duplicate sentences (within this source, and
    against `seen_hashes`, which it extends) are masked out so each distinct sentence is encoded once.
    """
    if spec.modality == "image":
        return _plan_images(spec, source_id, shard_size)
    return _plan_texts(spec, source_id, shard_size, seen_hashes if seen_hashes is not None else SeenHashes())


def _unit(spec: SourceSpec, source_id: int, index: int, path: str, file: int, **kw) -> Unit:
    return Unit(source_id, index, spec.modality, spec.fmt, spec.root, path, file, options=spec.options, **kw)


def _plan_images(spec: SourceSpec, source_id: int, shard_size: int) -> Plan:
    units: list[Unit] = []
    if spec.fmt == "folder":
        listing = list_image_folder(spec.root)
        entries = listing.entries
        if not entries:
            others = ", ".join(f"{n} {ext}" for ext, n in listing.other_files.items()) or "no files"
            raise DimefmError(f"no images ({', '.join(e[1:] for e in IMAGE_EXTS)}) under {spec.root} ({others})")
        members = [e.path for e in entries]
        for i in range(0, len(members), shard_size):
            units.append(_unit(spec, source_id, len(units), "", i, members=tuple(members[i : i + shard_size])))
        return Plan(units, entries, fingerprint_files(entries), problems=listing.problems, other_files=listing.other_files)
    entries = file_entries(spec.root, spec.files)
    for file, rel in enumerate(spec.files):
        path = os.path.join(spec.root, rel)
        if spec.fmt == "webdataset":
            units.append(_unit(spec, source_id, len(units), rel, file))
        elif spec.fmt == "parquet":
            n = _parquet_num_rows(path)
            units.extend(_unit(spec, source_id, len(units) + j, rel, file, start=lo, stop=min(lo + shard_size, n))
                         for j, lo in enumerate(range(0, n, shard_size)))
        elif spec.fmt == "tsv":
            size = entries[file].size
            for lo in range(0, max(size, 1), TSV_IMAGE_CHUNK_BYTES):
                units.append(_unit(spec, source_id, len(units), rel, file, start=lo, stop=min(lo + TSV_IMAGE_CHUNK_BYTES, size)))
    return Plan(units, entries, fingerprint_files(entries))


def _parquet_num_rows(path: str) -> int:
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(path).metadata.num_rows
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for damaged files
        raise DimefmError(f"cannot read Parquet {path}: {exc}") from None


def planned_records(unit: Unit) -> int | None:
    """Records a unit will yield when that is known before reading it (None for tars and image TSVs)."""
    if unit.fmt == "folder":
        return len(unit.members)
    if unit.fmt == "parquet" or unit.modality == "text":
        return unit.stop - unit.start
    return None


def text_hash(text: str) -> int:
    """64-bit content hash used for exact-duplicate detection (stored in the manifest)."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little", signed=True)


def _plan_texts(spec: SourceSpec, source_id: int, shard_size: int, seen: SeenHashes) -> Plan:
    units: list[Unit] = []
    duplicates, valid, first_error = 0, 0, None
    entries = file_entries(spec.root, spec.files)
    for file, rel in enumerate(spec.files):
        path = os.path.join(spec.root, rel)

        def close(start, stop, offset, texts):
            nonlocal duplicates
            ok = np.array([t is not None for t in texts], dtype=bool)
            hashes = np.array([text_hash(t) if t is not None else 0 for t in texts], dtype=np.int64)
            keep = seen.keep(hashes, ok)
            duplicates += int((~keep).sum())
            units.append(_unit(spec, source_id, len(units), rel, file, start=start, stop=stop, offset=offset, keep=pack_mask(keep)))

        if spec.fmt == "webdataset":
            from dimefm_pipeline.formats.readers import tar_text_records

            texts = []
            for _, _, text, err in tar_text_records(path, spec.options):
                valid += text is not None
                first_error = first_error or err
                texts.append(text)
            close(0, len(texts), 0, texts)
            continue
        if spec.fmt == "parquet":
            import pyarrow.parquet as pq

            pf = pq.ParquetFile(path)
            n = pf.metadata.num_rows
            col, key_col = spec.options["text_column"], spec.options.get("key_column")
            for lo in range(0, n, shard_size):
                texts = []
                for _, _, value, err in parquet_rows(pf, lo, min(lo + shard_size, n), col, key_col):
                    text, err = parquet_text(value) if err is None else (None, err)
                    valid += text is not None
                    first_error = first_error or err
                    texts.append(text)
                close(lo, min(lo + shard_size, n), 0, texts)
            continue
        start, offset, texts = 0, 0, []
        lineno = -1
        for lineno, line_offset, records in text_lines(path, spec.fmt, spec.options):
            if lineno - start == shard_size:
                close(start, lineno, offset, texts)
                start, offset, texts = lineno, line_offset, []
            for _, text, err in records:
                valid += text is not None
                first_error = first_error or err
                texts.append(text)
        if lineno >= start:
            close(start, lineno + 1, offset, texts)
    if not units:
        raise DimefmError(f"{spec.uri} holds no sentences")
    if not valid:
        hint = {"jsonl": "--text-field", "parquet": "--text-column", "webdataset": "--text-field"}.get(spec.fmt)
        raise DimefmError(f"every record of {spec.uri} would be skipped ({first_error})"
                          + (f": is {hint} right?" if hint else ""))
    return Plan(units, entries, fingerprint_files(entries), duplicates)
