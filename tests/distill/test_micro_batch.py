"""--micro-batch: a step over micro-batches gives the full batch's gradients (both text-tower modes, a
grad scaler, two torchrun ranks), BatchNorm counts each micro-batch once, dropout masks are replayed."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from dimefm_pipeline.distill.config import DistillConfig
from dimefm_pipeline.distill.micro import micro_backward
from dimefm_pipeline.distill.setup import prepare
from dimefm_pipeline.distill.train import _image_batches, distill, step, step_inputs
from tests.conftest import TINY_STUDENT, run_cli

CPU = torch.device("cpu")
TOLERANCE = 1e-5  # largest relative difference of a parameter's gradient allowed


def config(cache, student, out, **kw) -> DistillConfig:
    """Batches that micro-batches of 5 do not divide (13 images, 11 sentences), every loss term on."""
    base = dict(cache=str(cache), out=str(out), student=str(student), batch_size=13, text_batch_size=11, workers=0,
                augment="none", precision="fp32", steps=4, warmup=0.0, lr=2e-3, w_udist=0.1, mined_share=0.25,
                w_pvl_mined=0.1, verify_cache="off")
    return DistillConfig.from_dict({**base, **kw})


def first_step_gradients(cfg: DistillConfig, *, rank: int = 0, world: int = 1, scale: float | None = None):
    """Every parameter's gradient after the first step of `cfg`'s run on this rank (its slice of the
    global batch), and the step's loss terms. `scale`: a grad scaler with this initial scale."""
    job = prepare(cfg, rank, world, CPU)
    if scale is not None:
        job.scaler = torch.amp.GradScaler("cpu", init_scale=scale)
    pixels, rows, _ = next(iter(_image_batches(cfg, job, rank, world, CPU, 0, 0)))
    losses, _ = step(cfg, job, pixels, rows.numpy(), CPU, world=world)
    grads = {n: p.grad.clone() for n, p in job.model.named_parameters() if p.grad is not None}
    return grads, {k: v.item() for k, v in losses.items()}


def relative_differences(got: dict, want: dict) -> dict:
    """|got - want| / |want| per parameter (Frobenius norms)."""
    assert got.keys() == want.keys() and want
    return {k: float((got[k] - want[k]).norm() / want[k].norm()) for k in want}


@pytest.mark.parametrize("text_tower,scale", [("student", None), ("teacher", None), ("student", 2.0**12)],
                         ids=["student-text-tower", "teacher-text-tower", "student-grad-scaler"])
def test_micro_batches_give_the_full_batch_gradients(cache_copy, tmp_path, text_tower, scale):
    cache, student = cache_copy
    full, full_losses = first_step_gradients(config(cache, student, tmp_path / "a", text_tower=text_tower), scale=scale)
    micro, micro_losses = first_step_gradients(config(cache, student, tmp_path / "b", text_tower=text_tower, micro_batch=5),
                                               scale=scale)
    assert any(k.startswith("transformer.") for k in full) == (text_tower == "student")  # which towers train
    diff = relative_differences(micro, full)
    print(f"{text_tower} tower, scale {scale}: max relative gradient difference {max(diff.values()):.2e}")
    assert max(diff.values()) < TOLERANCE, sorted(diff.items(), key=lambda kv: -kv[1])[:5]
    assert micro_losses == pytest.approx(full_losses, rel=1e-6)


def test_micro_batches_under_bf16_autocast_stay_within_bf16s_own_error(cache_copy, tmp_path):
    cache, student = cache_copy
    exact, _ = first_step_gradients(config(cache, student, tmp_path / "a"))
    full, _ = first_step_gradients(config(cache, student, tmp_path / "b", precision="bf16"))
    micro, _ = first_step_gradients(config(cache, student, tmp_path / "c", precision="bf16", micro_batch=5))
    own = max(relative_differences(full, exact).values())  # bf16's own rounding: about 2e-2 here
    print(f"bf16: full batch {own:.2e}, micro-batches {max(relative_differences(micro, exact).values()):.2e} from fp32")
    assert max(relative_differences(micro, exact).values()) < 2 * own


LAUNCH = """
import json, sys, torch
from dimefm_pipeline.core import distributed as dist
from dimefm_pipeline.distill.config import DistillConfig
from tests.distill.test_micro_batch import first_step_gradients
rank, world, _, _ = dist.init_distributed()
out = {}
for cfg in json.loads(sys.argv[1]):
    out[cfg["text_tower"]] = first_step_gradients(DistillConfig.from_dict(cfg), rank=rank, world=world)[0]
if rank == 0:
    torch.save(out, sys.argv[2])
dist.destroy()
"""


