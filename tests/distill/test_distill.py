"""Stage two end to end on a tiny real cache: learning, output format, resume, modes, failures."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import duckdb
import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from dimefm_pipeline.store.cache import load_cache
from dimefm_pipeline.distill.config import DistillConfig
from dimefm_pipeline.distill.train import distill, lr_at
from dimefm_pipeline.core.errors import DimefmError
from dimefm_pipeline.core.losses import dimefm_losses


def _cfg(cache, student, out, **kw):
    base = dict(cache=str(cache), out=str(out), student=str(student), batch_size=8, text_batch_size=8, steps=10,
                workers=1, augment="none", checkpoint_every=100, log_every=1, lr=2e-3, warmup=0.1)
    base.update(kw)
    return DistillConfig.from_dict(base)


def _student_features(folder, idx, n=32):
    """Student image features of the first n cached images (un-augmented), via open_clip alone."""
    import open_clip
    from PIL import Image

    from dimefm_pipeline.distill.data import ImageReader

    model, _, pre = open_clip.create_model_and_transforms(f"local-dir:{folder}")
    model.eval()
    reader = ImageReader(load_cache(idx.path, sources=True))
    pix = [pre(Image.open(io.BytesIO(reader.read(row)))) for row in range(n)]
    with torch.no_grad():
        return model.encode_image(torch.stack(pix))


def test_tiny_run_moves_student_similarities_toward_the_teacher(tiny_cache, tmp_path):
    cache, student = tiny_cache
    idx = load_cache(cache)
    t_img = torch.from_numpy(idx.images.take(np.arange(16))).float()
    t_txt = torch.from_numpy(idx.texts.take(np.arange(len(idx.texts)))).float()

    def kl_to_teacher(out, steps):
        r = distill(_cfg(cache, student, out, steps=steps, text_tower="teacher", lr=3e-3), progress=False)
        s_img = _student_features(r.out, idx)[:16]
        return float(dimefm_losses(t_img, t_txt, s_img, t_txt)["vl"]), r

    before, _ = kl_to_teacher(tmp_path / "s0", 1)
    after, r = kl_to_teacher(tmp_path / "s1", 60)
    assert after < 0.7 * before, (before, after)
    metrics = (r.out / "metrics.csv").read_text().splitlines()
    assert metrics[0].startswith("step,epoch,lr,seconds,vl,pvl,udist,total") and len(metrics) == 61
    assert (r.out / "loss_curves.png").stat().st_size > 1000
    con = duckdb.connect(str(cache), read_only=True)
    run = con.execute("SELECT status, output FROM runs WHERE kind = 'distill' ORDER BY run_id DESC LIMIT 1").fetchall()[0]
    n_metrics = con.execute("SELECT count(DISTINCT step) FROM metrics WHERE run_id = (SELECT max(run_id) FROM runs)").fetchall()[0][0]
    con.close()
    assert run == ("complete", str(r.out.resolve())) and n_metrics == 60


def test_the_folder_is_shareable_and_its_config_says_what_ran(cache_copy, tmp_path):
    """Files readable by the group that serves them whatever the umask; the steps and epochs that ran;
    the teacher by name and sha256, not by a path on this machine."""
    import os

    cache, student = cache_copy
    before = os.umask(0o077)
    try:
        r = distill(_cfg(cache, student, tmp_path / "out", steps=3, batch_size=8), progress=False)
    finally:
        os.umask(before)
    assert {p.name: oct(p.stat().st_mode & 0o777) for p in (r.config_path, r.weights_path)} == {
        "open_clip_config.json": "0o644", "open_clip_model.safetensors": "0o644"}
    ran = json.loads((r.out / "config.json").read_text())
    assert (ran["steps"], ran["steps_per_epoch"], ran["epochs"]) == (3, 8, 0.375)  # 64 images / 8 per step
    about = json.loads(r.config_path.read_text())["dimefm"]
    assert about["teacher"]["pretrained"] == "tiny-teacher-s0.safetensors" and len(about["teacher"]["fingerprint"]) == 64
    assert about["text_tower"] == "student" and "/" not in json.dumps(about)
    with duckdb.connect(str(cache), read_only=True) as con:
        row = json.loads(con.execute("SELECT config FROM runs WHERE kind = 'distill' ORDER BY run_id DESC").fetchall()[0][0])
    assert (row["steps"], row["epochs"]) == (3, 0.375)


def test_output_is_an_open_clip_hub_folder_that_open_clip_alone_loads(cache_copy, tmp_path):
    cache, student = cache_copy
    r = distill(_cfg(cache, student, tmp_path / "out", steps=3), progress=False)
    assert sorted(p.name for p in r.out.iterdir() if p.is_file() and p.suffix in (".json", ".safetensors")) == [
        "config.json", "open_clip_config.json", "open_clip_model.safetensors"]
    hub = json.loads(r.config_path.read_text())
    assert set(hub) >= {"model_cfg", "preprocess_cfg"} and hub["preprocess_cfg"]["size"] == 32
    # a fresh interpreter, without dimefm: one line loads model, transforms and tokenizer
    code = (
        "import sys, torch, open_clip; assert 'dimefm_pipeline' not in sys.modules\n"
        "m, _, pre = open_clip.create_model_and_transforms('local-dir:' + sys.argv[2]); m.eval()\n"
        "x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))\n"
        "t = open_clip.get_tokenizer('local-dir:' + sys.argv[2])(['a red cat'])\n"
        "torch.save({'i': m.encode_image(x), 't': m.encode_text(t), 'scale': m.logit_scale.exp()}, sys.argv[1])\n"
    )
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "f.pt"), str(r.out)], check=True, cwd=tmp_path)
    got = torch.load(tmp_path / "f.pt")
    import open_clip

    from dimefm_pipeline.distill.student import build_student

    idx = load_cache(cache)
    s = build_student(_cfg(cache, student, tmp_path / "x"), idx.teacher)
    s.model.load_state_dict(load_file(str(r.weights_path)))
    s.model.eval()
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(got["i"], s.model.encode_image(x))
        torch.testing.assert_close(got["t"], s.model.encode_text(open_clip.get_tokenizer(f"local-dir:{r.out}")(["a red cat"])))
    # the exported scale is the one the student was trained at (s = 100), not its random initial one
    assert float(got["scale"]) == pytest.approx(100.0, rel=1e-5)


def test_resume_continues_exactly(cache_copy, tmp_path):
    cache, student = cache_copy
    full = distill(_cfg(cache, student, tmp_path / "full", steps=8, workers=2, augment="light"), progress=False)
    part = distill(_cfg(cache, student, tmp_path / "part", steps=8, workers=2, augment="light", stop_after=3), progress=False)
    assert part.config_path is None and part.steps == 3
    with pytest.raises(DimefmError, match="--resume"):
        distill(_cfg(cache, student, tmp_path / "part", steps=8, workers=2, augment="light"), progress=False)
    done = distill(_cfg(cache, student, tmp_path / "part", steps=8, workers=2, augment="light", resume=True), progress=False)
    assert done.steps == 8
    a, b = load_file(str(full.weights_path)), load_file(str(done.weights_path))
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6, msg=k)


def test_resume_of_a_finished_run_trains_nothing_writes_nothing_and_adds_no_run(cache_copy, tmp_path):
    from tests.conftest import run_cli

    cache, student = cache_copy
    out = tmp_path / "done"
    args = ("distill", "--cache", cache, "--out", out, "--student", student, "--batch-size", "8", "--steps", "3",
            "--workers", "0", "--augment", "none")
    assert run_cli(*args).returncode == 0
    def written():  # the lock on --out is taken, and names its holder, by every run: not an output
        return {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in out.rglob("*") if p.is_file() and p.name != ".distill.lock"}

    files = written()
    runs = duckdb.connect(str(cache), read_only=True).execute("SELECT count(*) FROM runs").fetchall()
    r = run_cli(*args, "--resume")
    assert r.returncode == 0, r.stderr
    assert "is a finished run (3 of 3 steps): nothing to resume" in " ".join(r.stdout.split())
    assert written() == files
    assert duckdb.connect(str(cache), read_only=True).execute("SELECT count(*) FROM runs").fetchall() == runs


def test_teacher_text_tower_mode_keeps_the_teachers_text_weights(cache_copy, tmp_path):
    cache, student = cache_copy
    r = distill(_cfg(cache, student, tmp_path / "out", text_tower="teacher", steps=3), progress=False)
    teacher = load_file(str(json.loads(json.dumps(load_cache(cache).teacher.pretrained))))
    out = load_file(str(r.weights_path))
    cfg = json.loads(r.config_path.read_text())["model_cfg"]
    assert cfg["text_cfg"]["width"] == 64 and cfg["vision_cfg"]["width"] == 32  # teacher's text, student's vision
    for k in ("token_embedding.weight", "text_projection", "ln_final.weight", "transformer.resblocks.0.attn.in_proj_weight"):
        torch.testing.assert_close(out[k], teacher[k], rtol=0, atol=0)


def test_mined_batches_filter_and_pvl_variant_run(cache_copy, tmp_path):
    cache, student = cache_copy
    r = distill(_cfg(cache, student, tmp_path / "out", steps=3, text_filter="mined", mined_share=0.5, w_pvl_mined=0.2,
                     pvl_mined_k=2), progress=False)
    assert set(r.final) >= {"vl", "pvl", "pvl_mined", "vl_text", "total"} and np.isfinite(r.final["total"])


def test_mined_pairs_are_queryable_and_match_brute_force(tiny_cache):
    cache, _ = tiny_cache
    idx = load_cache(cache)
    img = idx.images.take(np.arange(len(idx.images))).astype(np.float32)
    txt = idx.texts.take(np.arange(len(idx.texts))).astype(np.float32)
    scores = img @ txt.T
    con = duckdb.connect(str(cache), read_only=True)
    rows = con.execute("SELECT image_item, rank, text_item FROM pseudo_pairs ORDER BY image_item, rank").fetchall()
    con.close()
    assert len(rows) == 64 * 3
    img_row = {int(i): r for r, i in enumerate(idx.image_item_ids)}
    txt_row = {int(i): r for r, i in enumerate(idx.text_item_ids)}
    for image_item, rank, text_item in rows:  # exact top-3, up to ties: each pick scores the brute-force rank-th best
        row = scores[img_row[image_item]]
        assert row[txt_row[text_item]] == pytest.approx(np.sort(row)[::-1][rank], abs=1e-5)


def test_embed_dim_mismatch_nan_and_bad_options_are_clear_errors(cache_copy, tmp_path):
    cache, student = cache_copy
    wrong = tmp_path / "wrong.json"
    wrong.write_text(student.read_text().replace('"embed_dim": 32', '"embed_dim": 48'))
    with pytest.raises(DimefmError, match="embed_dim 48 but the teacher's embeddings are 32-d"):
        distill(_cfg(cache, wrong, tmp_path / "a"), progress=False)
    with pytest.raises(DimefmError, match="loss became nan at step"):
        distill(_cfg(cache, student, tmp_path / "b", lr=1e30, warmup=0.0, grad_clip=None, checkpoint_every=1), progress=False)
    assert list((tmp_path / "b" / "checkpoints").glob("step_*.pt"))  # the last good checkpoint is kept
    with pytest.raises(DimefmError, match="text-tower"):
        _cfg(cache, student, tmp_path / "c", text_tower="both")
    with pytest.raises(DimefmError, match="unknown distill option"):
        DistillConfig.from_dict({"cache": "x", "out": "y", "lrr": 1})


def test_schedule_warms_up_then_decays_to_min_lr():
    cfg = DistillConfig(cache="x", out="y", lr=8e-4, min_lr=4e-5, warmup_lr=4e-6, warmup=0.04)
    assert lr_at(0, 1000, cfg) == pytest.approx(4e-6)
    assert lr_at(40, 1000, cfg) == pytest.approx(8e-4)
    assert lr_at(1000, 1000, cfg) == pytest.approx(4e-5)
    assert lr_at(20, 1000, cfg) < lr_at(40, 1000, cfg) and lr_at(500, 1000, cfg) < 8e-4


def test_mined_sentences_take_their_share_of_each_batch(tiny_cache):
    from types import SimpleNamespace

    from dimefm_pipeline.distill.data import TextSampler
    from dimefm_pipeline.distill.data import mined_text_pool
    from dimefm_pipeline.distill.train import step_inputs

    cache, student = tiny_cache
    idx = load_cache(cache, pairs=True)
    pairs = idx.pairs
    pool = mined_text_pool(pairs)
    assert set(pool.tolist()) == set(pairs[pairs >= 0].tolist())  # --text-filter mined: exactly the mined sentences
    cfg = _cfg(cache, student, "unused", mined_share=0.5, w_pvl_mined=0.2, pvl_mined_k=2)
    job = SimpleNamespace(idx=idx, pairs=pairs, tokens=None, step=5,
                          texts=TextSampler(np.arange(len(idx.texts)), 8, rank=0, world=1, seed=0))
    img_rows = np.arange(8, 16)
    targets, _ = step_inputs(cfg, job, img_rows, torch.device("cpu"))
    def key(row):  # a teacher row by its fp16 bytes
        return np.asarray(row, np.float16).tobytes()

    rows_of = {key(r): i for i, r in enumerate(idx.texts.take(np.arange(len(idx.texts))))}
    used_rows = {rows_of[key(r)] for r in targets[0]["text"].numpy()}
    neighbours = set(pairs[img_rows].ravel().tolist())
    assert len(used_rows) == 8 and len(used_rows & neighbours) >= 4  # half the batch: mined neighbours of its images
    plain = set(job.texts.rows(5).tolist())
    assert len(used_rows - plain) >= 1  # the mix replaced sentences of the plain draw
    mined = targets[0]["mined"].numpy()
    for i, row in enumerate(img_rows):  # P-VL's pseudo captions are the image's own first 2 neighbours
        assert {rows_of[key(m)] for m in mined[i]} == set(pairs[row, :2].tolist())


def test_tensorboard_scalars_and_a_resume_that_would_change_the_schedule(cache_copy, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cache, student = cache_copy
    tb = tmp_path / "tb"
    distill(_cfg(cache, student, tmp_path / "out", steps=6, stop_after=3, tensorboard=str(tb)), progress=False)
    acc = EventAccumulator(str(tb))
    acc.Reload()
    assert [e.step for e in acc.Scalars("loss/total")] == [1, 2, 3] and "lr" in acc.Tags()["scalars"]
    with pytest.raises(DimefmError, match=r"another schedule .*steps 6 -> 8.*--allow-schedule-change"):
        distill(_cfg(cache, student, tmp_path / "out", steps=8, resume=True), progress=False)
    r = distill(_cfg(cache, student, tmp_path / "out", steps=8, resume=True, allow_schedule_change=True), progress=False)
    assert r.steps == 8


def test_a_text_batch_larger_than_the_sentences_says_which_option_to_lower(cache_copy, tmp_path):
    cache, student = cache_copy  # 60 sentences
    with pytest.raises(DimefmError, match=r"only 60 sentences for a text batch of 64 x 1 rank\(s\): lower --text-batch-size"):
        distill(_cfg(cache, student, tmp_path / "out", text_batch_size=64, steps=1), progress=False)


def test_metrics_are_in_the_manifest_while_the_run_trains(cache_copy, tmp_path):
    """A running distillation's logged metrics reach the manifest between checkpoints (here every
    logged row), where a reader sees them before the run ends."""
    import os
    import time

    cache, student = cache_copy
    cmd = [sys.executable, "-m", "dimefm_pipeline", "distill", "--cache", str(cache), "--out", str(tmp_path / "live"),
           "--student", str(student), "--batch-size", "8", "--steps", "100000", "--workers", "0", "--augment", "none",
           "--log-every", "1", "--checkpoint-every", "100000"]
    proc = subprocess.Popen(cmd, env={**os.environ, "DIMEFM_METRICS_SECONDS": "0"}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        seen, deadline = 0, time.time() + 120
        while not seen and time.time() < deadline and proc.poll() is None:
            time.sleep(1)
            try:
                with duckdb.connect(str(cache), read_only=True) as con:
                    seen = con.execute("SELECT count(DISTINCT step) FROM metrics WHERE run_id = "
                                       "(SELECT max(run_id) FROM runs WHERE kind = 'distill')").fetchall()[0][0]
            except duckdb.Error:  # the writer's short transaction: look again
                continue
        assert proc.poll() is None, proc.stderr.read()
        assert seen > 0
    finally:
        proc.kill()
        proc.wait()
