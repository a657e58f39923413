"""Stage two under torchrun: two gloo ranks train the same student as one process on the global batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import duckdb
import pytest
import torch
from safetensors.torch import load_file

from dimefm_pipeline.distill.config import DistillConfig
from dimefm_pipeline.distill.train import distill

LAUNCH = """
import json, sys
from dimefm_pipeline.distill.config import DistillConfig
from dimefm_pipeline.distill.train import distill
distill(DistillConfig.from_dict(json.loads(sys.argv[1])), progress=False)
"""


def test_two_torchrun_ranks_train_what_one_process_trains_on_the_global_batch(cache_copy, tmp_path):
    cache, student = cache_copy
    base = dict(cache=str(cache), student=str(student), text_batch_size=4, steps=4, workers=1, augment="none",
                checkpoint_every=2, log_every=1, lr=2e-3, warmup=0.0, precision="fp32", w_udist=0.1)
    one = distill(DistillConfig.from_dict({**base, "out": str(tmp_path / "one"), "batch_size": 8, "text_batch_size": 8}),
                  progress=False)
    script = tmp_path / "launch.py"
    script.write_text(LAUNCH)
    cfg = {**base, "out": str(tmp_path / "ddp"), "batch_size": 4}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script), json.dumps(cfg)]
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1", "PYTHONPATH": os.getcwd()}
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    a = load_file(str(one.weights_path))
    b = load_file(str(tmp_path / "ddp" / "open_clip_model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:  # the same global images and sentences per step, gradients averaged: the same weights
        x, y = a[k], b[k]
        if k.endswith("attn.in_proj_bias"):
            # the key bias has an exactly zero gradient (a softmax ignores a shift shared by a row), so
            # AdamW turns float noise into full-size steps there: compare the query and value biases
            d = x.shape[0] // 3
            x, y = torch.cat([x[:d], x[2 * d :]]), torch.cat([y[:d], y[2 * d :]])
        torch.testing.assert_close(x, y, rtol=1e-4, atol=1e-5, msg=k)
    rows = [(tmp_path / run / "metrics.csv").read_text().splitlines()[1:] for run in ("one", "ddp")]
    for r1, r2 in zip(*rows):  # every step's loss terms, over the global batch on rank 0
        v1, v2 = [float(v) for v in r1.split(",")[4:]], [float(v) for v in r2.split(",")[4:]]
        assert v1 == pytest.approx(v2, rel=1e-5)
    con = duckdb.connect(str(cache), read_only=True)
    run_id, status, world = con.execute(
        "SELECT run_id, status, world_size FROM runs WHERE kind = 'distill' ORDER BY run_id DESC LIMIT 1").fetchall()[0]
    steps = con.execute("SELECT DISTINCT step FROM metrics WHERE run_id = ? ORDER BY step", [run_id]).fetchall()
    con.close()
    assert (status, world) == ("complete", 2) and [s[0] for s in steps] == [1, 2, 3, 4]
