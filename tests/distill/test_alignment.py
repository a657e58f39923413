"""Tests that catch rows paired with the wrong row, each on sizes that do not divide evenly:

- every epoch is its own permutation (the rows left out change, so do the batches);
- with the student's own text tower trained, every sentence's token ids meet its own teacher row;
- a resumed run takes exactly the steps it has left, each on the batch the uninterrupted run had.

(Stage one's rows against their own locators and texts: tests/encode/test_row_order.py.)
"""

from __future__ import annotations

import numpy as np
import pytest

import dimefm_pipeline.distill.train as train
from dimefm_pipeline.distill.data import EpochPlan, ImageReader, image_loader, image_transform
from dimefm_pipeline.distill.train import distill
from dimefm_pipeline.encode.config import EncodeConfig
from dimefm_pipeline.encode.run import encode
from dimefm_pipeline.store.cache import load_cache
from tests.conftest import write_images
from tests.distill.test_data_path import PVL_MAX, metric_rows, self_distill_config

N_IMAGES, N_TEXTS = 27, 37  # neither divides by the batch sizes below


@pytest.fixture(scope="module")
def uneven_cache(teacher, tmp_path_factory):
    root = tmp_path_factory.mktemp("uneven")
    write_images(root / "imgs", N_IMAGES, size=(32, 32), seed=5)
    words = "red blue green small large circle square cat dog tree car house".split()
    (root / "s.txt").write_text("".join(f"a {words[i % 12]} {words[(i * 5 + 1) % 12]} number {i}\n" for i in range(N_TEXTS)))
    cache = root / "m" / "c.duckdb"
    common = dict(teacher=str(teacher[0]), pretrained=str(teacher[1]), workers=0, batch_size=5, shard_size=7)
    encode(EncodeConfig("image", (str(root / "imgs"),), str(cache), **common), progress=False)
    encode(EncodeConfig("text", (str(root / "s.txt"),), str(cache), **common), progress=False)
    return cache, teacher


@pytest.mark.parametrize("world,batch", [(1, 4), (2, 3)])
def test_every_epoch_is_its_own_permutation_and_leaves_out_other_rows(uneven_cache, world, batch):
    cache, _ = uneven_cache
    idx = load_cache(cache, verify=False, need_texts=False, sources=True)
    reader, tf = ImageReader(idx), image_transform("none", 32, (0.5,) * 3, (0.5,) * 3)
    n = len(idx.images)
    assert n == N_IMAGES and n % (batch * world)  # some rows are left out of every epoch
    left_out, firsts = [], []
    for epoch in range(4):
        rows = [r.numpy() for rank in range(world) for _, r, _ in image_loader(
            n, reader, tf, batch_size=batch, rank=rank, world=world, workers=0, seed=3, epoch=epoch)]
        seen = np.concatenate(rows)
        assert len(seen) == len(set(seen.tolist())) == n - n % (batch * world)
        left_out.append(frozenset(range(n)) - set(seen.tolist()))
        firsts.append(tuple(rows[0].tolist()))
        assert EpochPlan(n, batch, world, 3, epoch).rows(0, 0).tolist() == rows[0].tolist()
    assert len(set(left_out)) >= 3, "the same rows are left out of every epoch"
    assert len(set(firsts)) == 4, "epochs repeat their batches"
    assert len(set().union(*[set(range(n)) - lo for lo in left_out])) == n  # over epochs, every row is trained on


def test_the_students_own_text_tower_meets_each_sentences_own_teacher_row(uneven_cache, tmp_path):
    cache, teacher = uneven_cache
    out = tmp_path / "out"
    # the student is the teacher, text tower included, at learning rate 0: only a misaligned row moves a loss.
    # 37 sentences in steps of 5 wrap around the sentence permutation several times in 20 steps
    distill(self_distill_config(cache, teacher, out, text_tower="student", text_batch_size=5, steps=20, batch_size=4),
            progress=False)
    rows = metric_rows(out)
    assert [int(r["step"]) for r in rows] == list(range(1, 21))
    for term in ("pvl", "pvl_text", "vl", "vl_text"):
        worst = max(r[term] for r in rows)
        assert worst < 10 * PVL_MAX, f"{term}: {worst:.3g}"


def _record_steps(monkeypatch) -> list:
    """(step, image rows) of every optimiser step `distill` takes from now on."""
    taken = []
    real = train.step

    def counted(cfg, job, pixels, img_rows, device, **kw):
        taken.append((job.step + 1, tuple(int(r) for r in img_rows)))
        return real(cfg, job, pixels, img_rows, device, **kw)

    monkeypatch.setattr(train, "step", counted)
    return taken


def test_a_resumed_run_takes_exactly_the_steps_it_has_left_on_the_same_batches(uneven_cache, tmp_path, monkeypatch):
    cache, teacher = uneven_cache
    taken = _record_steps(monkeypatch)
    # 27 images in batches of 4: 6 steps an epoch, 3 rows left out; 14 steps cross two epoch boundaries
    kw = dict(steps=14, batch_size=4, lr=1e-3, min_lr=1e-4, text_tower="student", text_batch_size=5)
    distill(self_distill_config(cache, teacher, tmp_path / "full", **kw), progress=False)
    reference = list(taken)
    assert [s for s, _ in reference] == list(range(1, 15))
    taken.clear()
    out = tmp_path / "part"
    distill(self_distill_config(cache, teacher, out, stop_after=9, checkpoint_every=4, **kw), progress=False)
    (out / "checkpoints" / "step_00000009.pt").unlink()  # as if killed after step 9 was logged, before its checkpoint
    assert taken == reference[:9]
    taken.clear()
    distill(self_distill_config(cache, teacher, out, resume=True, checkpoint_every=4, **kw), progress=False)
    assert len(taken) == 14 - 8, f"the resume took {len(taken)} steps, from the checkpoint of step 8 it has 6 left"
    assert taken == reference[8:]  # the same steps on the same batches
    assert [int(r["step"]) for r in metric_rows(out)] == list(range(1, 15))
