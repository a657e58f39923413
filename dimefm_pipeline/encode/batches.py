"""DataLoader side of stage one: units -> read blocks -> decoded, transformed, tokenised batches.

Each unit is cut into read blocks (its format's `blocks`; a text unit is one block), the
blocks of all of this rank's units are numbered in order, and block j is read by worker
j % num_workers alone, so every record is read from storage once whatever the number of workers.
A block yields one or more batches (at least one, possibly empty); each batch says which block of
how many it belongs to and whether it ends that block, so the consumer knows when a unit is
complete. Rows carry their position in the unit and are written in that order (`cache.UnitWriter`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import islice

import torch
from torch.utils.data import IterableDataset, get_worker_info

from dimefm_pipeline.formats.guards import ITEM_TIMEOUT, time_limit
from dimefm_pipeline.formats import format_named
from dimefm_pipeline.formats.accounting import Tally, accounted
from dimefm_pipeline.formats.base import Limits, Unit, bounded_text, text_hash, unpack_mask
from dimefm_pipeline.formats.images import centre_box, decode_image, header_size
from dimefm_pipeline.formats.files import BadItem, payload_hash


@dataclass
class Batch:
    unit: Unit
    blocks: int  # read blocks in the unit
    last: bool  # the last batch of its block
    keys: list = field(default_factory=list)
    pos: list = field(default_factory=list)  # position of each row in the unit
    inputs: torch.Tensor | None = None  # pixels [b,3,H,W] or tokens [b,L]
    files: list = field(default_factory=list)  # file-table number of each row's file
    view_numbers: list = field(default_factory=list)  # images: view number of each row (0: the un-augmented image)
    boxes: list = field(default_factory=list)  # images: (x0, y0, x1, y1, flip) of each row's view, in source pixels
    # images: where each row's bytes lie (`packed`: the bytes themselves, to copy into the cache)
    offsets: list = field(default_factory=list)
    lengths: list = field(default_factory=list)
    payload_hashes: list = field(default_factory=list)
    packed: list = field(default_factory=list)
    # texts
    texts: list = field(default_factory=list)
    hashes: list = field(default_factory=list)
    truncated: list = field(default_factory=list)
    errors: list = field(default_factory=list)  # (key, reason, file-table number)
    duplicates: int = 0
    # per row: its teacher embedding taken from --embeddings-from (no input in `inputs`), or None
    imported: list = field(default_factory=list)
    listed: int = 0  # on the last batch of a block: records the block's listing was held to (duplicates included)


@dataclass(frozen=True)
class CachedViews:
    """How stage one draws the cached views 1..count-1 of every image (view 0 is the image itself)."""

    count: int  # views per image
    augment: object  # images.ViewAugment
    seed: int
    size: int  # the teacher's input side
    mean: tuple
    std: tuple


def _lookahead(it):
    """Yield (item, is_last), and a single (None, True) for an empty iterator."""
    it = iter(it)
    try:
        prev = next(it)
    except StopIteration:
        yield None, True
        return
    for item in it:
        yield prev, False
        prev = item
    yield prev, True


def _chunks(records, size):
    it = iter(records)
    while chunk := list(islice(it, size)):
        yield chunk


def unit_blocks(unit: Unit, batch_size: int) -> list:
    """Read blocks of a unit (a text unit is one block)."""
    return format_named(unit.fmt).blocks(unit, batch_size) if unit.modality == "image" else [None]


class UnitBatches(IterableDataset):
    """Batches of the given units, for one rank, each read block read by exactly one worker."""

    def __init__(self, units: list[Unit], batch_size: int, preprocess=None, tokenizer=None, context_length: int = 77,
                 item_timeout: float | None = ITEM_TIMEOUT, cached_views: CachedViews | None = None, imported=None,
                 limits: Limits = Limits()):
        """`cached_views`: how to draw the cached views of every image, or None (one view: the image);
        `imported`: teacher rows computed elsewhere (`formats.clip_retrieval.Imported`), or None;
        `limits`: the most bytes and pixels one image may have."""
        self.units, self.batch_size = units, batch_size
        self.preprocess, self.tokenizer, self.context_length = preprocess, tokenizer, context_length
        self.item_timeout = item_timeout
        self.cached_views = cached_views
        self.imported = imported
        self.limits = limits

    def __iter__(self):
        info = get_worker_info()
        wid, nw = (info.id, info.num_workers) if info else (0, 1)
        j = 0
        for unit in self.units:
            blocks = unit_blocks(unit, self.batch_size)
            for block in blocks:
                if j % nw == wid:
                    yield from self._block_batches(unit, block, len(blocks))
                j += 1

    def _block_batches(self, unit: Unit, block, n_blocks: int):
        tally, where = Tally(), f"unit {unit.index} of source {unit.source_id} ({unit.abspath})"
        if unit.modality == "image":
            records = accounted(format_named(unit.fmt).image_records(unit, block, self.limits), where, tally)
            dups = lambda: 0  # noqa: E731
        else:
            records, dups = self._text(unit, accounted(format_named(unit.fmt).text_records(unit), where, tally,
                                                       several=True))
        for chunk, last in _lookahead(_chunks(records, self.batch_size)):
            batch = Batch(unit, n_blocks, last, duplicates=dups() if last else 0)
            if chunk:
                self._fill(batch, chunk)
            if last:  # the block's records are all given: the reader's listing was checked
                batch.listed = tally.listed
            yield batch

    def _text(self, unit: Unit, recs):
        stats = {"dups": 0}

        def kept():
            if unit.keep is None:
                yield from recs
                return
            mask = unpack_mask(unit.keep, len(unit.keep) * 8)  # planned from the same record stream
            for i, rec in enumerate(recs):
                if i < len(mask) and mask[i]:
                    yield rec
                else:
                    stats["dups"] += 1

        return kept(), lambda: stats["dups"]

    def _packed(self, unit: Unit) -> bool:
        key = (unit.source_id, unit.index)
        if getattr(self, "_packed_unit", (None,))[0] != key:
            self._packed_unit = (key, format_named(unit.fmt).packed(unit))
        return self._packed_unit[1]

    def _fill(self, batch: Batch, chunk) -> None:
        if batch.unit.modality == "image":
            self._fill_images(batch, chunk)
        else:
            self._fill_texts(batch, chunk)

    def _fill_images(self, batch: Batch, chunk) -> None:
        packed = self._packed(batch.unit)
        pixels = []
        for rec in chunk:
            if rec.error is not None:
                batch.errors.append((rec.key, rec.error, rec.file))
                continue
            row = None if self.imported is None else self.imported.row_of(batch.unit.source_id, rec.key)
            try:
                with time_limit(self.item_timeout):
                    if row is not None and self.cached_views is None:  # no pixels needed: located and hashed only
                        inputs = [(None, centre_box(*header_size(rec.data)))]
                    else:
                        img = decode_image(rec.data, self.limits.max_pixels)
                        inputs = self._view_inputs(img, batch.unit, rec.pos)
            except BadItem as exc:
                batch.errors.append((rec.key, str(exc), rec.file))
                continue
            except Exception as exc:  # transform failures on odd images: recorded, never fatal
                batch.errors.append((rec.key, f"transform failed: {type(exc).__name__}: {exc}", rec.file))
                continue
            raw = rec.data[1].encode("ascii") if isinstance(rec.data, tuple) else rec.data
            for v, (tensor, box) in enumerate(inputs):  # one row per view, all pointing at the same bytes
                batch.imported.append(row if v == 0 else None)
                if batch.imported[-1] is None:
                    pixels.append(tensor)
                batch.keys.append(rec.key)
                batch.pos.append(rec.pos)
                batch.view_numbers.append(v)
                batch.boxes.append(box)
                batch.files.append(rec.file)
                batch.offsets.append(rec.offset)
                batch.lengths.append(rec.length)
                batch.payload_hashes.append(payload_hash(raw))
                batch.packed.append(raw if packed and v == 0 else None)
        batch.inputs = torch.stack(pixels) if pixels else None

    def _view_inputs(self, img, unit: Unit, pos: int) -> list:
        """(teacher input, (x0, y0, x1, y1, flip)) of every view of one image: view 0 through the
        teacher's own preprocessing, the others cropped, resized and flipped as recorded."""
        from dimefm_pipeline.formats.images import apply_view, centre_box, sample_view, view_rng, view_transform

        out = [(self.preprocess(img), centre_box(*img.size))]
        if self.cached_views is None:
            return out
        cv = self.cached_views
        norm = view_transform(cv.size, cv.mean, cv.std)
        for v in range(1, cv.count):
            *box, flip = sample_view(view_rng(cv.seed, unit.source_id, unit.index, pos, v), *img.size, cv.augment)
            out.append((norm(apply_view(img, box, flip, cv.size)), (*box, flip)))
        return out

    def _fill_texts(self, batch: Batch, chunk) -> None:
        encode = getattr(self.tokenizer, "encode", None)
        inputs = []
        for pos, key, text, err, _ in chunk:
            if err is not None:
                batch.errors.append((key, err, batch.unit.file))
                continue
            batch.keys.append(key)
            batch.pos.append(pos)
            batch.files.append(batch.unit.file)
            batch.texts.append(text)
            batch.hashes.append(text_hash(text))
            bounded, cut = bounded_text(text)  # one sentence costs the tokenizer a few milliseconds at most
            inputs.append(bounded)
            # The tokenizer truncates silently; count it (start and end tokens take two places).
            batch.truncated.append(cut or bool(encode and len(encode(bounded)) + 2 > self.context_length))
            batch.imported.append(None if self.imported is None else self.imported.row_of(batch.unit.source_id, text))
        encoded = [t for t, row in zip(inputs, batch.imported) if row is None]
        batch.inputs = self.tokenizer(encoded) if encoded else None
