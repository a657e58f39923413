"""Teacher rows computed elsewhere (`encode --embeddings-from DIR`, in clip-retrieval's layout:
`formats/clip_retrieval.py`), taken into a cache only when the named teacher agrees with them.

Before anything is cached, rank 0 reads a random sample of the planned items that have a row in DIR
(CHECK_PER_BLOCK at most from each of randomly drawn read blocks, so the sample spans sources and
partitions), encodes them with the teacher and compares: the import is refused when any cosine is
below MIN_COSINE. Mixed precision moves a row by about 1e-3; another model's rows, or rows shifted
against their keys, land far lower (near 0 for another model, about what two unrelated items score
for shifted rows).
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import islice

import numpy as np

from dimefm_pipeline.core.errors import DimefmError
from dimefm_pipeline.encode.batches import unit_blocks
from dimefm_pipeline.formats import format_named
from dimefm_pipeline.formats.base import Listing, bounded_text
from dimefm_pipeline.formats.clip_retrieval import Imported, folder_prefix, open_import
from dimefm_pipeline.formats.images import decode_image
from dimefm_pipeline.formats.files import BadItem

CHECK_ITEMS = 64  # imported items encoded again by the teacher
CHECK_PER_BLOCK = 8  # at most this many from one read block
CHECK_BLOCKS = 256  # read blocks looked at, at most, to find them
MIN_COSINE = 0.99


@dataclass(frozen=True)
class ImportCheck:
    """The teacher against the imported rows of a sample of items."""

    items: int  # items compared
    min_cosine: float
    disagree: int  # items below MIN_COSINE
    worst_key: str | None  # the item with the lowest cosine


def prepare_import(folder: str, modality: str, loaded, pending: list, files_of: dict, device,
                   precision: str) -> tuple[Imported, ImportCheck]:
    """Rank 0, before anything is cached: DIR's rows found for the planned sources, and the teacher's
    agreement with a sample of them (a DimefmError when it disagrees)."""
    from dimefm_pipeline.encode.loop import autocast

    imported = open_for_sources(folder, modality, loaded.embed_dim, files_of)
    loaded.model.to(device)
    return imported, check_import(imported, pending, loaded, device, autocast(precision, device))


def open_on_rank(folder: str | None, modality: str, dim: int, prefixes: dict | None) -> Imported | None:
    """Another rank's view of the rows rank 0 checked (None without --embeddings-from)."""
    if not folder or prefixes is None:
        return None
    imported = open_import(folder, modality, dim)
    imported.prefixes = dict(prefixes)
    return imported


def open_for_sources(folder: str, modality: str, dim: int, files_of: dict) -> Imported:
    """DIR's rows for one modality; `files_of`: source id -> the paths of its file table, against
    which the prefix of an image folder's paths is found (a source of other files gets none)."""
    imported = open_import(folder, modality, dim)
    if modality == "image":
        for source_id, files in files_of.items():
            imported.prefixes[source_id] = folder_prefix(imported, files) or ""
    return imported


def check_import(imported: Imported, units: list, loaded, device, autocast, *, seed: int = 0) -> ImportCheck:
    """Encode a random sample of the imported items of `units` with the teacher and compare; a
    DimefmError when none of the items read has a row, or when they disagree."""
    import torch

    rng = np.random.default_rng(seed)
    blocks = [(u, b) for u in units for b in unit_blocks(u, CHECK_PER_BLOCK * 32)]
    samples, looked = [], 0
    for i in rng.permutation(len(blocks))[:CHECK_BLOCKS]:
        if len(samples) >= CHECK_ITEMS:
            break
        looked += 1
        samples += islice(_samples(imported, *blocks[i], loaded), CHECK_PER_BLOCK)
    if not samples:
        raise DimefmError(f"--embeddings-from {imported.folder} has no row for any {imported.modality} read from {looked} "
                          f"random blocks of the sources (its {imported.column} values look like "
                          f"{_first(imported)!r}): was it made from these sources?")
    encode = loaded.model.encode_image if imported.modality == "image" else loaded.model.encode_text
    cosines = []
    with torch.no_grad(), autocast:
        for lo in range(0, len(samples), 32):
            chunk = samples[lo : lo + 32]
            inputs = torch.cat([s[1] for s in chunk]).to(device)
            feats = torch.nn.functional.normalize(encode(inputs).float(), dim=-1).cpu().numpy()
            ref = np.stack([s[2].astype(np.float32) for s in chunk])
            cosines.extend(np.sum(feats * ref, axis=1) / np.linalg.norm(ref, axis=1))
    cosines = np.asarray(cosines)
    worst = int(np.argmin(cosines))
    check = ImportCheck(len(samples), float(cosines[worst]), int((cosines < MIN_COSINE).sum()), samples[worst][0])
    if check.disagree:
        raise DimefmError(
            f"--embeddings-from {imported.folder} disagrees with teacher {loaded.spec.arch} ({loaded.spec.pretrained}): "
            f"{check.disagree} of {check.items} sampled items below cosine {MIN_COSINE} (lowest {check.min_cosine:.3f}, "
            f"{check.worst_key!r}); another model made them, or their rows do not follow their metadata: nothing was "
            "imported")
    return check


def _samples(imported: Imported, unit, block, loaded):
    """(key, teacher input [1, ...], imported row) of the items of one read block that have a row."""
    fmt = format_named(unit.fmt)
    if unit.modality == "text":
        for rec in fmt.text_records(unit):
            row = None if isinstance(rec, Listing) or rec.error is not None else imported.row_of(unit.source_id, rec.text)
            if row is not None:
                yield rec.text, loaded.tokenizer([bounded_text(rec.text)[0]]), row
        return
    for rec in fmt.image_records(unit, block):
        row = None if isinstance(rec, Listing) or rec.error is not None else imported.row_of(unit.source_id, rec.key)
        if row is None:
            continue
        try:
            yield rec.key, loaded.preprocess(decode_image(rec.data))[None], row
        except BadItem:
            continue


def _first(imported: Imported) -> str:
    return imported.keys[0].as_py() if len(imported.keys) else ""
