"""Cached augmented views: stage one encodes K recorded crops per image, stage two replays exactly those."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from dimefm_pipeline.core import models
from dimefm_pipeline.store.cache import load_cache
from dimefm_pipeline.distill.data import ImageReader, ViewInput, image_loader, image_transform
from dimefm_pipeline.distill.train import distill
from dimefm_pipeline.encode.config import EncodeConfig
from dimefm_pipeline.encode.run import encode
from dimefm_pipeline.core.errors import DimefmError
from dimefm_pipeline.store.tables import Locator
from dimefm_pipeline.formats.images import ViewAugment, apply_view, pick_views, sample_view, view_transform
from tests.conftest import plain_duckdb, write_images
from tests.distill.test_data_path import _png, assert_every_batch_on_target, metric_rows, self_distill_config, write_tar

K = 4


@pytest.fixture(scope="module")
def view_cache(teacher, tmp_path_factory):
    """12 folder images (48 wide, 40 high) and a tar of 7, each cached as 4 views, plus 30 sentences."""
    root = tmp_path_factory.mktemp("views")
    write_images(root / "imgs", 12, size=(40, 48), seed=11)
    write_tar(root / "t.tar", [(f"{i:03d}.png", _png(400 + i, size=44)) for i in range(7)])
    (root / "s.txt").write_text("".join(f"a sentence about item {i}\n" for i in range(30)))
    cache = root / "m" / "c.duckdb"
    common = dict(teacher=str(teacher[0]), pretrained=str(teacher[1]), workers=2, batch_size=5, shard_size=8)
    encode(EncodeConfig("image", (str(root / "imgs"), str(root / "t.tar")), str(cache), views=K, **common), progress=False)
    encode(EncodeConfig("text", (str(root / "s.txt"),), str(cache), **common), progress=False)
    return cache


def test_every_image_has_k_recorded_views_queryable_in_sql(view_cache):
    con = plain_duckdb(view_cache)
    per_image = con.execute("SELECT key, count(*), list(view ORDER BY view) FROM image_embeddings GROUP BY ALL").fetchall()
    crops = con.execute("SELECT view, crop_x0, crop_y0, crop_x1, crop_y1, flip FROM image_embeddings WHERE key = 'img0000.png' "
                        "ORDER BY view").fetchall()
    items = con.execute("SELECT count(*), count(DISTINCT (source, file, pos)) FROM items WHERE modality = 'image'").fetchall()[0]
    con.close()
    assert len(per_image) == 19 and all(n == K and views == [0, 1, 2, 3] for _, n, views in per_image)
    assert crops[0] == (0, 4, 0, 44, 40, False)  # view 0: the centre square a resize + centre crop keeps (48 x 40 image)
    for _, x0, y0, x1, y1, _ in crops[1:]:
        assert 0 <= x0 < x1 <= 48 and 0 <= y0 < y1 <= 40
    assert len({c[1:] for c in crops}) == K  # distinct crops
    assert items == (19 * K, 19)


def test_counts_are_of_images_not_of_their_views(view_cache):
    """`info`, `sources list`, the repeated-key count and the cookbook's count say 19 images, not 76 rows."""
    import re

    from dimefm_pipeline.store.manifest.inspect import info, open_for_reading, source_list

    with open_for_reading(str(view_cache)) as man:
        sources = {r[0]: r for r in info(man)["sources"] if r[1] == "image"}
        listed = {r[0]: r for r in source_list(man) if r[1] == "image"}
    assert [r[6] for r in sources.values()] == [12, 7]  # items per source
    assert [r[10] for r in sources.values()] == [0, 0]  # repeated keys
    assert [r[6] for r in listed.values()] == [12, 7]
    doc = (Path(__file__).resolve().parents[2] / "docs" / "sql-cookbook.md").read_text()
    per_source = next(q for q in re.findall(r"```sql\n(.*?)```", doc, flags=re.S) if "AS items" in q and "GROUP BY ALL ORDER" in q)
    con = plain_duckdb(view_cache)
    counts = [n for _, modality, n in con.execute(per_source).fetchall() if modality == "image"]
    con.close()
    assert sorted(counts) == [7, 12]


