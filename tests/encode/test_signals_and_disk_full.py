"""Stage one answers SIGTERM / SIGINT (finished units committed, the run recorded `interrupted`, the
resume command printed, exit 143 / 130) and a full disk (one clear error); in both cases running the
same command again completes the cache with every item once."""

from __future__ import annotations

import gzip
import io
import os
import resource
import shlex
import signal
import subprocess
import sys
import tarfile
import time

import duckdb
import numpy as np
from PIL import Image

from tests.conftest import run_cli, write_images


def _items(cache):
    con = duckdb.connect(str(cache), read_only=True)
    try:
        return sorted(con.execute("SELECT f.path, i.key FROM items i JOIN source_files f ON f.source_id = i.source "
                                  "AND f.file_id = i.file").fetchall())
    finally:
        con.close()


def _status(cache):
    con = duckdb.connect(str(cache), read_only=True)
    try:
        return [r[0] for r in con.execute("SELECT status FROM runs ORDER BY run_id").fetchall()]
    finally:
        con.close()


def test_sigterm_commits_finished_units_and_the_printed_command_completes_the_cache(teacher, tmp_path):
    src = tmp_path / "my images, 'v2'"
    write_images(src, 300, size=(48, 48), seed=3)
    cache = tmp_path / "o'cache é" / "m.duckdb"
    args = ["encode", "images", str(src), "--cache", str(cache), "--teacher", str(teacher[0]), "--pretrained",
            str(teacher[1]), "--shard-size", "2", "--batch-size", "1", "--workers", "2"]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.Popen([sys.executable, "-m", "dimefm_pipeline", *args], env=env, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True)
    shards = cache.parent / "m" / "image"
    t0 = time.monotonic()
    while not (shards.is_dir() and any(shards.glob("*.npy"))):
        assert proc.poll() is None and time.monotonic() - t0 < 120, proc.communicate()[1][-3000:]
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGTERM)  # as a scheduler stops a job: every process, loader workers included
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err[-3000:]
    line = [x for x in err.splitlines() if x.startswith("interrupted: ")]
    assert len(line) == 1 and "Traceback" not in err, err[-3000:]
    assert _status(cache) == ["interrupted"]
    done = _items(cache)
    assert 0 < len(done) < 300 and len(set(done)) == len(done)  # finished units committed, each item once
    words = shlex.split(line[0].split("Resume with: ", 1)[1])
    assert words[:3] == ["dimefm", "encode", "images"]
    r = run_cli(*words[1:])
    assert r.returncode == 0, r.stderr[-3000:]
    items = _items(cache)
    assert len(items) == 300 and len(set(items)) == 300 and set(done) <= set(items)
    assert _status(cache) == ["interrupted", "complete"]


def _gz_tar(path, images):
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tf:
        for name, data in images:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    path.write_bytes(gzip.compress(raw.getvalue(), compresslevel=1, mtime=0))


def _png(seed, side):
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (side, side, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


LIMIT = 3 << 20  # bytes: every file this process writes stays below it, as on a nearly full disk


def _limit_file_size():
    resource.setrlimit(resource.RLIMIT_FSIZE, (LIMIT, LIMIT))


def test_a_full_disk_is_one_clear_error_and_a_rerun_completes_with_nothing_lost_or_twice(teacher, tmp_path):
    # compressed tars: their images are packed into the cache; the third one's pack outgrows the limit
    for t, (n, side) in enumerate(((3, 40), (4, 40), (4, 600), (2, 40))):
        _gz_tar(tmp_path / f"s-{t}.tar.gz", [(f"{t}-{i}.png", _png(100 * t + i, side)) for i in range(n)])
    t = ["--teacher", str(teacher[0]), "--pretrained", str(teacher[1]), "--workers", "0"]
    pattern = str(tmp_path / "s-{0..3}.tar.gz")
    cache = tmp_path / "full" / "m.duckdb"
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    r = subprocess.run([sys.executable, "-m", "dimefm_pipeline", "encode", "images", pattern, "--cache", str(cache), *t],
                       env=env, text=True, capture_output=True, preexec_fn=_limit_file_size, timeout=300)
    assert r.returncode == 2, r.stderr[-3000:]
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot write the cache") and "File too large" in lines[0], r.stderr
    assert "run the same command again" in lines[0]
    assert _status(cache) == ["failed"]
    before = _items(cache)
    assert [p for p, _ in before] == ["s-0.tar.gz"] * 3 + ["s-1.tar.gz"] * 4  # what was finished is kept
    assert not list((tmp_path / "full" / "m").rglob("*.tmp"))  # no half-written file left
    r = run_cli("encode", "images", pattern, "--cache", cache, *t)  # space freed: the same command again
    assert r.returncode == 0, r.stderr[-3000:]
    ref = tmp_path / "ref" / "m.duckdb"
    assert run_cli("encode", "images", pattern, "--cache", ref, *t).returncode == 0
    assert _items(cache) == _items(ref) and len(_items(ref)) == 13
    r = run_cli("info", "--cache", cache, "--verify")
    assert r.returncode == 0, r.stdout[-3000:]
