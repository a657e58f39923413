"""Stage two's data path on real layouts: every image trains against its own teacher row.

The student IS the teacher (same tiny ViT, same weights, the teacher's text tower, no augmentation,
learning rate 0), so any batch whose pixels and teacher rows drift apart shows up as a non-zero
loss. The cache mixes what real data looks like: tars of uneven size with several shards per unit,
a folder with sub-folders, a Parquet file whose keys repeat, and a TSV file.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import os
import subprocess
import sys
import tarfile

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from dimefm_pipeline.distill.config import DistillConfig
from dimefm_pipeline.distill.train import distill
from dimefm_pipeline.encode.config import EncodeConfig
from dimefm_pipeline.encode.run import encode
from tests.conftest import run_cli, write_images

PVL_MAX = 1e-4  # P-VL of a batch whose every image meets its own row (fp16 cache rounding only)


def _png(seed: int, size: int = 32) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (size, size, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def write_tar(path, members):
    with tarfile.open(path, "w") as tf:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))


@pytest.fixture(scope="module")
def mixed_cache(teacher, tmp_path_factory):
    """A cache of 5 + 13 + 9 tar images, 12 folder images, 10 Parquet rows (keys repeat) and 6 TSV lines."""
    root = tmp_path_factory.mktemp("mixed")
    seed = 100
    for t, n in enumerate((5, 13, 9)):
        members = []
        for i in range(n):
            members += [(f"{i:04d}.png", _png(seed)), (f"{i:04d}.json", b"{}")]
            seed += 1
        write_tar(root / f"shard-{t}.tar", members)
    write_images(root / "folder", 12, size=(32, 32), seed=7)
    keys = ["a", "b", "a", "c", "b", "a", "d", "c", "a", "e"]
    pq.write_table(pa.table({"key": keys, "jpg": [_png(200 + i) for i in range(10)]}), root / "rep.parquet", row_group_size=4)
    (root / "imgs.tsv").write_text("".join(f"k{i}\t{base64.b64encode(_png(300 + i)).decode()}\n" for i in range(6)))
    (root / "s.txt").write_text("".join(f"sentence number {i} about a {'red blue green'.split()[i % 3]} thing\n" for i in range(40)))
    cache = root / "m" / "c.duckdb"
    common = dict(teacher=str(teacher[0]), pretrained=str(teacher[1]), workers=2, batch_size=3, shard_size=4)
    sources = (str(root / "shard-{0..2}.tar"), str(root / "folder"), str(root / "rep.parquet"), str(root / "imgs.tsv"))
    encode(EncodeConfig("image", sources, str(cache), **common), progress=False)
    encode(EncodeConfig("text", (str(root / "s.txt"),), str(cache), **common), progress=False)
    return cache, teacher


def self_distill_config(cache, teacher, out, **kw) -> DistillConfig:
    """The teacher distilled into itself at learning rate 0: every loss must stay at ~0."""
    base = dict(cache=str(cache), out=str(out), student=str(teacher[0]), init=str(teacher[1]), text_tower="teacher",
                batch_size=4, text_batch_size=8, steps=18, workers=0, augment="none", lr=0.0, min_lr=0.0, warmup_lr=0.0,
                weight_decay=0.0, log_every=1, checkpoint_every=100, precision="fp32", verify_cache=False)
    base.update(kw)
    return DistillConfig.from_dict(base)


def metric_rows(out) -> list[dict]:
    with open(out / "metrics.csv") as f:
        return [{k: float(v) for k, v in r.items()} for r in csv.DictReader(f)]


def assert_every_batch_on_target(rows, steps):
    assert [int(r["step"]) for r in rows] == list(range(1, steps + 1))
    worst = max(rows, key=lambda r: r["pvl"])
    assert worst["pvl"] < PVL_MAX, f"step {int(worst['step'])}: P-VL {worst['pvl']:.3g}"
    assert max(r["vl"] for r in rows) < 10 * PVL_MAX


def test_cache_holds_every_layout(mixed_cache):
    import duckdb

    cache, _ = mixed_cache
    con = duckdb.connect(str(cache), read_only=True)
    per_source = dict(con.execute("SELECT s.format, count(*) FROM items i JOIN sources s ON i.source = s.source_id "
                                  "WHERE i.modality = 'image' GROUP BY ALL").fetchall())
    repeated = dict(con.execute("SELECT format, repeated_keys FROM sources WHERE modality = 'image'").fetchall())
    shards_of_big_tar = con.execute("SELECT count(*) FROM shards s JOIN source_files f ON f.source_id = s.source "
                                    "AND f.file_id = s.unit WHERE f.path = 'shard-1.tar'").fetchall()[0][0]
    con.close()
    assert per_source == {"webdataset": 27, "folder": 12, "parquet": 10, "tsv": 6}
    # the Parquet keys a,b,a,c,b,a,d,c,a,e hold 5 distinct keys; tar keys 0000.. repeat across the 3 tars
    assert repeated["parquet"] == 5 and repeated["webdataset"] == 27 - 13 and repeated["folder"] == 0
    assert shards_of_big_tar == 4  # 13 images in shards of 4: several shards per unit
    r = run_cli("info", "--cache", cache)  # in a log (not a terminal): whole table, repeated keys last
    assert r.returncode == 0 and "repeated keys" in r.stdout, r.stderr
    last = {line.split("│")[3].strip(): line.split("│")[-2].strip() for line in r.stdout.splitlines()
            if line.count("│") > 9 and line.split("│")[2].strip() in ("image", "text")}  # the sources table
    assert last == {"webdataset": "14", "folder": "0", "parquet": "5", "tsv": "0", "txt": "0"}


@pytest.mark.parametrize("workers", [0, 2])
def test_every_batch_meets_its_own_teacher_rows(mixed_cache, tmp_path, workers):
    cache, teacher = mixed_cache
    out = tmp_path / "out"
    # 61 images / batch 4 = 15 steps per epoch: 18 steps cross an epoch boundary
    distill(self_distill_config(cache, teacher, out, workers=workers), progress=False)
    assert_every_batch_on_target(metric_rows(out), 18)


def test_resume_mid_epoch_and_across_the_boundary_stays_on_target(mixed_cache, tmp_path):
    cache, teacher = mixed_cache
    out = tmp_path / "out"
    distill(self_distill_config(cache, teacher, out, workers=2, stop_after=7, checkpoint_every=7), progress=False)
    distill(self_distill_config(cache, teacher, out, workers=2, resume=True, stop_after=9, checkpoint_every=7), progress=False)
    distill(self_distill_config(cache, teacher, out, workers=0, resume=True), progress=False)
    assert_every_batch_on_target(metric_rows(out), 18)


LAUNCH = """
import json, sys
from dimefm_pipeline.distill.config import DistillConfig
from dimefm_pipeline.distill.train import distill
distill(DistillConfig.from_dict(json.loads(sys.argv[1])), progress=False)
"""


def test_two_torchrun_ranks_stay_on_target(mixed_cache, tmp_path):
    cache, teacher = mixed_cache
    out = tmp_path / "out"
    cfg = self_distill_config(cache, teacher, out, workers=1, batch_size=3, steps=12).to_dict()
    script = tmp_path / "launch.py"
    script.write_text(LAUNCH)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script), json.dumps(cfg)]
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1", "PYTHONPATH": os.getcwd()}
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    # 61 images / (3 x 2 ranks) = 10 steps per epoch: 12 steps cross the boundary
    assert_every_batch_on_target(metric_rows(out), 12)


def test_a_resume_after_a_kill_logs_every_step_once(mixed_cache, tmp_path):
    cache, teacher = mixed_cache
    out = tmp_path / "out"
    distill(self_distill_config(cache, teacher, out, steps=8, stop_after=5, checkpoint_every=3), progress=False)
    (out / "checkpoints" / "step_00000005.pt").unlink()  # as if killed after step 5 was logged, before its checkpoint
    distill(self_distill_config(cache, teacher, out, steps=8, checkpoint_every=3, resume=True), progress=False)
    assert [int(r["step"]) for r in metric_rows(out)] == list(range(1, 9))