def test_two_ranks_with_micro_batches_give_one_process_full_batch_gradients(cache_copy, tmp_path):
    cache, student = cache_copy
    towers = ("student", "teacher")
    # each rank mixes in its own images' mined sentences: without that share, a rank's batch is its
    # slice of one process's global batch (2 x 13 images, 2 x 11 sentences)
    same = dict(mined_share=0.0)
    want = {t: first_step_gradients(config(cache, student, tmp_path / t, text_tower=t, batch_size=26, text_batch_size=22,
                                           **same))[0] for t in towers}
    script = tmp_path / "launch.py"
    script.write_text(LAUNCH)
    cfgs = [config(cache, student, tmp_path / f"ddp-{t}", text_tower=t, micro_batch=5, **same).to_dict() for t in towers]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script),
           json.dumps(cfgs), str(tmp_path / "grads.pt")]
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1", "PYTHONPATH": os.getcwd()}
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    got = torch.load(tmp_path / "grads.pt")
    for t in towers:
        diff = relative_differences(got[t], want[t])
        print(f"2 ranks, {t} tower: max relative gradient difference {max(diff.values()):.2e}")
        assert max(diff.values()) < TOLERANCE, (t, sorted(diff.items(), key=lambda kv: -kv[1])[:5])


def test_batchnorm_running_statistics_count_each_micro_batch_once(cache_copy, tmp_path):
    cache, _ = cache_copy
    resnet = tmp_path / "tiny-resnet.json"
    resnet.write_text(json.dumps({**TINY_STUDENT, "vision_cfg": {"image_size": 32, "layers": [1, 1, 1, 1], "width": 8}}))
    cfg = config(cache, resnet, tmp_path / "out", micro_batch=5)
    job = prepare(cfg, 0, 1, CPU)
    norms = [m for m in job.model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    before = [m.running_mean.clone() for m in norms]
    pixels, rows, _ = next(iter(_image_batches(cfg, job, 0, 1, CPU, 0, 0)))
    step(cfg, job, pixels, rows.numpy(), CPU)
    # 13 images in micro-batches of 5: 3 forward passes with a graph update the statistics, those
    # without a graph do not; they are tracked again afterwards
    assert norms and {int(m.num_batches_tracked) for m in norms} == {3}
    assert all(m.track_running_stats for m in norms)
    assert all(not torch.equal(a, m.running_mean) for a, m in zip(before, norms))


def test_the_second_pass_replays_the_first_passes_dropout(cache_copy, tmp_path):
    cache, _ = cache_copy
    dropping = tmp_path / "tiny-dropout.json"
    dropping.write_text(json.dumps({**TINY_STUDENT, "vision_cfg": {**TINY_STUDENT["vision_cfg"], "patch_dropout": 0.5}}))
    grads = []
    for micro in (None, 13):  # the full batch; one micro-batch of it, whose first pass draws the full batch's masks
        cfg = config(cache, dropping, tmp_path / str(micro), micro_batch=micro)
        job = prepare(cfg, 0, 1, CPU)
        pixels, rows, _ = next(iter(_image_batches(cfg, job, 0, 1, CPU, 0, 0)))
        torch.manual_seed(7)
        if micro is None:
            step(cfg, job, pixels, rows.numpy(), CPU)
        else:  # the step would not micro-batch a batch that fits in one micro-batch
            targets, tokens = step_inputs(cfg, job, rows.numpy(), CPU)
            micro_backward(cfg, job, pixels, tokens, targets, CPU)
        grads.append({n: p.grad for n, p in job.model.named_parameters() if p.grad is not None})
    assert max(relative_differences(grads[1], grads[0]).values()) < TOLERANCE


def test_distill_with_micro_batch_trains_what_the_full_batch_trains(cache_copy, tmp_path):
    cache, student = cache_copy
    kw = dict(steps=3, log_every=1, mined_share=0.0, w_pvl_mined=0.0)
    full = distill(config(cache, student, tmp_path / "full", **kw), progress=False)
    r = run_cli("distill", "--cache", cache, "--out", tmp_path / "micro", "--student", student, "--batch-size", 13,
                "--text-batch-size", 11, "--micro-batch", 5, "--steps", 3, "--workers", 0, "--augment", "none",
                "--precision", "fp32", "--warmup", 0, "--lr", 2e-3, "--w-udist", 0.1, "--log-every", 1,
                "--verify-cache", "off")
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads((tmp_path / "micro" / "config.json").read_text())["micro_batch"] == 5
    a, b = load_file(str(full.weights_path)), load_file(str(tmp_path / "micro" / "open_clip_model.safetensors"))
    for k in a:
        x, y = a[k], b[k]
        if k.endswith("attn.in_proj_bias"):  # the key bias's gradient is exactly zero: AdamW amplifies noise there
            d = x.shape[0] // 3
            x, y = torch.cat([x[:d], x[2 * d :]]), torch.cat([y[:d], y[2 * d :]])
        torch.testing.assert_close(x, y, rtol=1e-4, atol=1e-5, msg=k)
    rows = [(tmp_path / run / "metrics.csv").read_text().splitlines()[1:] for run in ("full", "micro")]
    assert len(rows[1]) == 3
    for r1, r2 in zip(*rows):
        assert [float(v) for v in r1.split(",")[4:]] == pytest.approx([float(v) for v in r2.split(",")[4:]], rel=1e-5)
