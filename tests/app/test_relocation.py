"""Paths that move: relative patterns, touched files, copies of the data, moved caches, re-created caches."""

from __future__ import annotations

import os
import shutil

import duckdb
import numpy as np
import pytest

from dimefm_pipeline.store.tables import EmbeddingTable
from dimefm_pipeline.distill.train import distill
from dimefm_pipeline.encode.config import EncodeConfig
from dimefm_pipeline.encode.run import encode
from dimefm_pipeline.core.errors import DimefmError
from dimefm_pipeline.app.relocate import relocate_source
from tests.conftest import plain_duckdb, run_cli, write_images
from tests.distill.test_data_path import _png, assert_every_batch_on_target, metric_rows, self_distill_config, write_tar


def _data(root):
    """Two tars, a folder and a sentence file under root/data."""
    data = root / "data"
    for t in range(2):
        write_tar(data / f"shard-{t}.tar" if data.exists() else _mkdir(data) / f"shard-{t}.tar",
                  [(f"{i:03d}.png", _png(50 * t + i)) for i in range(7 + t)])
    write_images(data / "imgs", 9, size=(32, 32), seed=3)
    (data / "s.txt").write_text("".join(f"a sentence about thing {i}\n" for i in range(30)))
    return data


def _mkdir(p):
    p.mkdir(parents=True, exist_ok=True)
    return p


def _encode(teacher, cache, images, texts, **kw):
    common = dict(teacher=str(teacher[0]), pretrained=str(teacher[1]), workers=0, batch_size=4, shard_size=4, **kw)
    for modality, sources in (("image", images), ("text", texts)):
        if sources:
            encode(EncodeConfig(modality, tuple(sources), str(cache), **common), progress=False)


def test_distill_works_from_any_directory_after_relative_brace_patterns(teacher, tmp_path, monkeypatch):
    _data(tmp_path)
    monkeypatch.chdir(tmp_path)
    _encode(teacher, "m/c.duckdb", ["data/shard-{0..1}.tar", "data/imgs"], ["data/s.txt"])
    elsewhere = _mkdir(tmp_path / "elsewhere")
    monkeypatch.chdir(elsewhere)
    distill(self_distill_config(tmp_path / "m" / "c.duckdb", teacher, elsewhere / "out", steps=6), progress=False)
    assert_every_batch_on_target(metric_rows(elsewhere / "out"), 6)
    con = plain_duckdb(tmp_path / "m" / "c.duckdb")
    uris = [r[0] for r in con.execute("SELECT uri FROM sources ORDER BY source_id").fetchall()]
    con.close()
    assert uris[0] == str(tmp_path / "data" / "shard-{0..1}.tar") and all(os.path.isabs(u) for u in uris)


def test_touched_files_are_checked_by_content_and_changed_ones_refused(teacher, tmp_path):
    data = _data(tmp_path)
    cache = tmp_path / "m.duckdb"
    sources = [str(data / "shard-{0..1}.tar"), str(data / "imgs")]
    _encode(teacher, cache, sources, [str(data / "s.txt")])
    later = 2_000_000_000
    for p in [*data.glob("*.tar"), *(data / "imgs").rglob("*.png"), data / "s.txt"]:
        os.utime(p, (later, later))  # a copy or a `touch`: new timestamps, same bytes
    _encode(teacher, cache, sources, [str(data / "s.txt")])  # accepted, nothing re-encoded
    con = plain_duckdb(cache)
    assert con.execute("SELECT count(*) FROM items").fetchall()[0][0] == 7 + 8 + 9 + 30
    assert con.execute("SELECT min(mtime_ns) FROM source_files").fetchall()[0][0] == later * 10**9
    con.close()
    victim = sorted((data / "imgs").rglob("*.png"))[0]
    raw = bytearray(victim.read_bytes())
    raw[-20] ^= 0xFF  # same size, other bytes
    victim.write_bytes(bytes(raw))
    with pytest.raises(DimefmError, match="differ from what was cached"):
        _encode(teacher, cache, sources, [str(data / "s.txt")])
    lines = (data / "s.txt").read_text().replace("thing 3\n", "thang 3\n")
    (data / "s.txt").write_text(lines)
    with pytest.raises(DimefmError, match="sentence.*differ"):
        encode(EncodeConfig("text", (str(data / "s.txt"),), str(cache), workers=0), progress=False)


