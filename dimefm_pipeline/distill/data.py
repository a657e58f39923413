"""Stage-two data: cached image rows drawn uniformly over the whole corpus, read back by position, and
an independent sentence sampler over the text cache.

Images: an epoch is a seeded permutation of every cached image row (`EpochPlan`), cut into global
batches of `batch_size x world`; rank r trains on slice r of each. A batch's images are read where
stage one found them (the row's locator: a file of the source, a byte offset and a length; or the
cache's pack file), their bytes checked against the hash stage one stored, then decoded. The row IS
the identity: no key is looked up, so repeated keys, sorted corpora and any number of workers give
the same batches. Batch k is decoded by one DataLoader worker, which reads only its own images, so
every image is read once per epoch across all workers and ranks. `docs/architecture.md` has the
measurements behind this design.

Sentences: an endless chain of seeded permutations indexed by the global step.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from dimefm_pipeline.core.errors import DimefmError
from dimefm_pipeline.core.signals import ignore_in_worker
from dimefm_pipeline.formats.guards import ITEM_TIMEOUT, LOADER_TIMEOUT, guarded, time_limit
from dimefm_pipeline.formats.files import BadItem
from dimefm_pipeline.formats.images import apply_view, decode_image, pick_views
from dimefm_pipeline.store.reader import ImageReader
from dimefm_pipeline.store.tables import Locator

def _seed(*parts: int) -> int:
    """A 31-bit seed from integers, the same in every process (Python's str hash is not)."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0] & 0x7FFFFFFF)


class EpochPlan:
    """Which cached images each rank trains on at each step of one epoch.

    A seeded permutation of all `n` images, cut into `steps` global batches of `batch_size * world`;
    the last `n mod (batch_size * world)` images of the permutation (fewer than one global batch: at
    most one short batch per rank) are left out of this epoch, and they are different images every
    epoch. A pure function of (n, batch size, world, seed, epoch): every rank and worker agrees.
    """

    def __init__(self, n: int, batch_size: int, world: int, seed: int, epoch: int):
        self.batch_size, self.world = batch_size, world
        self.steps = n // (batch_size * world)
        perm = np.random.default_rng(_seed(seed, epoch, 11)).permutation(n)
        self.perm = perm.astype(np.int32) if n < 2**31 else perm  # 160 MB for 40M rows

    def rows(self, step: int, rank: int) -> np.ndarray:
        """The images of `rank`'s batch at `step` of the epoch (image j's views are rows j*K .. j*K+K-1),
        in ascending order: a batch is a set, and sorted rows let every read walk its shard forwards."""
        if not 0 <= step < self.steps:
            raise IndexError(f"step {step} outside the epoch's {self.steps} steps")
        lo = (step * self.world + rank) * self.batch_size
        return np.sort(self.perm[lo : lo + self.batch_size].astype(np.int64))


@dataclass(frozen=True)
class ViewInput:
    """How the student's input is built from a cached view 1..K-1: cropped and flipped as recorded,
    resized to the student's side, then normalised."""

    size: int  # the student's image side
    normalise: object  # PIL image -> tensor


class ImageBatches(Dataset):
    """Map-style: item k is this rank's decoded batch at step k of the epoch, as
    `(pixels, rows, failed)`; `failed` lists `(row, reason)` of images that could not be read.

    The plan draws images; of an image's `views_per_image` rows, the batch takes view 0, or with a
    `view_input` the view `images.pick_views` chooses for this epoch, whose recorded crop and flip
    build the input."""

    def __init__(self, plan: EpochPlan, rank: int, reader: ImageReader, transform, *, seed: int, epoch: int,
                 item_timeout: float | None = ITEM_TIMEOUT, views_per_image: int = 1, view_input: ViewInput | None = None):
        self.plan, self.rank, self.reader, self.transform = plan, rank, reader, transform
        self.seed, self.epoch, self.item_timeout = seed, epoch, item_timeout
        self.k, self.view_input = views_per_image, view_input

    def __len__(self) -> int:
        return self.plan.steps

    def __getitem__(self, step: int):
        # augmentation is seeded per batch: the same draws whichever worker decodes it, and on resume
        torch.manual_seed(_seed(self.seed, self.epoch, self.rank, step, 1))
        pixels, rows, failed = [], [], []
        images = self.plan.rows(step, self.rank)
        cached = self.view_input is not None
        wanted = images * self.k + (pick_views(images, self.k, self.seed, self.epoch) if cached else 0)
        for row, loc in zip(wanted, Locator.rows(self.reader.locs.take(wanted))):
            try:
                with time_limit(self.item_timeout):
                    img = decode_image(self.reader.read(row, loc), None)  # stage one checked its size
                    if loc.view == 0:  # the un-augmented image (with --augment's draws, if any)
                        pixels.append(self.transform(img))
                    else:  # a cached view: exactly the crop and flip its teacher row was encoded from
                        size, norm = self.view_input.size, self.view_input.normalise
                        pixels.append(norm(apply_view(img, loc.box, loc.flip, size)))
                rows.append(row)
            except BadItem as exc:
                failed.append((int(row), str(exc)))
        if len(failed) * 2 > len(failed) + len(rows):
            raise DimefmError(f"{len(failed)} of {len(failed) + len(rows)} images of a batch could not be read (first: "
                              f"{failed[0][1]}); if the data moved, point the cache at it: dimefm sources relocate")
        return torch.stack(pixels), torch.tensor(rows, dtype=torch.int64), failed


def image_loader(n_images: int, reader: ImageReader, transform, *, batch_size: int, rank: int, world: int, workers: int,
                 seed: int, epoch: int, start: int = 0, pin_memory: bool = False, item_timeout: float | None = ITEM_TIMEOUT,
                 views_per_image: int = 1, view_input: ViewInput | None = None):
    """This rank's (pixels, rows, failed) batches of `epoch` from step `start` on. Batch k goes to one
    worker, which reads only its own images; the DataLoader returns them in step order."""
    from torch.utils.data import DataLoader

    from dimefm_pipeline.core.distributed import loader_workers

    workers = loader_workers(workers)
    plan = EpochPlan(n_images, batch_size, world, seed, epoch)
    batches = ImageBatches(plan, rank, reader, transform, seed=seed, epoch=epoch, item_timeout=item_timeout,
                           views_per_image=views_per_image, view_input=view_input)
    loader = DataLoader(batches, batch_size=None, sampler=range(start, plan.steps), num_workers=workers,
                        pin_memory=pin_memory, prefetch_factor=4 if workers else None,
                        timeout=LOADER_TIMEOUT if workers else 0, worker_init_fn=ignore_in_worker if workers else None)
    return guarded(loader, "training")


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


class TextSampler:
    """Sentence rows for every step: an endless chain of seeded permutations of the pool, cut into
    global batches of `per_rank * world`; rank r takes its slice. A function of the step alone, so a
    resumed run draws exactly the same sentences."""

    def __init__(self, pool: np.ndarray, per_rank: int, *, rank: int, world: int, seed: int):
        self.pool, self.per_rank, self.rank, self.world, self.seed = pool, per_rank, rank, world, seed
        if len(pool) < per_rank * world:
            raise ValueError(f"only {len(pool)} sentences for a text batch of {per_rank} x {world} rank(s): lower "
                             "--text-batch-size (default: --batch-size), or encode more sentences")
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
    """Replace a `share` of a batch's sentences with mined neighbours of the batch's images (images
    without mined neighbours, encoded after the last `dimefm mine`, contribute none)."""
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


def mined_text_pool(pairs: np.ndarray) -> np.ndarray:
    """Sorted unique sentence rows that are a mined neighbour of at least one image (int64); padding
    entries (-1) are ignored: the sentences `--text-filter mined` trains on."""
    flat = np.asarray(pairs).reshape(-1)
    return np.unique(flat[flat >= 0]).astype(np.int64, copy=False)