def test_the_student_input_is_the_crop_the_teacher_encoded(view_cache, teacher):
    idx = load_cache(view_cache, sources=True)
    assert idx.views == K and len(idx.images) == 19 * K
    loaded = models.build(models.resolve_spec(str(teacher[0]), str(teacher[1])), quiet=True)
    pp = loaded.preprocess_cfg
    reader = ImageReader(idx)
    loader = image_loader(19, reader, image_transform("none", loaded.image_size, pp["mean"], pp["std"]), batch_size=6,
                          rank=0, world=1, workers=0, seed=3, epoch=0, views_per_image=K,
                          view_input=ViewInput(loaded.image_size, view_transform(loaded.image_size, pp["mean"], pp["std"])))
    cosines, views_seen = [], []
    with torch.no_grad():
        for pixels, rows, _ in loader:
            again = torch.nn.functional.normalize(loaded.model.encode_image(pixels), dim=-1)
            cached = torch.from_numpy(idx.images.take(rows.numpy())).float()
            cosines += (again * cached).sum(1).tolist()
            views_seen += (rows.numpy() % K).tolist()
    assert min(cosines) >= 0.999, min(cosines)
    assert set(views_seen) - {0}  # augmented views were drawn, not only view 0


def test_views_are_chosen_per_epoch_and_replayed_the_same_everywhere():
    images = np.arange(1000)
    a, b = pick_views(images, K, seed=0, epoch=0), pick_views(images, K, seed=0, epoch=1)
    assert np.array_equal(a, pick_views(images, K, seed=0, epoch=0)) and (a != b).mean() > 0.6
    assert np.bincount(a, minlength=K).min() > 200  # all views drawn, about evenly
    rng = np.random.default_rng(0)
    for _ in range(200):
        w, h = int(rng.integers(10, 300)), int(rng.integers(10, 300))
        x0, y0, x1, y1, flip = sample_view(rng, w, h, ViewAugment())
        assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h and flip in (0, 1)


def test_self_distillation_on_cached_views_stays_on_target(view_cache, teacher, tmp_path):
    out = tmp_path / "out"
    distill(self_distill_config(view_cache, teacher, out, steps=10, batch_size=4, augment=None), progress=False)
    assert_every_batch_on_target(metric_rows(out), 10)  # 19 images / 4 = 4 steps per epoch: other views each epoch
    with pytest.raises(DimefmError, match="--augment reference draws new crops"):
        distill(self_distill_config(view_cache, teacher, tmp_path / "b", augment="reference"), progress=False)
    with pytest.raises(DimefmError, match="caches images with views"):
        encode(EncodeConfig("image", (str(view_cache.parent.parent / "t.tar"),), str(view_cache), views=2, workers=0),
               progress=False)


def test_a_flip_that_is_not_replayed_leaves_the_target(view_cache, teacher):
    """What the exact replay buys: the same crop without its flip no longer matches the cached row."""
    idx = load_cache(view_cache, sources=True)
    loaded = models.build(models.resolve_spec(str(teacher[0]), str(teacher[1])), quiet=True)
    pp = loaded.preprocess_cfg
    norm = view_transform(loaded.image_size, pp["mean"], pp["std"])
    reader = ImageReader(idx)
    locs = Locator.rows(idx.image_locs.take(np.arange(len(idx.images))))
    flipped = [r for r, loc in enumerate(locs) if loc.view and loc.flip][:3]
    from dimefm_pipeline.formats.images import decode_image

    with torch.no_grad():
        for r in flipped:
            img = decode_image(reader.read(r))
            same = norm(apply_view(img, locs[r].box, 1, loaded.image_size))[None]
            unflipped = norm(apply_view(img, locs[r].box, 0, loaded.image_size))[None]
            cached = torch.from_numpy(idx.images.take([r])).float()
            cos = [float((torch.nn.functional.normalize(loaded.model.encode_image(x), dim=-1) * cached).sum()) for x in (same, unflipped)]
            assert cos[0] >= 0.999 and cos[1] < cos[0]