def test_relocate_checks_the_copy_then_distill_reads_it(teacher, tmp_path):
    data = _data(tmp_path)
    cache = tmp_path / "m" / "c.duckdb"
    _encode(teacher, cache, [str(data / "shard-{0..1}.tar"), str(data / "imgs")], [str(data / "s.txt")])
    copy = tmp_path / "ssd" / "copy"
    shutil.copytree(data, copy)
    shutil.move(data, tmp_path / "gone")
    with pytest.raises(DimefmError, match="sources relocate"):
        distill(self_distill_config(cache, teacher, tmp_path / "a", steps=2), progress=False)

    # a copy with a missing file, and one with the same sizes but other bytes, are refused; nothing changes
    broken = tmp_path / "broken"
    shutil.copytree(copy, broken)
    (broken / "shard-1.tar").unlink()
    with pytest.raises(DimefmError, match="does not hold source 1's files"):
        relocate_source(str(cache), "1", str(broken))
    shutil.copy(copy / "shard-1.tar", broken / "shard-1.tar")
    (broken / "shard-0.tar").write_bytes((copy / "shard-1.tar").read_bytes()[: (copy / "shard-0.tar").stat().st_size])
    with pytest.raises(DimefmError, match="other bytes"):
        relocate_source(str(cache), "1", str(broken), items=None)
    con = plain_duckdb(cache)
    assert con.execute("SELECT root FROM sources WHERE source_id = 1").fetchall()[0][0] == str(tmp_path / "data")
    con.close()

    with pytest.raises(DimefmError, match="no single source matches"):
        relocate_source(str(cache), str(tmp_path / "data"), str(copy))  # the tars' and the text's root: ambiguous
    for which, modality in ((str(tmp_path / "data" / "shard-{0..1}.tar"), "tars"), ("2", "folder"), ("3", "text")):
        r = run_cli("sources", "relocate", which, copy / "imgs" if modality == "folder" else copy, "--cache", cache, "--items", "-1")
        assert r.returncode == 0, r.stderr
    distill(self_distill_config(cache, teacher, tmp_path / "b", steps=6), progress=False)
    assert_every_batch_on_target(metric_rows(tmp_path / "b"), 6)  # the copy's bytes, each on its own row
    con = plain_duckdb(cache)
    moves = con.execute("SELECT source_id, new_root, items_checked FROM source_moves ORDER BY source_id").fetchall()
    uri = con.execute("SELECT uri FROM sources WHERE source_id = 1").fetchall()[0][0]
    con.close()
    assert moves == [(1, str(copy), 15), (2, str(copy / "imgs"), 9), (3, str(copy), 30)]
    assert uri == str(copy / "shard-{0..1}.tar")
    # the same data given again under its new path is the same source: nothing is encoded twice
    _encode(teacher, cache, [str(copy / "shard-{0..1}.tar")], [])


def test_a_moved_cache_keeps_its_views_in_plain_duckdb(tiny_cache, tmp_path, monkeypatch):
    cache, _ = tiny_cache
    moved = tmp_path / "moved"
    shutil.copytree(cache.parent, moved)
    monkeypatch.chdir(moved)  # a plain client started in the manifest's folder, as the cookbook says
    con = duckdb.connect(cache.name, read_only=True)
    assert con.execute("SELECT count(*) FROM image_embeddings").fetchall()[0][0] == 64
    assert con.execute("SELECT count(*) FROM text_embeddings").fetchall()[0][0] == 60
    con.close()
    monkeypatch.chdir(tmp_path)
    r = run_cli("sql", "--cache", moved / cache.name, "SELECT count(*) AS n FROM image_embeddings", "--csv")
    assert r.returncode == 0 and r.stdout.splitlines()[1] == "64", r.stderr
    assert not (moved / (cache.name + ".wal")).exists()  # reading wrote nothing


