"""DataLoader side of stage one: units -> decoded, transformed, tokenised batches (in worker processes).

Every unit yields at least one batch (possibly empty) and marks its last batch, so the consumer can
close the unit's shard. Batch number b goes to worker b % num_workers; the DataLoader returns batches
in that same round-robin order, so rows land in a shard in the unit's record order whatever the
number of workers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import islice

import torch
from torch.utils.data import IterableDataset, get_worker_info

from dimefm_pipeline.sources.base import Unit, unpack_mask
from dimefm_pipeline.sources.decode import BadItem, decode_image
from dimefm_pipeline.sources.planner import text_hash
from dimefm_pipeline.sources.readers import image_records, text_records


@dataclass
class Batch:
    unit: Unit
    seq: int  # batch number within the unit
    last: bool
    keys: list = field(default_factory=list)
    inputs: torch.Tensor | None = None  # pixels [b,3,H,W] or tokens [b,L]
    texts: list = field(default_factory=list)
    hashes: list = field(default_factory=list)
    truncated: list = field(default_factory=list)
    errors: list = field(default_factory=list)  # (key, reason)
    duplicates: int = 0


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


class UnitBatches(IterableDataset):
    """Batches of the given units, for one rank, split across DataLoader workers by batch number."""

    def __init__(self, units: list[Unit], batch_size: int, preprocess=None, tokenizer=None, context_length: int = 77):
        self.units, self.batch_size = units, batch_size
        self.preprocess, self.tokenizer, self.context_length = preprocess, tokenizer, context_length

    def __iter__(self):
        info = get_worker_info()
        wid, nw = (info.id, info.num_workers) if info else (0, 1)
        b = 0
        for unit in self.units:
            records, dups = self._records(unit)
            for seq, (chunk, last) in enumerate(_lookahead(_chunks(records, self.batch_size))):
                if b % nw == wid:
                    batch = Batch(unit, seq, last, duplicates=dups() if last else 0)
                    if chunk:
                        self._fill(batch, chunk)
                    yield batch
                b += 1

    def _records(self, unit: Unit):
        if unit.modality == "image":
            return image_records(unit), lambda: 0
        stats = {"dups": 0}

        def kept():
            recs = text_records(unit)
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

    def _fill(self, batch: Batch, chunk) -> None:
        if batch.unit.modality == "image":
            pixels = []
            for key, payload in chunk:
                if key is None:  # a damaged container: the reason is in the payload
                    batch.errors.append(("", payload))
                    continue
                try:
                    pixels.append(self.preprocess(decode_image(payload)))
                    batch.keys.append(key)
                except BadItem as exc:
                    batch.errors.append((key, str(exc)))
                except Exception as exc:  # transform failures on odd images: recorded, never fatal
                    batch.errors.append((key, f"transform failed: {type(exc).__name__}: {exc}"))
            batch.inputs = torch.stack(pixels) if pixels else None
            return
        encode = getattr(self.tokenizer, "encode", None)
        for key, text, err in chunk:
            if err is not None:
                batch.errors.append((key, err))
                continue
            batch.keys.append(key)
            batch.texts.append(text)
            batch.hashes.append(text_hash(text))
            # The tokenizer truncates silently; count it (start and end tokens take two places).
            batch.truncated.append(bool(encode and len(encode(text)) + 2 > self.context_length))
        batch.inputs = self.tokenizer(batch.texts) if batch.texts else None
