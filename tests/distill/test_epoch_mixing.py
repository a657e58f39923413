"""Which images share a batch: corpus-wide mixing on class-sorted data, every image once per epoch,
and every record read from storage once, in stage one and stage two.

The corpora are written the way real ones often are: in class order (one tar per shape, one
sub-folder per shape, a Parquet file sorted by shape), from the built-in world's renderer.
"""

from __future__ import annotations

import io
import os
import tarfile
from collections import Counter

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dimefm_pipeline.store.cache import load_cache
from dimefm_pipeline.distill.data import ImageReader, image_loader, image_transform
from dimefm_pipeline.encode.config import EncodeConfig
from dimefm_pipeline.encode.run import encode
from dimefm_pipeline.formats import files, folder, parquet, webdataset
from dimefm_pipeline.world.corpus import png_bytes
from dimefm_pipeline.world.render import render
from dimefm_pipeline.world.scene import Scene, sample_background, sample_object
from dimefm_pipeline.world.vocab import SHAPES

PER_CLASS = 12
BATCH = 8


def _shape_image(shape: str, i: int) -> bytes:
    rng = np.random.default_rng([SHAPES.index(shape), i])
    return png_bytes(render(Scene((sample_object(rng, "center", 32, shape=shape),), sample_background(rng), 32)))


def _write_sorted(root, fmt: str) -> str:
    """The class-ordered corpus in one format; returns the source argument."""
    items = [(f"{shape}-{i:03d}", _shape_image(shape, i)) for shape in SHAPES for i in range(PER_CLASS)]
    if fmt == "tar":
        for c, shape in enumerate(SHAPES):
            with tarfile.open(root / f"{c:02d}.tar", "w") as tf:
                for key, data in items[c * PER_CLASS : (c + 1) * PER_CLASS]:
                    info = tarfile.TarInfo(f"{key}.png")
                    info.size = len(data)
                    tf.addfile(info, io.BytesIO(data))
        return str(root / "*.tar")
    if fmt == "folder":
        for key, data in items:
            (root / "imgs" / key.split("-")[0]).mkdir(parents=True, exist_ok=True)
            (root / "imgs" / key.split("-")[0] / f"{key}.png").write_bytes(data)
        return str(root / "imgs")
    pq.write_table(pa.table({"key": [k for k, _ in items], "png": [d for _, d in items]}), root / "sorted.parquet",
                   row_group_size=PER_CLASS)
    return str(root / "sorted.parquet")


@pytest.fixture(scope="module")
def sorted_caches(teacher, tmp_path_factory):
    """fmt -> (manifest, class of every global image row)."""
    out = {}
    for fmt in ("tar", "folder", "parquet"):
        root = tmp_path_factory.mktemp(f"sorted-{fmt}")
        cache = root / "m.duckdb"
        encode(EncodeConfig("image", (_write_sorted(root, fmt),), str(cache), teacher=str(teacher[0]),
                            pretrained=str(teacher[1]), workers=0, batch_size=16, shard_size=32), progress=False)
        con = duckdb.connect(str(cache), read_only=True)
        keys = [r[0] for r in con.execute("SELECT i.key FROM items i JOIN shards s ON i.shard = s.shard_id "
                                          "ORDER BY s.shard_id, i.row").fetchall()]
        con.close()
        out[fmt] = cache, np.array([SHAPES.index(os.path.basename(k).split("-")[0]) for k in keys])
    return out


def _epoch_rows(cache, *, world: int, workers: int, epoch: int = 0, start: int = 0) -> list[list[np.ndarray]]:
    """Rows of every batch of one epoch, per rank, as stage two's loader delivers them."""
    idx = load_cache(cache, verify=False, need_texts=False, sources=True)
    reader = ImageReader(idx)
    tf = image_transform("none", 32, (0.5,) * 3, (0.5,) * 3)
    return [[rows.numpy() for _, rows, _ in image_loader(len(idx.images), reader, tf, batch_size=BATCH, rank=r, world=world,
                                                           workers=workers, seed=0, epoch=epoch, start=start)]
            for r in range(world)]


def _entropy(labels: np.ndarray) -> float:
    p = np.bincount(labels, minlength=len(SHAPES)) / len(labels)
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


def _uniform_entropy(classes: np.ndarray, draws: int = 4000) -> float:
    rng = np.random.default_rng(0)
    return float(np.mean([_entropy(classes[rng.choice(len(classes), BATCH, replace=False)]) for _ in range(draws)]))


@pytest.mark.parametrize("fmt", ["tar", "folder", "parquet"])
@pytest.mark.parametrize("world,workers", [(1, 0), (1, 2), (2, 0)])
def test_batches_of_a_class_sorted_corpus_mix_like_uniform_sampling(sorted_caches, fmt, world, workers):
    cache, classes = sorted_caches[fmt]
    # 5 epochs of 12 (or 2 x 6) batches: enough batches that one epoch's luck does not decide
    batches = [rows for epoch in range(5) for rank in _epoch_rows(cache, world=world, workers=workers, epoch=epoch) for rows in rank]
    mean = np.mean([_entropy(classes[rows]) for rows in batches])
    ratio = mean / _uniform_entropy(classes)
    assert ratio >= 0.95, f"{fmt}, {world} rank(s), {workers} worker(s): batch entropy {ratio:.3f} of uniform sampling's"


