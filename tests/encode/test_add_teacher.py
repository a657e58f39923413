"""`dimefm encode teacher`: a second teacher's rows in the same cache, aligned row for row with the
cache's own (every image view, every sentence), compared with what an encode from scratch with that
teacher gives for the same item; resumable, incremental, inspectable in SQL, refused when wrong."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from dimefm_pipeline.core.errors import DimefmError
from dimefm_pipeline.encode.teachers import AddTeacherConfig, _encode_shards, _register, add_teacher
from dimefm_pipeline.store.cache import load_cache
from tests.conftest import B_CONFIG, N_IMAGES, N_TEXTS, VIEWS, encode_sources, query, sentences, write_tiny_teacher

@pytest.fixture(scope="module")
def world(two_teacher_cache):
    return two_teacher_cache


def _by_item(cache, modality: str) -> dict:
    """(key, view) of each global row of the cache's own rows -> that row (a sentence's view is 0)."""
    rows = query(cache, "SELECT i.key, coalesce(i.\"view\", 0) FROM items i JOIN shards s ON s.shard_id = i.shard "
                        f"WHERE i.modality = '{modality}' ORDER BY s.shard_id, i.row")
    return {r: k for k, r in enumerate(rows)}


def test_every_added_row_is_the_new_teacher_on_that_rows_own_item_and_view(world):
    _, caches, _, done = world
    assert done["rows"] == N_IMAGES * VIEWS + N_TEXTS and done["shards"] == 7 + 4  # 111 rows in 16s, 29 in 8s
    idx = load_cache(caches["a"], teachers=("b",))
    own_b = load_cache(caches["b"])
    added = idx.teachers[0]
    assert added.name == "b" and added.images.dim == 24 and idx.images.dim == 32
    for modality, table, theirs in (("image", added.images, own_b.images), ("text", added.texts, own_b.texts)):
        here, there = _by_item(caches["a"], modality), _by_item(caches["b"], modality)
        assert set(here) == set(there) and len(here) == len(table)
        order = np.array([there[item] for item in sorted(here, key=here.get)])
        mine, ref = table[np.arange(len(table))].astype(np.float32), theirs.take(order).astype(np.float32)
        assert np.abs(mine - ref).max() < 2e-3, modality  # fp16 rows of the same inputs
        # and no row is any other item's (nearest row of B's own cache is the item's own)
        nearest = np.argmax(mine @ theirs[np.arange(len(theirs))].astype(np.float32).T, axis=1)
        assert (nearest == order).mean() > 0.97, modality


def test_sql_shows_which_teachers_each_item_has_and_their_embeddings(world):
    _, caches, _, _ = world
    counts = dict(((t, m), n) for t, m, n in query(
        caches["a"], "SELECT teacher, modality, count(*) FROM item_teachers GROUP BY ALL"))
    own = query(caches["a"], "SELECT name FROM teachers WHERE teacher_id = 1")[0][0]
    assert counts == {(own, "image"): N_IMAGES * VIEWS, (own, "text"): N_TEXTS,
                      ("b", "image"): N_IMAGES * VIEWS, ("b", "text"): N_TEXTS}
    assert query(caches["a"], "SELECT count(*), min(len(embedding)), max(len(embedding)) FROM teacher_embeddings "
                              "WHERE teacher = 'b'") == [(N_IMAGES * VIEWS + N_TEXTS, 24, 24)]
    # an item's row of teacher b joins with its key through the item id
    joined = query(caches["a"], "SELECT count(DISTINCT i.key) FROM teacher_embeddings e JOIN items i "
                                "ON i.item_id = e.item_id WHERE e.teacher = 'b' AND e.modality = 'image'")
    assert joined == [(N_IMAGES,)]


def test_a_cut_off_run_and_new_sources_encode_only_what_is_missing(world, teacher, tmp_path):
    root, caches, tb, _ = world
    shutil.copytree(caches["a"].parent, tmp_path / "a")
    cache = tmp_path / "a" / "run.duckdb"
    cfg = AddTeacherConfig(str(cache), str(tb[0]), str(tb[1]), name="b", batch_size=5)
    assert add_teacher(cfg, progress=False)["already"]
    # new sentences: a new shard without teacher b, which distill refuses until it is added
    (tmp_path / "more.txt").write_text(sentences(11, start=100))
    encode_sources(teacher, "text", [tmp_path / "more.txt"], cache, shard_size=8, batch_size=5)
    with pytest.raises(DimefmError, match=r"teacher 'b' has no rows for 2 text shard\(s\).*dimefm encode teacher"):
        load_cache(cache, teachers=("b",))
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "a" / "run" / "teachers").rglob("*.npy")}
    # a run killed after writing one of the two new companions, before committing it
    lock, (_, teacher_id, run_id, todo, _) = _register(cfg, "", 1, "b", _info(tb))
    lock.release()
    import torch

    from dimefm_pipeline.core import models

    loaded = models.build(models.resolve_spec(str(tb[0]), str(tb[1])), quiet=True)
    _encode_shards(cfg, loaded, load_cache(cache, sources=True), teacher_id, todo[:1], torch.device("cpu"), False,
                   lambda: 0)
    half = tmp_path / "a" / "run" / "teachers" / "002" / "0000099.npy.tmp"  # a file a kill left half-written
    half.write_bytes(b"\x93NUMPY")
    done = add_teacher(cfg, progress=False)
    assert not half.exists()
    assert done["rows"] == 3 and done["shards"] == 2  # 11 sentences in 8 + 3: the marker of the 8 is committed
    after = {p: p.stat().st_mtime_ns for p in before}
    assert after == before  # the earlier companions were not written again
    idx = load_cache(cache, teachers=("b",))
    assert len(idx.teachers[0].texts) == N_TEXTS + 11


def _info(tb):
    from dimefm_pipeline.core import models
    from dimefm_pipeline.store.manifest import TeacherInfo

    return TeacherInfo.of_model(models.build(models.resolve_spec(str(tb[0]), str(tb[1])), quiet=True))


def test_a_name_or_weights_already_taken_are_refused(world, teacher, tmp_path):
    _, caches, tb, _ = world
    other = write_tiny_teacher(tmp_path, "teacher-c", seed=5, config=B_CONFIG)
    with pytest.raises(DimefmError, match="already has a teacher named 'b' with other weights"):
        add_teacher(AddTeacherConfig(str(caches["a"]), str(other[0]), str(other[1]), name="b"), progress=False)
    with pytest.raises(DimefmError, match=r"already has these weights as teacher 'tiny-teacher-s0' \(the cache's own\)"):
        add_teacher(AddTeacherConfig(str(caches["a"]), str(teacher[0]), str(teacher[1]), name="again"), progress=False)
    with pytest.raises(DimefmError, match=r"already has these weights as teacher 'tiny-teacher-s0' \(the cache's own\)"):
        add_teacher(AddTeacherConfig(str(caches["a"]), str(teacher[0]), str(teacher[1])), progress=False)  # its own name
    with pytest.raises(DimefmError, match="no teacher named 'nobody'"):
        load_cache(caches["a"], teachers=("nobody",))


def test_info_lists_every_teacher_with_its_rows_and_verify_knows_their_files(world):
    from tests.conftest import run_cli

    _, caches, _, _ = world
    r = run_cli("info", "--cache", caches["a"], "--verify", env={"COLUMNS": "250"})
    assert r.returncode == 0, r.stderr
    line = next(x for x in r.stdout.splitlines() if "│ b " in x)
    assert "24" in line and f"{N_IMAGES * VIEWS}" in line and f"{N_TEXTS}" in line
    assert "all " in r.stdout and "match their checksums" in r.stdout


def test_two_torchrun_ranks_add_the_same_rows_as_one_process(world, tmp_path):
    import os
    import subprocess
    import sys

    _, caches, _, _ = world
    tc = write_tiny_teacher(tmp_path / "tc", "teacher-c", seed=7, config=B_CONFIG)
    args = ["encode", "teacher", "--teacher", tc[0], "--pretrained", tc[1], "--name", "c", "--batch-size", "6"]
    tables = []
    for how in ("one", "two"):
        shutil.copytree(caches["a"].parent, tmp_path / how)
        cache = tmp_path / how / "run.duckdb"
        if how == "one":
            add_teacher(AddTeacherConfig(str(cache), str(tc[0]), str(tc[1]), name="c", batch_size=6), progress=False)
        else:
            env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1", "DIMEFM_PROGRESS_SECONDS": "0"}
            r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                                "-m", "dimefm_pipeline", *map(str, args), "--cache", str(cache)],
                               capture_output=True, text=True, timeout=300, env=env)
            assert r.returncode == 0, r.stderr[-3000:]
            assert f"{N_IMAGES * VIEWS + N_TEXTS:,} rows in 11 shard(s)" in r.stdout
        t = load_cache(cache, teachers=("c",)).teachers[0]
        tables.append([x[np.arange(len(x))].astype(np.float32) for x in (t.images, t.texts)])
    assert query(tmp_path / "two" / "run.duckdb", "SELECT world_size, status FROM runs WHERE kind = 'encode-teacher' "
                                                  "AND config LIKE '%\"c\"%'") == [(2, "complete")]
    for one, two in zip(*tables):
        assert one.shape == two.shape and np.abs(one - two).max() < 2e-3


def test_an_image_changed_since_stage_one_fails_the_run_and_keeps_what_finished(world, tmp_path):
    root, caches, _, _ = world
    shutil.copytree(caches["a"].parent, tmp_path / "a")
    shutil.copytree(root / "images", tmp_path / "images")
    cache = tmp_path / "a" / "run.duckdb"
    from dimefm_pipeline.app.relocate import relocate_source

    relocate_source(str(cache), "1", str(tmp_path / "images"))
    last = query(cache, "SELECT f.path FROM items i JOIN source_files f ON f.source_id = i.source AND f.file_id = i.file "
                        "WHERE i.modality = 'image' ORDER BY i.shard DESC, i.row DESC LIMIT 1")[0][0]
    data = bytearray((tmp_path / "images" / last).read_bytes())
    data[-200:-100] = bytes(100)  # the same size (the start-up check passes), other bytes
    (tmp_path / "images" / last).write_bytes(bytes(data))
    tc = write_tiny_teacher(tmp_path / "tc", "teacher-c", seed=8, config=B_CONFIG)
    with pytest.raises(DimefmError, match=r"image row \d+ cannot be read again \(bytes differ"):
        add_teacher(AddTeacherConfig(str(cache), str(tc[0]), str(tc[1]), name="c", batch_size=16), progress=False)
    runs = query(cache, "SELECT status FROM runs WHERE kind = 'encode-teacher' ORDER BY run_id DESC LIMIT 1")
    done = query(cache, "SELECT count(*) FROM teacher_shards c JOIN teachers t USING (teacher_id) WHERE t.name = 'c'")
    assert runs == [("failed",)] and done == [(6,)]  # the image shards before the last one's
