"""Teacher embeddings computed elsewhere, in the layout clip-retrieval's `inference` writes, read in
(`encode --embeddings-from DIR`) and written out (`dimefm export clip-retrieval`).

The layout, one partition N per output file set (N zero-padded to the digits of the partition count):

    DIR/img_emb/img_emb_N.npy          float16 [rows, dim], each row L2-normalised
    DIR/text_emb/text_emb_N.npy        the same for sentences
    DIR/metadata/metadata_N.parquet    one row per embedding row, in the same order: `image_path` (the
                                       image file's path as the tool was given it, or a WebDataset
                                       sample's `__key__`), `caption` (the sentence, when sentences were
                                       embedded), and the columns of each sample's `.json`

Rows are matched to cached items by key, never by position: the tool deals its inputs to partitions
round-robin (input i to partition i mod count), and an item it could not read has no row at all. An
image's key is its WebDataset `__key__` (or Parquet/TSV key), or for an image folder its path below
the folder: the tool's `image_path` is that path with the folder as the tool was given it in front,
a prefix found by matching the folder's files. A sentence's key is its text (stripped of surrounding
white space, as a cached sentence is). A key with two rows is ambiguous and not used.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dimefm_pipeline.core.errors import DimefmError
from dimefm_pipeline.formats.base import text_hash

LAYOUT = {"image": ("img_emb", "img_emb"), "text": ("text_emb", "text_emb")}  # modality -> (folder, file stem)
KEY_COLUMNS = {"image": ("image_path", "__key__", "key"), "text": ("caption",)}


@dataclass
class Imported:
    """The rows of one clip-retrieval output folder for one modality, found by key."""

    folder: str
    modality: str
    dim: int
    column: str  # the metadata column the keys come from
    parts: list  # memory-mapped embedding arrays, one per partition
    starts: np.ndarray  # first global row of each partition
    hashes: np.ndarray  # uint64-viewed key hashes, sorted
    rows: np.ndarray  # global row of each sorted hash (-1: the key has several rows)
    keys: object  # pyarrow string array of the keys, in the order of `hashes`
    prefixes: dict = field(default_factory=dict)  # source id -> what precedes a cached key in the tool's key

    @property
    def total(self) -> int:
        return int(self.starts[-1]) if len(self.starts) else 0

    def find(self, key: str) -> int:
        """The global row of `key`, or -1 (no row, or several)."""
        h = np.int64(text_hash(key))
        i = int(np.searchsorted(self.hashes, h))
        while i < len(self.hashes) and self.hashes[i] == h:
            if self.keys[i].as_py() == key:
                return int(self.rows[i])
            i += 1
        return -1

    def vector(self, row: int) -> np.ndarray | None:
        """Row `row` as a float16 unit vector, or None when it is not finite or zero."""
        p = int(np.searchsorted(self.starts, row, side="right")) - 1
        v = np.asarray(self.parts[p][row - self.starts[p]], dtype=np.float32)
        norm = float(np.linalg.norm(v))
        if not np.isfinite(norm) or norm == 0.0:
            return None
        return (v / norm).astype(np.float16)

    def row_of(self, source_id: int, key: str) -> np.ndarray | None:
        """The imported row of a cached item (its source and own key), or None: encode it."""
        if self.modality == "text":
            key = key.strip()
        elif source_id not in self.prefixes:
            return None
        row = self.find(self.prefixes.get(source_id, "") + key)
        return None if row < 0 else self.vector(row)


def partitions(folder: str | Path, modality: str) -> list[tuple[Path, Path]]:
    """(embeddings .npy, metadata .parquet) of every partition, in partition order."""
    folder = Path(folder)
    sub, stem = LAYOUT[modality]
    if not folder.is_dir():
        raise DimefmError(f"--embeddings-from {folder}: no such folder")
    if not (folder / sub).is_dir() or not (folder / "metadata").is_dir():
        raise DimefmError(f"--embeddings-from {folder}: no {sub}/ and metadata/ folders, as clip-retrieval inference "
                          f"writes them (for {modality}s: {sub}/{stem}_N.npy with metadata/metadata_N.parquet)")
    found = []
    for npy in (folder / sub).glob(f"{stem}_*.npy"):
        m = re.fullmatch(rf"{stem}_(\d+)\.npy", npy.name)
        if m is None:
            continue
        meta = folder / "metadata" / f"metadata_{m.group(1)}.parquet"
        if not meta.is_file():
            raise DimefmError(f"{npy} has no metadata file {meta.name} beside it in metadata/: an incomplete copy?")
        found.append((int(m.group(1)), npy, meta))
    if not found:
        raise DimefmError(f"--embeddings-from {folder}: {sub}/ holds no {stem}_N.npy file")
    return [(npy, meta) for _, npy, meta in sorted(found)]


def open_import(folder: str | Path, modality: str, dim: int) -> Imported:
    """Read the keys of every partition and map the embedding files; rows are checked for the
    teacher's dimension and for one metadata row per embedding row."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    parts, keys, starts, column = [], [], [0], None
    for npy, meta in partitions(folder, modality):
        emb = np.load(npy, mmap_mode="r")
        if emb.ndim != 2 or emb.dtype not in (np.float16, np.float32):
            raise DimefmError(f"{npy} holds {emb.dtype} {list(emb.shape)}, not a float16 [rows, dim] matrix")
        if emb.shape[1] != dim:
            raise DimefmError(f"{npy} holds {emb.shape[1]}-d embeddings but the teacher's are {dim}-d: another model "
                              "made them; name that model with --teacher and --pretrained")
        names = pq.read_schema(meta).names
        col = next((c for c in KEY_COLUMNS[modality] if c in names), None)
        if col is None:
            raise DimefmError(f"{meta} has no {' or '.join(KEY_COLUMNS[modality])} column (columns: {', '.join(names)})")
        column = column or col
        table = pq.read_table(meta, columns=[col])
        if table.num_rows != len(emb):
            raise DimefmError(f"{meta} has {table.num_rows} rows but {npy.name} has {len(emb)}: the two files of a "
                              "partition must hold the same rows")
        parts.append(emb)
        keys.append(table.column(col).combine_chunks().cast(pa.string()))
        starts.append(starts[-1] + len(emb))
    all_keys = pa.concat_arrays(keys) if keys else pa.array([], pa.string())
    if modality == "text":
        import pyarrow.compute as pc

        all_keys = pc.utf8_trim_whitespace(all_keys)
    hashes, rows, ordered = _sorted_index(all_keys, modality)
    return Imported(str(folder), modality, dim, column, parts, np.asarray(starts, np.int64), hashes, rows, ordered)


