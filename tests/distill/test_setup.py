"""A distill run's start: the manifest is read once."""

from __future__ import annotations

import torch

from dimefm_pipeline.distill.config import DistillConfig
from dimefm_pipeline.distill.setup import prepare
from dimefm_pipeline.store.manifest import connection


def test_the_start_of_a_run_reads_the_manifest_once(cache_copy, tmp_path, monkeypatch):
    cache, student = cache_copy
    opens = []
    real = connection._connect

    def counted(resolved, path, read_only, wait):
        opens.append("read" if read_only else "write")
        return real(resolved, path, read_only, wait)

    monkeypatch.setattr(connection, "_connect", counted)
    cfg = DistillConfig.from_dict(dict(cache=str(cache), out=str(tmp_path / "out"), student=str(student), batch_size=8,
                                       workers=0, text_filter="mined", mined_share=0.25, w_pvl_mined=0.1, steps=2))
    job = prepare(cfg, 0, 1, torch.device("cpu"))
    # one read: shards, items, sources, file tables, mined pairs; one short write: the token files built
    assert opens == ["read", "write"]
    assert job.pairs is not None and job.tokens is not None and job.reader.files
    opens.clear()
    prepare(cfg, 0, 1, torch.device("cpu"))
    assert opens == ["read"]  # token files exist now: nothing to record
