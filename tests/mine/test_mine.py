"""`dimefm mine`: exact top-k without an index, in blocks, resumable, split over torchrun ranks."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import duckdb
import numpy as np
import pytest
import torch

from dimefm_pipeline.mine import run as mine_module
from dimefm_pipeline.store.cache import load_cache
from dimefm_pipeline.mine.config import MineConfig
from dimefm_pipeline.mine.run import mine_cache
from dimefm_pipeline.mine.search import SentenceBlocks, exact_topk


def _pairs(cache, mining_id):
    con = duckdb.connect(str(cache), read_only=True)
    rows = con.execute("SELECT image_item, rank, text_item, score FROM pseudo_pairs WHERE mining_id = ? ORDER BY ALL",
                       [mining_id]).fetchall()
    con.close()
    return rows


def _assert_exact_up_to_ties(cache, mining_id, k):
    """Every mined sentence scores exactly the brute-force rank-th best for its image (fp64 reference)."""
    idx = load_cache(cache)
    scores = idx.images.take(np.arange(len(idx.images))).astype(np.float64) @ idx.texts.take(np.arange(len(idx.texts))).astype(np.float64).T
    best = -np.sort(-scores, axis=1)[:, :k]
    img_row = {int(i): r for r, i in enumerate(idx.image_item_ids)}
    txt_row = {int(i): r for r, i in enumerate(idx.text_item_ids)}
    rows = _pairs(cache, mining_id)
    assert len(rows) == len(idx.images) * k
    for image_item, rank, text_item, score in rows:
        r = img_row[image_item]
        assert scores[r, txt_row[text_item]] == pytest.approx(best[r, rank], abs=1e-6)
        assert score == pytest.approx(best[r, rank], abs=1e-5)


def test_blocked_exact_mining_equals_brute_force_and_faiss_flat(cache_copy):
    import faiss

    cache, _ = cache_copy
    s = mine_cache(MineConfig(str(cache), 5, image_block=16, text_block=23), progress=False)  # 4 image blocks x 3 sentence blocks
    assert s.index_type.startswith("exact") and s.images == 64
    _assert_exact_up_to_ties(cache, s.mining_id, 5)
    idx = load_cache(cache, pairs=True, mining_id=s.mining_id)
    flat = faiss.IndexFlatIP(idx.texts.dim)
    flat.add(idx.texts.take(np.arange(len(idx.texts))).astype(np.float32))
    _, ref = flat.search(idx.images.take(np.arange(len(idx.images))).astype(np.float32), 5)
    pairs = idx.pairs
    assert (np.sort(pairs, axis=1) == np.sort(ref, axis=1)).mean() == 1.0  # the same neighbour sets (no ties here)


def test_half_precision_engine_with_float32_rescoring_is_exact(monkeypatch):
    from dimefm_pipeline.mine import search

    monkeypatch.setattr(search, "SCORE_TILE", 700 * 64)  # tiles of 64 queries x 700 sentences
    rng = np.random.default_rng(3)

    def unit(n, d):
        x = rng.standard_normal((n, d))
        return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float16)

    q, t = unit(200, 48), unit(3000, 48)
    ref_s, ref_i = exact_topk(q, SentenceBlocks(t, block=1000), 8)
    s, i = exact_topk(q, SentenceBlocks(t, block=700, dtype=torch.float16, resident_bytes=1 << 30), 8)
    np.testing.assert_array_equal(i, ref_i)
    np.testing.assert_allclose(s, ref_s, atol=1e-6)


def test_a_killed_mining_resumes_from_its_finished_blocks(cache_copy, monkeypatch):
    cache, _ = cache_copy
    real = mine_module._write_block
    written = []

    def dying(path, scores, found):
        if len(written) == 2:
            raise KeyboardInterrupt("killed")
        written.append(path)
        real(path, scores, found)

    monkeypatch.setattr(mine_module, "_write_block", dying)
    with pytest.raises(KeyboardInterrupt):
        mine_cache(MineConfig(str(cache), 4, image_block=10), progress=False)
    monkeypatch.setattr(mine_module, "_write_block", real)
    s = mine_cache(MineConfig(str(cache), 4, image_block=10), progress=False)
    assert s.blocks_resumed == 2
    _assert_exact_up_to_ties(cache, s.mining_id, 4)
    con = duckdb.connect(str(cache), read_only=True)
    states = con.execute("SELECT mining_id, state FROM minings ORDER BY mining_id").fetchall()
    con.close()
    assert states[-1] == (s.mining_id, "complete") and all(st == "complete" for _, st in states)


LAUNCH = """
import sys
from dimefm_pipeline.mine.config import MineConfig
from dimefm_pipeline.mine.run import mine_cache
mine_cache(MineConfig(sys.argv[1], 3, image_block=8), progress=False)
"""


def test_two_torchrun_ranks_mine_the_same_pairs_as_one_process(cache_copy, tmp_path):
    cache, _ = cache_copy
    one = mine_cache(MineConfig(str(cache), 3, image_block=8), progress=False)
    script = tmp_path / "launch.py"
    script.write_text(LAUNCH)
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1", "PYTHONPATH": os.getcwd()}
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script),
                        str(cache)], capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    con = duckdb.connect(str(cache), read_only=True)
    last, world = con.execute("SELECT m.mining_id, r.world_size FROM minings m JOIN runs r ON r.run_id = m.run_id "
                              "ORDER BY m.mining_id DESC LIMIT 1").fetchall()[0]
    con.close()
    assert world == 2 and last == one.mining_id + 1
    strip = lambda rows: [r[:3] for r in rows]  # noqa: E731
    assert strip(_pairs(cache, last)) == strip(_pairs(cache, one.mining_id))


def test_ivf_engine_stays_available(cache_copy):
    cache, _ = cache_copy
    s = mine_cache(MineConfig(str(cache), 2, engine="ivf", nprobe=1), progress=False)
    assert s.index_type == "IndexIVFFlat" and len(_pairs(cache, s.mining_id)) > 0
    json.dumps(s.__dict__)


def test_ivf_without_faiss_is_one_line_that_says_what_to_install(cache_copy):
    """faiss is an extra (its CPU and GPU wheels must not meet): without it `--engine ivf` says what to
    install, and the default engine still mines."""
    import subprocess
    import sys

    cache, _ = cache_copy
    no_faiss = ("import sys; sys.modules['faiss'] = None; from dimefm_pipeline.cli import main; "
                "main(sys.argv[1:])")
    run = lambda *a: subprocess.run([sys.executable, "-c", no_faiss, "mine", "--cache", str(cache), "--k", "2", *a],  # noqa: E731
                                    capture_output=True, text=True, timeout=300)
    r = run("--engine", "ivf")
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.strip().splitlines() == [r.stderr.strip()] and "pip install 'dimefm[cpu]'" in r.stderr
    r = run()
    assert r.returncode == 0, r.stderr
