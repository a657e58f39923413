"""Resolve a source argument to a SourceSpec of one format, and split it into deterministic units.

The format of a file is found by its name (each format lists its suffixes); a folder is an image
folder. Planning a sentence source also masks exact duplicates, so each distinct sentence is encoded
once (`SeenHashes`).
"""

from __future__ import annotations

import os

import numpy as np

from dimefm_pipeline.core.errors import DimefmError
from dimefm_pipeline.formats import format_named, registry
from dimefm_pipeline.formats.base import Plan, SourceSpec, Unit, pack_mask, text_hash, unit_of
from dimefm_pipeline.formats.files import common_root, expand_pattern, file_entries, fingerprint_files


def resolve_sources(args, modality: str, options: dict | None = None) -> list[SourceSpec]:
    """Every source of one command: a pattern matching folders gives one image source per folder (the
    same source given twice is left to `distinct_sources`)."""
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
    return specs


def source_identity(spec: SourceSpec) -> frozenset:
    """What a source reads, by identity rather than spelling (`identity`)."""
    return identity(spec.fmt, spec.root, spec.files)


def identity(fmt: str, root: str, files) -> frozenset:
    """The (device, inode) of a source's folder, or of each of its files: symlinks, hardlinks, `..`
    and other spellings of the same data agree."""
    paths = [root] if format_named(fmt).whole_folder else [os.path.join(root, f) for f in files]
    out = set()
    for p in paths:
        try:
            st = os.stat(p)
            out.add((st.st_dev, st.st_ino))
        except OSError:
            out.add(os.path.realpath(p))
    return frozenset(out)


def distinct_sources(specs: list[SourceSpec]) -> tuple[list[SourceSpec], list[str]]:
    """The sources of a command with each source's data once: a source that reads the same folder or
    files as an earlier one is dropped (its items would be cached twice). Returns (sources, one
    warning per source dropped)."""
    kept, seen, notes = [], {}, []
    for spec in specs:
        ident = (spec.modality, spec.fmt, source_identity(spec))
        first = seen.setdefault(ident, spec)
        if first is spec:
            kept.append(spec)
        elif spec.uri == first.uri:
            notes.append(f"{spec.uri} is given twice: encoded once")
        else:
            what = "folder" if format_named(spec.fmt).whole_folder else "files"
            notes.append(f"{spec.uri} is a duplicate source: the same {what} as {first.uri} (reached by another path); "
                         "encoded once")
    return kept, notes


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
    options = format_named(fmt).options(files[0], modality, options)
    root = common_root(files)
    return SourceSpec(uri, modality, fmt, root, tuple(os.path.relpath(f, root) for f in files), options)


def _format_of(path: str, modality: str) -> str:
    if os.path.isdir(path):
        raise DimefmError(f"{path} is a folder: only image sources can be folders")
    table = {suffix: f.name for f in registry().values() for suffix in f.suffixes.get(modality, ())}
    low = path.lower()
    for suffix, fmt in sorted(table.items(), key=lambda kv: -len(kv[0])):
        if low.endswith(suffix):
            return fmt
    raise DimefmError(f"unsupported {modality} source {path}: expected one of {', '.join(sorted(table))}")


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
        return format_named(spec.fmt).plan_images(spec, source_id, shard_size)
    return _plan_texts(spec, source_id, shard_size, seen_hashes if seen_hashes is not None else SeenHashes())


def _plan_texts(spec: SourceSpec, source_id: int, shard_size: int, seen: SeenHashes) -> Plan:
    fmt = format_named(spec.fmt)
    units: list[Unit] = []
    duplicates, valid, first_error = 0, 0, None
    entries = file_entries(spec.root, spec.files)
    for file, rel in enumerate(spec.files):

        def close(start, stop, offset, texts):
            nonlocal duplicates
            ok = np.array([t is not None for t in texts], dtype=bool)
            hashes = np.array([text_hash(t) if t is not None else 0 for t in texts], dtype=np.int64)
            keep = seen.keep(hashes, ok)
            duplicates += int((~keep).sum())
            units.append(unit_of(spec, source_id, len(units), rel, file, start=start, stop=stop, offset=offset,
                                 keep=pack_mask(keep), records=len(texts)))

        start, offset, texts, pos = 0, 0, [], -1
        for pos, pos_offset, records in fmt.scan_texts(os.path.join(spec.root, rel), spec.options):
            if fmt.splits_texts and pos - start == shard_size:
                close(start, pos, offset, texts)
                start, offset, texts = pos, pos_offset, []
            for _, text, err in records:
                valid += text is not None
                first_error = first_error or err
                texts.append(text)
        if not fmt.splits_texts:
            close(0, len(texts), 0, texts)
        elif pos >= start:
            close(start, pos + 1, offset, texts)
    plan = Plan(units, entries, fingerprint_files(entries), duplicates)
    if not any(u.records for u in units):
        plan.empty = f"{spec.uri} holds no sentences"
    elif not valid:
        hint = fmt.text_option
        raise DimefmError(f"every record of {spec.uri} would be skipped ({first_error})"
                          + (f": is {hint} right?" if hint else ""))
    return plan
