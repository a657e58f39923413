"""`train_teacher`: a real (tiny) open_clip model trained on paired world data, and exact resumption."""

from __future__ import annotations

import csv
import json
from dataclasses import replace

import pytest
from safetensors.torch import load_file

from dimefm_pipeline.core.models import register_config
from dimefm_pipeline.world.teacher import TeacherTrainConfig, train_teacher

TINY = "dimefm-test-tiny-world-teacher"
TINY_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 64, "layers": [1, 1, 1, 1], "width": 8},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}
CFG = TeacherTrainConfig(arch=TINY, steps=6, batch_size=16, warmup=2, checkpoint_every=2, eval_every=0)


class Interrupted(Exception):
    pass


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    register_config(TINY, TINY_CONFIG)
    out = tmp_path_factory.mktemp("teacher")
    return out, train_teacher(CFG, out, progress=False, log=lambda _: None)


def test_a_run_writes_weights_config_and_loss_curve(full_run):
    out, summary = full_run
    weights = load_file(str(out / "world-teacher.safetensors"))
    assert weights["logit_scale"].dtype.is_floating_point and "visual.attnpool.c_proj.weight" in weights
    assert json.loads((out / "train_config.json").read_text())["steps"] == 6
    assert json.loads((out / f"{TINY}.json").read_text())["vision_cfg"]["width"] == 8
    rows = list(csv.DictReader(open(out / "loss.csv")))
    assert [int(r["step"]) for r in rows] == list(range(1, 7))
    assert all(0 < float(r["loss"]) < 10 for r in rows)
    assert (out / "loss.png").stat().st_size > 5000
    assert not (out / "resume.pt").exists() and summary["steps"] == 6


def test_an_interrupted_run_resumes_to_the_same_weights(full_run, tmp_path):
    ref_dir, _ = full_run
    cfg = replace(CFG, eval_every=5)  # the check at step 5 is where the run gets "killed"

    def die(message: str) -> None:
        if message.startswith("step 5"):
            raise Interrupted

    with pytest.raises(Interrupted):
        train_teacher(cfg, tmp_path, progress=False, log=die)
    assert (tmp_path / "resume.pt").exists()  # written at step 4
    messages = []
    train_teacher(cfg, tmp_path, progress=False, log=messages.append)
    assert messages[0].startswith("resuming at step 4")
    ref, got = load_file(str(ref_dir / "world-teacher.safetensors")), load_file(str(tmp_path / "world-teacher.safetensors"))
    assert ref.keys() == got.keys()
    assert all((ref[k] == got[k]).all() for k in ref)