@pytest.mark.parametrize("world,workers", [(1, 0), (1, 2), (2, 2)])
def test_an_epoch_is_every_image_once_whatever_the_ranks_and_workers(sorted_caches, world, workers):
    cache, classes = sorted_caches["folder"]
    n = len(classes)
    seen_by_epoch = []
    for epoch in (0, 1):
        rows = np.concatenate([b for rank in _epoch_rows(cache, world=world, workers=workers, epoch=epoch) for b in rank])
        assert len(rows) == len(np.unique(rows)), "an image came twice in one epoch"
        # every batch in ascending rows, so its teacher rows are one forward gather per shard
        assert all((np.diff(b) > 0).all() for rank in _epoch_rows(cache, world=world, workers=workers, epoch=epoch) for b in rank)
        assert len(rows) == n - n % (BATCH * world)  # the rest: less than one batch per rank, left out
        seen_by_epoch.append(set(rows.tolist()))
    assert seen_by_epoch[0] != seen_by_epoch[1] or n % (BATCH * world) == 0  # the left-out rows change per epoch


def test_the_same_epoch_from_any_number_of_workers_and_from_a_resume(sorted_caches):
    cache, _ = sorted_caches["tar"]
    ref = _epoch_rows(cache, world=2, workers=0)
    assert [[b.tolist() for b in r] for r in _epoch_rows(cache, world=2, workers=2)] == [[b.tolist() for b in r] for r in ref]
    resumed = _epoch_rows(cache, world=2, workers=2, start=3)
    assert [[b.tolist() for b in r] for r in resumed] == [[b.tolist() for b in r[3:]] for r in ref]


# ---------------------------------------------------------------------------------------- reads


@pytest.fixture
def read_log(tmp_path, monkeypatch):
    """Every payload read, by any process (loader workers fork from this one), as (path, offset, length)."""
    log = tmp_path / "reads.log"
    real_read, real_pread = files.read_regular, os.pread
    fd_paths = {}
    real_open = os.open

    def note(path, offset, length):
        with open(log, "a") as f:
            f.write(f"{path}\t{offset}\t{length}\n")

    def read_regular(path, offset=0, length=None, **limits):
        data = real_read(path, offset, length, **limits)
        note(path, offset, len(data))
        return data

    def tracking_open(path, flags, *a, **kw):
        fd = real_open(path, flags, *a, **kw)
        fd_paths[fd] = str(path)
        return fd

    def pread(fd, length, offset):
        data = real_pread(fd, length, offset)
        note(fd_paths.get(fd, f"fd{fd}"), offset, len(data))
        return data

    for module in (folder, parquet, webdataset):  # the formats that read whole files or members
        monkeypatch.setattr(module, "read_regular", read_regular)
    monkeypatch.setattr(os, "pread", pread)
    monkeypatch.setattr(os, "open", tracking_open)

    def reads() -> Counter:
        if not log.exists():
            return Counter()
        return Counter(tuple(line.split("\t")) for line in log.read_text().splitlines())

    return reads


def test_stage_one_reads_each_record_once_with_two_workers(teacher, tmp_path, read_log):
    tars = _write_sorted(tmp_path, "tar")
    folder = _write_sorted(tmp_path, "folder")
    cache = tmp_path / "m.duckdb"
    encode(EncodeConfig("image", (tars, folder), str(cache), teacher=str(teacher[0]), pretrained=str(teacher[1]),
                        workers=2, batch_size=5, shard_size=20), progress=False)
    reads = read_log()
    assert max(reads.values()) == 1, [r for r, c in reads.items() if c > 1][:3]
    assert len(reads) == 2 * len(SHAPES) * PER_CLASS  # every image of both sources, nothing else


@pytest.mark.parametrize("fmt", ["tar", "folder", "parquet"])
def test_stage_two_reads_each_image_once_per_epoch_across_workers(sorted_caches, fmt, read_log):
    cache, classes = sorted_caches[fmt]
    rows = np.concatenate([b for rank in _epoch_rows(cache, world=2, workers=2) for b in rank])
    reads = read_log()
    assert max(reads.values()) == 1 and len(reads) == len(rows) == len(classes) - len(classes) % (2 * BATCH)
    idx = load_cache(cache, verify=False, need_texts=False)
    locs = idx.image_locs.take(np.sort(rows))
    assert sorted((int(o), int(n)) for _, o, n in reads) == sorted((int(o), int(n)) for _, o, n, *_ in locs) or fmt == "folder"
