"""Recipes: the shipped paper recipe resolves to the method's defaults; overrides and errors."""

from __future__ import annotations

import open_clip
import pytest

from dimefm_pipeline.distill.student import student_config
from dimefm_pipeline.core.errors import DimefmError
from dimefm_pipeline.store.manifest import TeacherInfo
from dimefm_pipeline.app.recipes import distill_config, load_recipe


def test_paper_recipe_holds_the_reference_defaults():
    from torchvision import transforms as T

    from dimefm_pipeline.distill.data import image_transform
    from dimefm_pipeline.core.optim import param_groups
    from dimefm_pipeline.distill.train import lr_at

    r = load_recipe("vitl14-to-vitb32")
    cfg = distill_config(r)
    # optimisation (method.md): AdamW 0.9/0.999/1e-8, wd 0.05, lr 8e-4 -> 4e-5 cosine per step after a 4-epoch
    # warm-up from 4e-6, 100 epochs, 640 per GPU, AMP fp16 with a grad scaler, no gradient clipping
    assert (cfg.lr, cfg.min_lr, cfg.warmup_lr, cfg.weight_decay, cfg.epochs, cfg.batch_size) == (8e-4, 4e-5, 4e-6, 0.05, 100, 640)
    assert (cfg.betas, cfg.eps, cfg.grad_clip, cfg.precision, cfg.warmup) == ((0.9, 0.999), 1e-8, None, "amp", 0.04)
    per_epoch = 1000
    total = 100 * per_epoch
    assert cfg.warmup_steps(total) == 4 * per_epoch
    assert lr_at(0, total, cfg) == pytest.approx(4e-6) and lr_at(4 * per_epoch, total, cfg) == pytest.approx(8e-4)
    assert lr_at(total, total, cfg) == pytest.approx(4e-5) and lr_at(52 * per_epoch, total, cfg) == pytest.approx((8e-4 + 4e-5) / 2)
    # no weight decay on 1-D parameters, biases, positional, class and token embeddings
    vitb = open_clip.create_model("ViT-B-32")
    decay, no_decay = param_groups(vitb, cfg.weight_decay)
    no_decay_names = {n for n, p in vitb.named_parameters() if any(p is q for q in no_decay["params"])}
    assert {"visual.class_embedding", "visual.positional_embedding", "token_embedding.weight", "positional_embedding",
            "visual.conv1.weight"} - {"visual.conv1.weight"} <= no_decay_names
    assert all(vitb.get_parameter(n).ndim < 2 or "embedding" in n for n in no_decay_names) and decay["weight_decay"] == 0.05
    # student augmentation: Resize 256 bicubic, RandomResizedCrop 224 (0.08-1, 3/4-4/3), flip 0.5, CLIP mean/std
    steps = image_transform(cfg.augment, 224, open_clip.OPENAI_DATASET_MEAN, open_clip.OPENAI_DATASET_STD).transforms
    assert isinstance(steps[0], T.Resize) and steps[0].size == 256 and steps[0].interpolation == T.InterpolationMode.BICUBIC
    assert isinstance(steps[1], T.RandomResizedCrop) and steps[1].size == (224, 224) and steps[1].scale == (0.08, 1.0)
    assert steps[1].ratio == pytest.approx((3 / 4, 4 / 3)) and steps[1].interpolation == T.InterpolationMode.BICUBIC
    assert isinstance(steps[2], T.RandomHorizontalFlip) and steps[2].p == 0.5
    assert tuple(steps[4].mean) == open_clip.OPENAI_DATASET_MEAN and tuple(steps[4].std) == open_clip.OPENAI_DATASET_STD
    assert (cfg.loss.logit_scale, cfg.loss.tau_vl, cfg.loss.tau_pvl, cfg.loss.tau_udist) == (100.0, 1.0, 3.0, 7.0)
    assert (cfg.loss.w_vl, cfg.loss.w_pvl, cfg.loss.w_udist) == (0.7, 0.3, 0.0)
    assert r.section("encode")["teacher"] == "ViT-L-14" and r.section("encode")["pretrained"] == "openai"
    vitl = open_clip.get_model_config("ViT-L-14")
    teacher = TeacherInfo("ViT-L-14", "openai", "x", vitl["embed_dim"], 224, 77, {}, vitl)
    arch, cfg_json = student_config(cfg.student, teacher, cfg.text_tower)
    assert cfg_json["embed_dim"] == 768 and cfg_json["vision_cfg"]["patch_size"] == 32
    assert cfg_json["text_cfg"] == vitl["text_cfg"]  # the teacher's text tower is kept
    assert student_config("vit-b-32-768", teacher, cfg.text_tower)[1] == cfg_json  # the shipped config, by name


def test_overrides_are_parsed_as_toml_and_checked(tmp_path):
    r = load_recipe("vitl14-to-vitb32", ["distill.steps=12", "distill.tau_pvl=2.5", "run.out=" + str(tmp_path), "mine.k=4"])
    cfg = distill_config(r)
    assert cfg.steps == 12 and cfg.loss.tau_pvl == 2.5 and r.section("mine")["k"] == 4
    with pytest.raises(DimefmError, match="unknown distill option"):
        distill_config(load_recipe("vitl14-to-vitb32", ["distill.learning_rate=1"]))
    with pytest.raises(DimefmError, match="section.key=value"):
        load_recipe("vitl14-to-vitb32", ["steps=1"])
    with pytest.raises(DimefmError, match="no recipe"):
        load_recipe("nope")
