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

from dimefm_pipeline.cache_index import load_cache
from dimefm_pipeline.distill.config import DistillConfig
from dimefm_pipeline.distill.train import distill, lr_at
from dimefm_pipeline.errors import DimefmError
from dimefm_pipeline.losses import dimefm_losses


def _cfg(cache, student, out, **kw):
    base = dict(cache=str(cache), out=str(out), student=str(student), batch_size=8, text_batch_size=8, steps=10,
                workers=1, augment="none", checkpoint_every=100, log_every=1, lr=2e-3, warmup=0.1)
    base.update(kw)
    return DistillConfig.from_dict(base)


def _student_features(cfg_path, weights, idx, n=32):
    """Student image features of the first n cached images (un-augmented), via open_clip alone."""
    import open_clip
    from PIL import Image

    from dimefm_pipeline.distill.data import ImageReader, file_tables

    open_clip.add_model_config(cfg_path)
    model = open_clip.create_model(cfg_path.stem, pretrained=str(weights)).eval()
    _, _, pre = open_clip.create_model_and_transforms(cfg_path.stem)
    reader = ImageReader(idx, file_tables(str(idx.path), idx))
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
        s_img = _student_features(r.config_path, r.weights_path, idx)[:16]
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


def test_output_loads_with_open_clip_alone_and_matches(cache_copy, tmp_path):
    cache, student = cache_copy
    r = distill(_cfg(cache, student, tmp_path / "out", steps=3), progress=False)
    code = (
        "import open_clip, torch, sys; torch.manual_seed(0)\n"
        f"open_clip.add_model_config({str(r.config_path)!r})\n"
        f"m = open_clip.create_model({r.config_path.stem!r}, pretrained={str(r.weights_path)!r}).eval()\n"
        "x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)); t = open_clip.get_tokenizer(" + repr(r.config_path.stem) + ")(['a red cat'])\n"
        "torch.save({'i': m.encode_image(x), 't': m.encode_text(t)}, sys.argv[1])\n"
    )
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "f.pt")], check=True, cwd=tmp_path)
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
        torch.testing.assert_close(got["t"], s.model.encode_text(open_clip.get_tokenizer(r.config_path.stem)(["a red cat"])))


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


def test_teacher_text_tower_mode_keeps_the_teachers_text_weights(cache_copy, tmp_path):
    cache, student = cache_copy
    r = distill(_cfg(cache, student, tmp_path / "out", text_tower="teacher", steps=3), progress=False)
    teacher = load_file(str(json.loads(json.dumps(load_cache(cache).teacher.pretrained))))
    out = load_file(str(r.weights_path))
    cfg = json.loads(r.config_path.read_text())
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
    best = np.argsort(-(img @ txt.T), axis=1)[:, 0]
    con = duckdb.connect(str(cache), read_only=True)
    rows = con.execute("SELECT image_item, text_item FROM pseudo_pairs WHERE rank = 0 ORDER BY image_item").fetchall()
    n_pairs = con.execute("SELECT count(*) FROM pseudo_pairs").fetchall()[0][0]
    con.close()
    assert n_pairs == 64 * 3
    img_row = {int(i): r for r, i in enumerate(idx.image_item_ids)}
    txt_row = {int(i): r for r, i in enumerate(idx.text_item_ids)}
    agree = np.mean([txt_row[t] == best[img_row[i]] for i, t in rows])
    assert agree > 0.95  # fp16 ties aside, faiss top-1 is the brute-force top-1


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
