"""Stage one end to end: exact equality with open_clip, resume, teacher checks, views, single writer."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dimefm_pipeline.core import models
from dimefm_pipeline.encode.config import EncodeConfig
from dimefm_pipeline.encode.run import encode
from dimefm_pipeline.core.errors import DimefmError
from dimefm_pipeline.store.manifest import Manifest, catalog
from dimefm_pipeline.core.locks import is_held
from tests.conftest import run_cli, write_images, write_tiny_teacher, plain_duckdb


def _encode(teacher, modality, sources, cache, **kw):
    cfg_path, ckpt = teacher
    kw.setdefault("workers", 0)
    kw.setdefault("batch_size", 8)
    cfg = EncodeConfig(modality, tuple(map(str, sources)), str(cache), teacher=str(cfg_path), pretrained=str(ckpt), **kw)
    return encode(cfg, progress=False)


def _cached(cache, view):
    con = plain_duckdb(cache)
    rows = con.execute(f"SELECT key, embedding FROM {view} ORDER BY key").fetchall()
    con.close()
    return {k: np.asarray(e, dtype=np.float32) for k, e in rows}


def test_cached_embeddings_equal_open_clip_encode(teacher, images, tmp_path):
    from PIL import Image

    cache = tmp_path / "m" / "run1.duckdb"
    _encode(teacher, "image", [images], cache, workers=2, shard_size=7)
    sentences = ["a red circle on the left", "two blue squares", "a photo of a cat"]
    (tmp_path / "s.txt").write_text("\n".join(sentences) + "\n")
    _encode(teacher, "text", [tmp_path / "s.txt"], cache)

    loaded = models.build(models.resolve_spec(str(teacher[0]), str(teacher[1])), quiet=True)
    got = _cached(cache, "image_embeddings")
    assert len(got) == 24
    for key, emb in got.items():
        x = loaded.preprocess(Image.open(images / key))[None]
        ref = torch.nn.functional.normalize(loaded.model.encode_image(x), dim=-1)[0].numpy()
        np.testing.assert_allclose(emb, ref, atol=2e-3)
    texts = _cached(cache, "text_embeddings")
    ref = torch.nn.functional.normalize(loaded.model.encode_text(loaded.tokenizer(sentences)), dim=-1).numpy()
    for i, s in enumerate(sentences):
        np.testing.assert_allclose(texts[str(i + 1)], ref[i], atol=2e-3)
    # the memory-mapped hot path holds the same numbers as the SQL view
    with Manifest(cache, read_only=True) as man:
        npys = [np.load(f[0]) for f in catalog.shard_files(man, "image")]
        assert all(a.dtype == np.float16 for a in npys)
        assert sum(len(a) for a in npys) == 24 and max(len(a) for a in npys) <= 7
        tag = man.query("SELECT tags['storage_version'] FROM duckdb_databases() WHERE NOT internal").fetchall()[0][0]
        assert tag.startswith("v1.0"), tag  # readable by DuckDB 1.1 clients


def test_rerun_skips_completed_units_and_appends_new_sources(teacher, images, tmp_path):
    cache = tmp_path / "run.duckdb"
    first = _encode(teacher, "image", [images], cache, shard_size=10)
    assert (first.units_done, first.items) == (3, 24)
    again = _encode(teacher, "image", [images], cache, shard_size=10)
    assert (again.units_done, again.units_skipped, again.items) == (0, 3, 0)
    more = tmp_path / "more"
    write_images(more, 5, seed=1)
    third = _encode(teacher, "image", [images, more], cache, shard_size=10)
    assert (third.units_done, third.items) == (1, 5)
    with Manifest(cache, read_only=True) as man:
        counts = dict(man.query("SELECT source, count(*) FROM items GROUP BY ALL").fetchall())
        assert counts == {1: 24, 2: 5}
        assert man.query("SELECT count(DISTINCT item_id) FROM items").fetchall()[0][0] == 29


def test_changed_source_is_refused(teacher, images, tmp_path):
    cache = tmp_path / "run.duckdb"
    _encode(teacher, "image", [images], cache)
    write_images(images / "new", 1, seed=9)
    with pytest.raises(DimefmError, match="changed since it was cached"):
        _encode(teacher, "image", [images], cache)


def test_teacher_mismatch_is_refused_with_one_line(teacher, images, tmp_path):
    cache = tmp_path / "run.duckdb"
    _encode(teacher, "image", [images], cache)
    other_cfg, other_ckpt = write_tiny_teacher(tmp_path / "other", seed=1)
    r = run_cli("encode", "images", images, "--cache", cache, "--teacher", other_cfg, "--pretrained", other_ckpt, "--workers", "0")
    assert r.returncode == 2
    assert "holds embeddings of teacher" in r.stderr and "Traceback" not in r.stderr
    # the texts command reuses the manifest's teacher when none is given
    (tmp_path / "s.txt").write_text("a sentence\n")
    r = run_cli("encode", "texts", tmp_path / "s.txt", "--cache", cache, "--workers", "0")
    assert r.returncode == 0, r.stderr
    with Manifest(cache, read_only=True) as man:
        assert man.query("SELECT count(*) FROM items WHERE modality = 'text'").fetchall()[0][0] == 1


def test_missing_pretrained_and_bad_paths_are_user_errors(teacher, tmp_path):
    r = run_cli("encode", "images", tmp_path / "nope", "--cache", tmp_path / "m.duckdb", "--teacher", teacher[0], "--pretrained", teacher[1])
    assert r.returncode == 2 and "no such file or folder" in r.stderr and "Traceback" not in r.stderr
    (tmp_path / "imgs").mkdir()
    write_images(tmp_path / "imgs", 2)
    r = run_cli("encode", "images", tmp_path / "imgs", "--cache", tmp_path / "m.duckdb", "--teacher", teacher[0])
    assert r.returncode == 2 and "--pretrained is required" in r.stderr
    r = run_cli("encode", "images", tmp_path / "imgs", "--cache", tmp_path / "m.duckdb", "--bogus-flag")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    (tmp_path / "notdb.duckdb").write_text("this is not a database")
    r = run_cli("info", "--cache", tmp_path / "notdb.duckdb")
    assert r.returncode == 2 and "Traceback" not in r.stderr


def test_a_manifest_held_too_long_by_another_process_is_a_clear_error(tmp_path):
    path = tmp_path / "m.duckdb"
    (tmp_path / "x.txt").write_text("hello\n")
    with Manifest(path, create=True):
        r = run_cli("encode", "texts", tmp_path / "x.txt", "--cache", path, env={"DIMEFM_MANIFEST_WAIT": "1"})
        assert r.returncode == 2 and "another process" in r.stderr, r.stderr


def test_readers_are_not_blocked_by_an_encode_and_a_second_encode_is_refused(teacher, tmp_path):
    import signal
    import subprocess
    import sys
    import time

    write_images(tmp_path / "imgs", 120, size=(24, 24))
    cache = tmp_path / "m.duckdb"
    r = run_cli("encode", "images", tmp_path / "imgs", "--cache", cache, "--teacher", teacher[0], "--pretrained", teacher[1],
                "--shard-size", "60")  # the manifest exists; the second source below is encoded while we read
    assert r.returncode == 0, r.stderr
    write_images(tmp_path / "more", 1000, size=(24, 24), seed=5)
    cmd = [sys.executable, "-m", "dimefm_pipeline", "encode", "images", str(tmp_path / "more"), "--cache", str(cache),
           "--shard-size", "4", "--batch-size", "2", "--workers", "0"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    try:
        deadline = time.time() + 60
        while time.time() < deadline and not is_held(cache.with_suffix("") / ".encode.lock"):
            time.sleep(0.05)
        r = run_cli("encode", "images", tmp_path / "more", "--cache", cache)
        assert r.returncode == 2 and "one encode at a time" in r.stderr, r.stderr
        counts = []
        for _ in range(3):
            r = run_cli("sql", "--cache", cache, "SELECT count(*) AS n FROM items", "--csv")
            assert r.returncode == 0, r.stderr
            counts.append(int(r.stdout.splitlines()[1]))
        assert proc.poll() is None, "the encode must still be running while we read"
    finally:
        proc.send_signal(signal.SIGINT)  # stopped once read: what it finished stays, the rerun does the rest
        assert proc.wait(timeout=120) == 130, proc.stderr.read()[-2000:]
    assert counts[0] >= 120 and counts == sorted(counts)
    r = run_cli("encode", "images", tmp_path / "more", "--cache", cache)
    assert r.returncode == 0, r.stderr
    r = run_cli("sql", "--cache", cache, "SELECT count(*) AS n FROM items", "--csv")
    assert r.stdout.splitlines()[1] == "1120"


def test_views_work_from_any_directory_and_after_moving_the_folder(teacher, images, tmp_path, monkeypatch):
    import shutil

    root = tmp_path / "proj"
    cache = root / "manifests" / "run1.duckdb"
    _encode(teacher, "image", [images], cache)
    monkeypatch.chdir(tmp_path)
    before = _cached(cache, "image_embeddings")
    moved = tmp_path / "elsewhere"
    shutil.move(str(root), str(moved))
    new_cache = moved / "manifests" / "run1.duckdb"
    r = run_cli("info", "--cache", new_cache)  # the views name their shards relative to the manifest: nothing to refresh
    assert r.returncode == 0, r.stderr
    after = _cached(new_cache, "image_embeddings")
    assert before.keys() == after.keys()
    assert all(np.array_equal(before[k], after[k]) for k in before)
    r = run_cli("info", "--cache", new_cache, "--verify")
    assert r.returncode == 0 and "cache files match their checksums" in r.stdout, r.stdout + r.stderr


def test_sql_command_runs_read_only_queries(teacher, images, tmp_path):
    cache = tmp_path / "run.duckdb"
    _encode(teacher, "image", [images], cache)
    r = run_cli("sql", "--cache", cache, "SELECT source, count(*) AS n FROM items GROUP BY ALL", "--csv")
    assert r.returncode == 0 and r.stdout.splitlines() == ["source,n", "1,24"]
    r = run_cli("sql", "--cache", cache, "DELETE FROM items")
    assert r.returncode == 2 and "read-only" in r.stderr.lower()


def test_a_tars_captions_join_the_cache_of_its_images_and_a_refusal_leaves_no_run(teacher, tmp_path):
    """One tar is an image source and a sentence source of one cache; an overlapping source of the same
    modality is refused in one line naming the shared file once, and leaves the manifest as it was."""
    import io
    import tarfile

    from PIL import Image

    tar = tmp_path / "shard-00000.tar"
    with tarfile.open(tar, "w") as tf:
        for i in range(4):
            buf = io.BytesIO()
            Image.new("RGB", (20, 16), (40 * i, 90, 200)).save(buf, "JPEG")
            for ext, data in (("jpg", buf.getvalue()), ("txt", f"a photo of thing {i}".encode())):
                info = tarfile.TarInfo(f"{i:09d}.{ext}")
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    cache = tmp_path / "m" / "run.duckdb"
    t = ["--teacher", teacher[0], "--pretrained", teacher[1], "--workers", "0"]
    for modality in ("images", "texts"):
        r = run_cli("encode", modality, tar, "--cache", cache, *t)
        assert r.returncode == 0, r.stderr
    with Manifest(cache, read_only=True) as man:
        assert man.query("SELECT modality, count(*) FROM items GROUP BY ALL ORDER BY 1").fetchall() == [("image", 4), ("text", 4)]
        runs = man.query("SELECT run_id, kind, status FROM runs ORDER BY run_id").fetchall()
    assert runs == [(1, "encode-image", "complete"), (2, "encode-text", "complete")]
    import shutil

    shutil.copy(tar, tmp_path / "shard-00001.tar")  # a new source that holds the cached tar and one more
    r = run_cli("encode", "images", str(tmp_path / "shard-{00000..00001}.tar"), "--cache", cache)
    assert r.returncode == 2 and r.stderr.count("shard-00000.tar") == 1, r.stderr  # the shared file named once
    assert "is already cached as source 1" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    with Manifest(cache, read_only=True) as man:
        assert man.query("SELECT run_id, kind, status FROM runs ORDER BY run_id").fetchall() == runs
        assert man.query("SELECT count(*) FROM sources").fetchall()[0][0] == 2


def test_a_random_teacher_is_announced(teacher, images, tmp_path):
    r = run_cli("encode", "images", images, "--cache", tmp_path / "m.duckdb", "--teacher", teacher[0], "--pretrained",
                "random", "--workers", "0")
    assert r.returncode == 0, r.stderr
    assert "warning: teacher tiny-teacher has random weights (--pretrained random)" in r.stderr
    r = run_cli("encode", "images", images, "--cache", tmp_path / "n.duckdb", "--teacher", teacher[0], "--pretrained",
                teacher[1], "--workers", "0")
    assert r.returncode == 0 and "random weights" not in r.stderr, r.stderr


def test_weights_that_cannot_be_downloaded_are_one_line_with_the_fix(images, tmp_path):
    env = {"HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}  # an empty cache, no network
    r = run_cli("encode", "images", images, "--cache", tmp_path / "m" / "run.duckdb", "--teacher", "RN50",
                "--pretrained", "openai", env=env)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: cannot load open_clip weights"), r.stderr
    assert "pass a local checkpoint file as --pretrained" in lines[0]
    assert not (tmp_path / "m").exists()
