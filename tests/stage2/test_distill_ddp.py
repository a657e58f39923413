"""Stage two under torchrun: two gloo ranks train one student with a global similarity batch."""

from __future__ import annotations

import os
import subprocess
import sys

import duckdb
import numpy as np
from safetensors.torch import load_file


def test_two_rank_torchrun_distill_trains_and_commits_once(cache_copy, tmp_path):
    cache, student = cache_copy
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "dimefm_pipeline",
           "distill", "--cache", str(cache), "--out", str(out), "--student", str(student), "--batch-size", "4",
           "--steps", "4", "--workers", "1", "--augment", "none", "--checkpoint-every", "2", "--log-every", "1"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    weights = list(out.glob("*.safetensors"))
    assert len(weights) == 1
    state = load_file(str(weights[0]))
    assert all(np.isfinite(v.float().numpy()).all() for v in state.values())
    con = duckdb.connect(str(cache), read_only=True)
    run_id, status, world = con.execute(
        "SELECT run_id, status, world_size FROM runs WHERE kind = 'distill' ORDER BY run_id DESC LIMIT 1").fetchall()[0]
    steps = con.execute("SELECT DISTINCT step FROM metrics WHERE run_id = ? ORDER BY step", [run_id]).fetchall()
    con.close()
    assert (status, world) == ("complete", 2) and [s[0] for s in steps] == [1, 2, 3, 4]