HASH_CHUNK = 1 << 20  # keys turned into Python strings at once while hashing


def _sorted_index(keys, modality: str) -> tuple[np.ndarray, np.ndarray, object]:
    """Key hashes sorted (a stable sort: a key's rows stay in row order), the global row of each, and
    the keys in that order. An image key with several rows is ambiguous: all of them get row -1. A
    sentence's repeats are the same sentence: `Imported.find` meets its first row first."""
    import pyarrow as pa

    hashes = np.empty(len(keys), np.int64)
    for i in range(0, len(keys), HASH_CHUNK):  # Python strings for one chunk at a time, not for every key
        chunk = keys.slice(i, HASH_CHUNK).to_pylist()
        hashes[i:i + len(chunk)] = np.fromiter((text_hash(k or "") for k in chunk), np.int64, len(chunk))
    order = np.argsort(hashes, kind="stable")
    hashes, rows = hashes[order], order.astype(np.int64)
    ordered = keys.take(pa.array(order))
    if modality == "image":
        for i in np.flatnonzero(hashes[1:] == hashes[:-1]):
            if ordered[int(i)].as_py() == ordered[int(i) + 1].as_py():
                rows[i] = rows[i + 1] = -1
    return hashes, rows, ordered


def folder_prefix(imported: Imported, files: list[str], sample: int = 200) -> str | None:
    """What the tool's `image_path` puts before an image's path below its folder (the folder as the
    tool was given it, and a slash), found by matching keys against the folder's files; None when no
    key names one of them."""
    members = set(files)
    votes: dict[str, int] = {}
    step = max(1, len(imported.keys) // sample)
    for i in range(0, len(imported.keys), step):
        key = imported.keys[i].as_py() or ""
        cut = [j + 1 for j, ch in enumerate(key) if ch == "/"]
        for j in [0, *cut]:
            if key[j:] in members:
                votes[key[:j]] = votes.get(key[:j], 0) + 1
                break
    return max(votes, key=votes.get) if votes else None


def write_partition(folder: str | Path, modality: str, n: int, width: int, emb: np.ndarray, keys: list[str],
                    extra: dict | None = None) -> None:
    """One partition in the tool's layout: `{sub}/{stem}_N.npy` (float16) and `metadata/metadata_N.parquet`
    with the key column (`image_path` or `caption`) and `extra` columns, rows in the same order."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    sub, stem = LAYOUT[modality]
    folder = Path(folder)
    (folder / sub).mkdir(parents=True, exist_ok=True)
    (folder / "metadata").mkdir(parents=True, exist_ok=True)
    tag = str(n).zfill(width)
    np.save(folder / sub / f"{stem}_{tag}.npy", np.ascontiguousarray(emb, dtype=np.float16))
    column = KEY_COLUMNS[modality][0]
    pq.write_table(pa.table({column: pa.array(keys, pa.string()), **(extra or {})}),
                   folder / "metadata" / f"metadata_{tag}.parquet")


def partition_width(count: int) -> int:
    """Digits of a partition number, as the tool pads them (the digits of the partition count)."""
    return len(str(max(1, count)))
