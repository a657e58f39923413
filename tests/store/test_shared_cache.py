"""Several processes share one manifest: short writes wait for each other instead of failing."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from dimefm_pipeline.core.errors import DimefmError
from dimefm_pipeline.store.manifest import Manifest, lock_wait

HOLD = """
import sys, time
from dimefm_pipeline.store.manifest import Manifest, lock_wait
with Manifest(sys.argv[1], create=True) as man:
    print("locked", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def _hold(path, seconds):
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(path), str(seconds)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_a_waiting_writer_gets_the_manifest_once_the_other_lets_go(tmp_path):
    path = tmp_path / "manifest.duckdb"
    proc = _hold(path, 2.0)
    with pytest.raises(DimefmError, match="only one writer"):
        Manifest(path)  # no wait: stage one's behaviour
    t0 = time.monotonic()
    with Manifest(path, wait=30) as man:
        assert man.meta("schema_version") is not None
    assert time.monotonic() - t0 > 0.5
    assert proc.wait(timeout=30) == 0


def test_a_wait_has_a_limit(tmp_path):
    path = tmp_path / "manifest.duckdb"
    proc = _hold(path, 6.0)
    t0 = time.monotonic()
    with pytest.raises(DimefmError, match="only one writer"):
        Manifest(path, read_only=True, wait=1.0)
    assert 0.9 < time.monotonic() - t0 < 5
    proc.wait(timeout=30)


def test_a_starting_run_waits_while_another_run_writes(cache_copy):
    """A distill run's one start-up read of the manifest (with the file tables and the mined pairs), and
    its token files' record, wait for another run's short write on the same cache instead of failing."""
    import open_clip

    from dimefm_pipeline.store.cache import load_cache
    from dimefm_pipeline.store.tokens import build_token_shards

    cache, _ = cache_copy
    proc = _hold(cache, 2.0)
    t0 = time.monotonic()
    idx = load_cache(cache, sources=True, pairs=True, wait=lock_wait())
    assert time.monotonic() - t0 > 0.5 and idx.file_paths and idx.pairs is not None  # it waited for the writer
    proc.wait(timeout=30)
    proc = _hold(cache, 2.0)
    t0 = time.monotonic()
    assert build_token_shards(idx, open_clip.get_tokenizer("ViT-B-32")).take([0]).shape[0] == 1
    assert time.monotonic() - t0 > 0.5
    assert proc.wait(timeout=30) == 0
