"""Exactly-once under SIGKILL, and the same cache from 2 torchrun ranks as from one process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np

from tests.conftest import run_cli, write_images, plain_duckdb


def _items(cache):
    con = plain_duckdb(cache)
    keys = [r[0] for r in con.execute("SELECT key FROM items ORDER BY key").fetchall()]
    emb = {k: np.asarray(e, np.float32) for k, e in con.execute("SELECT key, embedding FROM image_embeddings").fetchall()}
    con.close()
    return keys, emb


def _args(images, cache, teacher, *extra):
    return ["encode", "images", images, "--cache", cache, "--teacher", teacher[0], "--pretrained", teacher[1], *extra]


def test_resume_after_sigkill_has_no_missing_and_no_duplicate_items(teacher, tmp_path):
    images = tmp_path / "images"
    write_images(images, 160, size=(24, 24))
    opts = ["--shard-size", "4", "--batch-size", "2", "--workers", "0"]
    ref_cache = tmp_path / "ref" / "m.duckdb"
    r = run_cli(*_args(images, ref_cache, teacher, *opts))
    assert r.returncode == 0, r.stderr
    ref_keys, ref_emb = _items(ref_cache)
    assert len(ref_keys) == 160

    cache = tmp_path / "killed" / "m.duckdb"
    shard_dir = cache.with_suffix("") / "image"
    cmd = [sys.executable, "-m", "dimefm_pipeline", *map(str, _args(images, cache, teacher, *opts))]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    deadline = time.time() + 120
    while time.time() < deadline and (not shard_dir.exists() or len(list(shard_dir.glob("*.npy"))) < 6):
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    con = plain_duckdb(cache)
    done = con.execute("SELECT count(*) FROM units").fetchall()[0][0]
    con.close()
    assert 0 < done < 40, f"the kill must land mid-run (units committed: {done})"

    r = run_cli(*_args(images, cache, teacher, *opts))
    assert r.returncode == 0, r.stderr
    keys, emb = _items(cache)
    assert keys == ref_keys  # none missing, none twice
    assert emb.keys() == ref_emb.keys()
    for k in keys:
        np.testing.assert_array_equal(emb[k], ref_emb[k])
    con = plain_duckdb(cache)
    statuses = [r[0] for r in con.execute("SELECT status FROM runs ORDER BY run_id").fetchall()]
    shards_on_disk = len([p for p in shard_dir.glob("*.npy") if not p.name.endswith(".loc.npy")])
    assert len(list(shard_dir.glob("*.loc.npy"))) == shards_on_disk
    assert shards_on_disk == con.execute("SELECT count(*) FROM shards").fetchall()[0][0] == 40
    con.close()
    assert statuses == ["interrupted", "complete"]
    assert not list(shard_dir.glob("*.tmp"))


def test_two_torchrun_ranks_give_the_same_cache_as_one_process(teacher, tmp_path):
    images = tmp_path / "images"
    write_images(images, 30, size=(24, 24))
    opts = ["--shard-size", "4", "--batch-size", "3", "--workers", "1"]
    single = tmp_path / "single" / "m.duckdb"
    r = run_cli(*_args(images, single, teacher, *opts))
    assert r.returncode == 0, r.stderr
    multi = tmp_path / "multi" / "m.duckdb"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "dimefm_pipeline", *map(str, _args(images, multi, teacher, *opts))]
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1", "DIMEFM_PROGRESS_SECONDS": "0"}
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    # a log, not a terminal: dated progress lines, and the last one counts both ranks' records
    lines = [line for line in r.stdout.splitlines() if "encode images (records):" in line]
    assert len(lines) >= 3 and all("ETA" in line for line in lines)
    assert "30/30 (100.0%) 30 items" in lines[-1], lines[-3:]
    k1, e1 = _items(single)
    k2, e2 = _items(multi)
    assert k1 == k2 and len(k1) == 30
    for k in k1:
        np.testing.assert_array_equal(e1[k], e2[k])
    con = plain_duckdb(multi)
    ranks = {r[0] for r in con.execute("SELECT DISTINCT rank FROM units").fetchall()}
    ws = con.execute("SELECT world_size FROM runs").fetchall()[0][0]
    con.close()
    assert ranks == {0, 1} and ws == 2