def test_token_ids_follow_the_sentences_not_the_file_names(teacher, tmp_path):
    from dimefm_pipeline.store.cache import load_cache
    from dimefm_pipeline.store.tokens import build_token_shards
    import open_clip

    images = tmp_path / "imgs"
    write_images(images, 8, size=(32, 32))
    cache = tmp_path / "m" / "c.duckdb"
    tok = open_clip.get_tokenizer("ViT-B-32")
    for words in ("red circle", "blue square"):
        if cache.exists():
            cache.unlink()
            shutil.rmtree(cache.with_suffix("") / "image")
            shutil.rmtree(cache.with_suffix("") / "text")  # the tokens folder stays, as after `rm` of a cache
        (tmp_path / "s.txt").write_text("".join(f"a {words} number {i}\n" for i in range(10)))
        _encode(teacher, cache, [str(images)], [str(tmp_path / "s.txt")])
        ids = build_token_shards(load_cache(cache), tok).take(np.arange(10))
        np.testing.assert_array_equal(ids, tok([f"a {words} number {i}" for i in range(10)]).numpy())


def test_rows_outside_a_table_are_refused(tiny_cache, tmp_path):
    from dimefm_pipeline.store.cache import load_cache

    idx = load_cache(tiny_cache[0])
    n = len(idx.images)
    assert idx.images.take(np.array([0, n - 1])).shape == (2, idx.images.dim)
    whole = np.concatenate([np.asarray(a) for a in idx.images.arrays])  # 64 rows in 4 shards
    want = np.random.default_rng(0).integers(0, n, 40)  # any order, repeats, several shards
    np.testing.assert_array_equal(idx.images.take(want), whole[want])
    np.testing.assert_array_equal(idx.images.take(np.sort(want)), whole[np.sort(want)])  # the straight-gather path
    # empty shards in between (a unit whose items all failed) shift no row
    parts = [idx.images.arrays[0], whole[:0], *idx.images.arrays[1:], whole[:0]]
    for i, a in enumerate(parts):
        np.save(tmp_path / f"{i}.npy", np.asarray(a))
    sizes = [len(a) for a in parts]
    gappy = EmbeddingTable([tmp_path / f"{i}.npy" for i in range(len(parts))], sizes)
    for rows in (want, np.sort(want), np.array([sizes[0] - 1, sizes[0], n - 1])):
        np.testing.assert_array_equal(gappy.take(rows), whole[rows])
    for bad in ([-1], [n], [3, -2], [0, n]):
        with pytest.raises(IndexError, match="outside the table"):
            idx.images.take(np.array(bad))
    assert isinstance(idx.images, EmbeddingTable)


def test_images_encoded_after_mining_train_without_mined_pairs(cache_copy, tmp_path, teacher):
    from types import SimpleNamespace

    import torch

    from dimefm_pipeline.store.cache import load_cache
    from dimefm_pipeline.distill.config import DistillConfig
    from dimefm_pipeline.distill.train import _mined_captions

    cache, student = cache_copy
    write_images(tmp_path / "late", 8, size=(32, 32), seed=9)
    encode(EncodeConfig("image", (str(tmp_path / "late"),), str(cache), teacher=str(teacher[0]), pretrained=str(teacher[1]),
                        workers=0, batch_size=4), progress=False)
    idx = load_cache(cache, pairs=True)
    pairs = idx.pairs
    late = np.flatnonzero(pairs[:, 0] < 0)
    assert len(late) == 8 and len(pairs) == 72
    rows = np.array([0, late[0], 1, late[1]])
    t_img = torch.from_numpy(idx.images.take(rows)).float()
    mined = _mined_captions(SimpleNamespace(pairs=pairs, idx=idx), idx.texts, rows, 2, t_img)
    assert torch.equal(mined[1, 0], t_img[1]) and torch.equal(mined[3, 1], t_img[3])  # own teacher row
    assert torch.equal(mined[0, 0], torch.from_numpy(idx.texts.take(pairs[0, :1].astype(np.int64))[0]).float())
    cfg = DistillConfig.from_dict(dict(cache=str(cache), out=str(tmp_path / "out"), student=str(student), batch_size=8,
                                       steps=10, workers=0, augment="none", text_filter="mined", mined_share=0.5,
                                       w_pvl_mined=0.2, pvl_mined_k=2))
    r = distill(cfg, progress=False)
    assert r.steps == 10 and np.isfinite(r.final["pvl_mined"])
