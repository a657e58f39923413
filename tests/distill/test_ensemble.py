"""Distilling from several teachers of one cache: each teacher's targets of a step are its rows of
the same image views and sentences, the run records its teachers, and teachers that cannot be
combined are refused before the first step."""

from __future__ import annotations

import json
import shutil
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from dimefm_pipeline.core.errors import DimefmError
from dimefm_pipeline.distill.config import DistillConfig
from dimefm_pipeline.distill.data import TextSampler
from dimefm_pipeline.distill.train import distill, step_inputs
from dimefm_pipeline.store.cache import load_cache
from tests.conftest import TINY_STUDENT, query

OWN = "tiny-teacher-s0"  # the cache's own teacher, named after its weights file
NO_DIRECT = dict(w_pvl=0.0, w_vl_text=0.0, w_pvl_text=0.0, w_udist=0.3)  # teacher b's dim (24) is not the student's (32)


def _cfg(cache, out, **kw):
    base = dict(cache=str(cache), out=str(out), student=str(out) + ".json", batch_size=6, text_batch_size=7, steps=3,
                workers=0, augment="none", checkpoint_every=100, log_every=1, teachers=f"{OWN},b", **NO_DIRECT)
    base.update(kw)
    return DistillConfig.from_dict(base)


def _item(cache, modality: str) -> list:
    """(key, view) of each global row of the cache's own rows."""
    return query(cache, "SELECT i.key, coalesce(i.\"view\", 0) FROM items i JOIN shards s ON s.shard_id = i.shard "
                        f"WHERE i.modality = '{modality}' ORDER BY s.shard_id, i.row")


def test_each_teachers_targets_are_its_rows_of_the_same_views_and_sentences(two_teacher_cache, tmp_path):
    _, caches, _, _ = two_teacher_cache
    cfg = _cfg(caches["a"], tmp_path / "unused")
    idx = load_cache(caches["a"], teachers=cfg.teacher_names)
    job = SimpleNamespace(idx=idx, pairs=None, tokens=None, step=4,
                          texts=TextSampler(np.arange(len(idx.texts)), 7, rank=0, world=1, seed=3))
    img_rows = np.array([1, 17, 40, 64, 95, 110])  # views of images in five of the seven image shards
    targets, _ = step_inputs(cfg, job, img_rows, torch.device("cpu"))
    txt_rows = np.sort(job.texts.rows(4))
    assert [t["image"].shape[1] for t in targets] == [32, 24]
    # teacher a: the cache's own rows; teacher b: B's own encode of the same (key, view), found by item
    np.testing.assert_array_equal(targets[0]["image"].numpy(), idx.images.take(img_rows))
    own_b = load_cache(caches["b"])
    for modality, rows, got in (("image", img_rows, targets[1]["image"]), ("text", txt_rows, targets[1]["text"])):
        items_a, items_b = _item(caches["a"], modality), _item(caches["b"], modality)
        where_b = {item: r for r, item in enumerate(items_b)}
        table = own_b.images if modality == "image" else own_b.texts
        expected = table.take(np.array([where_b[items_a[r]] for r in rows]))
        assert np.abs(got.numpy().astype(np.float32) - expected.astype(np.float32)).max() < 2e-3, modality


def test_a_two_teacher_run_trains_and_records_its_teachers(two_teacher_cache, tmp_path):
    _, caches, _, _ = two_teacher_cache
    shutil.copytree(caches["a"].parent, tmp_path / "a")
    cache = tmp_path / "a" / "run.duckdb"
    (tmp_path / "s.json").write_text(json.dumps(TINY_STUDENT))
    from dimefm_pipeline.mine.config import MineConfig
    from dimefm_pipeline.mine.run import mine_cache

    mine_cache(MineConfig(str(cache), 3), progress=False)  # a two-teacher cache is mined like any (its own teacher)
    runs = {}
    for name, kw in (("both", {}), ("own-only", {"teacher_weights": "1,0"}), ("plain", {"teachers": None})):
        out = tmp_path / name
        kw = {"student": str(tmp_path / "s.json"), "mined_share": 0.5, **kw}
        runs[name] = distill(_cfg(cache, out, **kw), progress=False)
    about = json.loads((tmp_path / "both" / "open_clip_config.json").read_text())["dimefm"]
    assert [(t["name"], t["weight"], t["logit_scale"]) for t in about["teachers"]] == [(OWN, 0.5, 100.0), ("b", 0.5, 100.0)]
    assert about["ensemble"] == "mean"
    # weight 0 for teacher b is the one-teacher run, bit for bit; weight 0.5 is not
    weights = {n: (tmp_path / n / "open_clip_model.safetensors").read_bytes() for n in runs}
    assert weights["own-only"] == weights["plain"] and weights["both"] != weights["plain"]


def test_teachers_that_cannot_be_combined_are_refused_before_any_step(two_teacher_cache, tmp_path):
    _, caches, _, _ = two_teacher_cache
    (tmp_path / "s.json").write_text(json.dumps(TINY_STUDENT))
    student = str(tmp_path / "s.json")
    with pytest.raises(DimefmError, match=r"teacher\(s\) b have another embedding dim than the student \(32.*--w-pvl"):
        distill(_cfg(caches["a"], tmp_path / "o1", student=student, w_pvl=0.3), progress=False)
    with pytest.raises(DimefmError, match="no teacher named 'c'"):
        distill(_cfg(caches["a"], tmp_path / "o2", student=student, teachers=f"{OWN},c"), progress=False)
    with pytest.raises(DimefmError, match="--teacher-weights needs one non-negative number for each of the 2"):
        _cfg(caches["a"], tmp_path / "o3", teacher_weights="1")
    with pytest.raises(DimefmError, match="--teachers must name each teacher once"):
        _cfg(caches["a"], tmp_path / "o4", teachers="b,b")
    assert not (tmp_path / "o1" / "checkpoints").exists()
