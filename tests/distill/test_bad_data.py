"""Stage two on data that went bad after stage one, and loader workers that stall or die."""

from __future__ import annotations

import os
import signal
import time

import pytest

from dimefm_pipeline.distill.config import DistillConfig
from dimefm_pipeline.distill.train import distill
from dimefm_pipeline.encode.config import EncodeConfig
from dimefm_pipeline.encode.run import encode
from dimefm_pipeline.core.errors import DimefmError
from tests.conftest import plain_duckdb, write_images


@pytest.fixture
def small_cache(teacher, tmp_path):
    images = write_images(tmp_path / "imgs", 16, size=(24, 24), subdirs=False)
    (tmp_path / "s.txt").write_text("".join(f"a sentence about thing {i}\n" for i in range(20)))
    cache = tmp_path / "m" / "c.duckdb"
    common = dict(teacher=str(teacher[0]), pretrained=str(teacher[1]), workers=0, batch_size=8)
    encode(EncodeConfig("image", (str(tmp_path / "imgs"),), str(cache), **common), progress=False)
    encode(EncodeConfig("text", (str(tmp_path / "s.txt"),), str(cache), **common), progress=False)
    return cache, images


def _cfg(cache, teacher, out, **kw):
    base = dict(cache=str(cache), out=str(out), student=str(teacher[0]), batch_size=4, text_batch_size=4, steps=4,
                workers=0, augment="none", log_every=1)
    base.update(kw)
    return DistillConfig.from_dict(base)


def test_an_image_changed_after_encoding_is_skipped_and_recorded(small_cache, teacher, tmp_path):
    cache, images = small_cache
    victim = images[5]
    raw = bytearray(victim.read_bytes())
    raw[-30] ^= 0xFF  # same size, other bytes: its teacher row no longer describes it
    victim.write_bytes(bytes(raw))
    r = distill(_cfg(cache, teacher, tmp_path / "out"), progress=False)  # 4 steps of 4: every image once
    assert r.steps == 4
    con = plain_duckdb(cache)
    rows = con.execute("SELECT key, stage, reason FROM errors").fetchall()
    con.close()
    assert rows == [(victim.name, "distill", "bytes differ from what stage one encoded: the source changed since")]


def test_a_stalled_image_times_out_and_a_dead_worker_ends_the_run_with_one_error(small_cache, teacher, tmp_path, monkeypatch):
    import dimefm_pipeline.distill.data as data

    cache, images = small_cache
    slow = images[3].read_bytes()
    real = data.decode_image

    def stalling(payload, *limits):
        if payload == slow:
            time.sleep(30)
        return real(payload, *limits)

    monkeypatch.setattr(data, "decode_image", stalling)
    t0 = time.time()
    distill(_cfg(cache, teacher, tmp_path / "a", workers=1, item_timeout=1.0), progress=False)
    assert time.time() - t0 < 25
    con = plain_duckdb(cache)
    assert con.execute("SELECT key, reason FROM errors").fetchall() == [(images[3].name, "timed out after 1 s reading or decoding it")]
    con.close()

    def dying(payload, *_):
        os.kill(os.getpid(), signal.SIGKILL)

    monkeypatch.setattr(data, "decode_image", dying)
    with pytest.raises(DimefmError, match=r"^training stopped: DataLoader worker .* exited unexpectedly .*rerun to resume"):
        distill(_cfg(cache, teacher, tmp_path / "b", workers=1), progress=False)


def test_stage_one_skips_an_item_that_stalls(teacher, tmp_path, monkeypatch):
    import dimefm_pipeline.encode.batches as encode_data

    images = write_images(tmp_path / "imgs", 6, size=(16, 16), subdirs=False)
    slow = images[2].read_bytes()
    real = encode_data.decode_image

    def stalling(payload, *limits):
        if payload == slow:
            time.sleep(30)
        return real(payload, *limits)

    monkeypatch.setattr(encode_data, "decode_image", stalling)
    cache = tmp_path / "m.duckdb"
    t0 = time.time()
    s = encode(EncodeConfig("image", (str(tmp_path / "imgs"),), str(cache), teacher=str(teacher[0]),
                            pretrained=str(teacher[1]), workers=2, batch_size=2, item_timeout=1.0), progress=False)
    assert time.time() - t0 < 25 and s.items == 5 and s.errors == 1
