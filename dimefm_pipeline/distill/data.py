"""Stage-two data: an image stream read from the original sources and joined by key to cached
teacher rows, and an independent sentence sampler over the text cache.

Images: each epoch shuffles the stage-one units, deals them to (rank, worker) slots (or, when there
are too few units, strides every unit's items across slots), streams each unit's records through a
shuffle buffer *before* decoding, and cuts exactly the same number of batches in every slot, so the
DataLoader's round-robin order and DDP stay in step and a resumed run can skip batches without
decoding them. Sentences: an endless chain of seeded permutations indexed by the global step.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from dimefm_pipeline.sources.decode import BadItem, decode_image
from dimefm_pipeline.sources.readers import image_records


@dataclass(frozen=True)
class ImageUnit:
    """A stage-one unit (to re-read pixels) with the number of cached items it holds."""

    unit: object  # sources.Unit
    parquet: tuple[str, ...]  # its image shard files (key -> row)
    first_rows: tuple[int, ...]  # global row of each shard's first row
    items: int


def _seed(*parts: int) -> int:
    """A 31-bit seed from integers, the same in every process (Python's str hash is not)."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0] & 0x7FFFFFFF)


def _deal(n_units: int, slots: int, epoch_seed: int):
    """Per slot: (unit order, stride, offset). Whole units per slot when there are enough of them."""
    order = np.random.default_rng(epoch_seed).permutation(n_units)
    if n_units >= 2 * slots:
        return [(order[s::slots], 1, 0) for s in range(slots)]
    return [(order, slots, s) for s in range(slots)]


def batches_per_slot(items: list[int], slots: int, batch_size: int) -> int:
    """Batches every slot yields in every epoch: the same number everywhere and in every epoch (the
    remainder is dropped), so an epoch has a fixed length whatever the shuffle dealt to each slot."""
    n = len(items)
    if n >= 2 * slots:
        # whole units per slot: every slot gets at least n // slots units, at worst the smallest ones
        return sum(sorted(items)[: n // slots]) // batch_size
    return min(sum(max(0, math.ceil((c - s) / slots)) for c in items) for s in range(slots)) // batch_size


def skip_for_worker(step_in_epoch: int, worker: int, workers: int) -> int:
    """Batches worker `worker` must drop so that the main process resumes at `step_in_epoch`."""
    return max(0, math.ceil((step_in_epoch - worker) / workers))


def image_transform(kind: str, size: int, mean, std):
    """Student augmentation. reference: the paper's Resize(256/224 of size) + RandomResizedCrop(0.08-1)
    + flip; light: crops of 50-100% area + flip (for tiny images); none: resize + centre crop."""
    from torchvision import transforms as T

    norm = [T.ToTensor(), T.Normalize(mean, std)]
    bicubic = T.InterpolationMode.BICUBIC
    if kind == "reference":
        return T.Compose([T.Resize(round(size * 256 / 224), interpolation=bicubic),
                          T.RandomResizedCrop(size, scale=(0.08, 1.0), interpolation=bicubic), T.RandomHorizontalFlip(), *norm])
    if kind == "light":
        return T.Compose([T.RandomResizedCrop(size, scale=(0.5, 1.0), ratio=(0.9, 1.1), interpolation=bicubic),
                          T.RandomHorizontalFlip(), *norm])
    return T.Compose([T.Resize(size, interpolation=bicubic), T.CenterCrop(size), *norm])


class ImageStream(IterableDataset):
    """One epoch of (pixels, teacher rows) batches for one rank; see the module docstring."""

    def __init__(self, units: list[ImageUnit], *, rank: int, world: int, workers: int, batch_size: int,
                 transform, seed: int, epoch: int, shuffle_buffer: int, skip: int = 0):
        self.units, self.rank, self.world, self.workers = units, rank, world, max(workers, 1)
        self.batch_size, self.transform, self.buffer = batch_size, transform, shuffle_buffer
        self.seed, self.epoch, self.skip = seed, epoch, skip
        self.epoch_seed = _seed(seed, epoch)
        self.n_batches = batches_per_slot([u.items for u in units], world * self.workers, batch_size)

    def __iter__(self):
        info = get_worker_info()
        # The DataLoader always asks worker 0 first; after skipping `skip` batches the next batch
        # belongs to role skip % workers, so worker w plays role (w + skip) % workers.
        wid = ((info.id if info else 0) + self.skip) % self.workers
        slot = self.rank * self.workers + wid
        order, stride, offset = _deal(len(self.units), self.world * self.workers, self.epoch_seed)[slot]
        rng = random.Random(_seed(self.seed, self.epoch, slot))
        to_skip = skip_for_worker(self.skip, wid, self.workers)
        batch: list = []
        made = 0
        for rec in _shuffled(self._records(order, stride, offset), self.buffer, rng):
            batch.append(rec)
            if len(batch) < self.batch_size:
                continue
            if made >= to_skip:
                # augmentation is seeded per batch, so skipping batches on resume changes nothing after
                torch.manual_seed(_seed(self.seed, self.epoch, slot, made, 1))
                yield self._decode(batch)
            batch = []
            made += 1
            if made == self.n_batches:
                return

    def _records(self, order, stride, offset):
        for u in order:
            unit = self.units[u]
            rows = _key_rows(unit)
            j = 0
            for key, payload in image_records(unit.unit):
                row = rows.get(key)
                if row is None:  # not cached (an error in stage one): never trained on
                    continue
                if j % stride == offset:
                    yield key, payload, row
                j += 1

    def _decode(self, batch):
        pixels, rows, failed = [], [], 0
        for key, payload, row in batch:
            try:
                pixels.append(self.transform(decode_image(payload)))
                rows.append(row)
            except BadItem:
                failed += 1  # the source changed after stage one; the step trains on the rest
        return torch.stack(pixels), torch.tensor(rows, dtype=torch.int64), failed


def _key_rows(unit: ImageUnit) -> dict:
    import pyarrow.parquet as pq

    out = {}
    for path, first in zip(unit.parquet, unit.first_rows):
        keys = pq.read_table(path, columns=["key"]).column("key").to_pylist()
        out.update({k: first + i for i, k in enumerate(keys)})
    return out


def _shuffled(it, size: int, rng: random.Random):
    """A bounded shuffle buffer (as WebDataset's): memory stays at `size` records."""
    buf = []
    for x in it:
        if len(buf) < size:
            buf.append(x)
            continue
        i = rng.randrange(size)
        yield buf[i]
        buf[i] = x
    rng.shuffle(buf)
    yield from buf


class TextSampler:
    """Sentence rows for every step: an endless chain of seeded permutations of the pool, cut into
    global batches of `per_rank * world`; rank r takes its slice. A function of the step alone, so a
    resumed run draws exactly the same sentences."""

    def __init__(self, pool: np.ndarray, per_rank: int, *, rank: int, world: int, seed: int):
        self.pool, self.per_rank, self.rank, self.world, self.seed = pool, per_rank, rank, world, seed
        if len(pool) < per_rank * world:
            raise ValueError(f"only {len(pool)} sentences for a global text batch of {per_rank * world}")
        self._cache: dict[int, np.ndarray] = {}

    def _perm(self, epoch: int) -> np.ndarray:
        if epoch not in self._cache:
            self._cache = {epoch: np.random.default_rng((self.seed, epoch)).permutation(self.pool)}
        return self._cache[epoch]

    def rows(self, step: int) -> np.ndarray:
        g = self.per_rank * self.world
        per_epoch = len(self.pool) // g  # whole global batches per permutation; the tail is dropped
        perm = self._perm(step // per_epoch)
        start = (step % per_epoch) * g + self.rank * self.per_rank
        return perm[start : start + self.per_rank]


def mix_mined(rows: np.ndarray, image_rows: np.ndarray, pairs: np.ndarray, share: float, step: int, seed: int) -> np.ndarray:
    """Replace a `share` of a batch's sentences with mined neighbours of the batch's images."""
    n = int(round(share * len(rows)))
    if n == 0:
        return rows
    rng = np.random.default_rng((seed, step, 7))
    nbrs = pairs[image_rows]
    pick = nbrs[np.arange(len(image_rows)), rng.integers(0, nbrs.shape[1], len(image_rows))]
    mined = np.unique(pick[pick >= 0])
    rng.shuffle(mined)
    mined = mined[:n]
    rest = rows[~np.isin(rows, mined)][: len(rows) - len(mined)]
    return np.concatenate([mined, rest])
