"""Recipes: the shipped paper recipe resolves to the method's defaults; overrides and errors."""

from __future__ import annotations

import open_clip
import pytest

from dimefm_pipeline.distill.student import student_config
from dimefm_pipeline.errors import DimefmError
from dimefm_pipeline.manifest import TeacherInfo
from dimefm_pipeline.recipes import distill_config, load_recipe


def test_paper_recipe_holds_the_reference_defaults():
    r = load_recipe("vitl14-to-vitb32")
    cfg = distill_config(r)
    assert (cfg.lr, cfg.min_lr, cfg.warmup_lr, cfg.weight_decay, cfg.epochs, cfg.batch_size) == (8e-4, 4e-5, 4e-6, 0.05, 100, 640)
    assert (cfg.loss.logit_scale, cfg.loss.tau_vl, cfg.loss.tau_pvl, cfg.loss.tau_udist) == (100.0, 1.0, 3.0, 7.0)
    assert (cfg.loss.w_vl, cfg.loss.w_pvl, cfg.loss.w_udist) == (0.7, 0.3, 0.0)
    assert r.section("encode")["teacher"] == "ViT-L-14" and r.section("encode")["pretrained"] == "openai"
    vitl = open_clip.get_model_config("ViT-L-14")
    teacher = TeacherInfo("ViT-L-14", "openai", "x", vitl["embed_dim"], 224, 77, {}, vitl)
    arch, cfg_json = student_config(cfg.student, teacher, cfg.text_tower)
    assert cfg_json["embed_dim"] == 768 and cfg_json["vision_cfg"]["patch_size"] == 32
    assert cfg_json["text_cfg"] == vitl["text_cfg"]  # the teacher's text tower is kept


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
