"""Captions are true of their scenes, and the checker notices when one is not."""

from __future__ import annotations

import re
from dataclasses import replace

import numpy as np

from dimefm_pipeline.world.captions import CaptionStyle, caption
from dimefm_pipeline.world.checker import check_caption
from dimefm_pipeline.world.distractors import distractor_sentence
from dimefm_pipeline.world.scene import WorldObject, sample_scene, scene_rng
from dimefm_pipeline.world.vocab import COLOURS, SHAPES, all_visual_words


def test_every_caption_is_true_of_its_scene():
    for i in range(3000):
        rng = scene_rng(11, i)
        scene = sample_scene(rng)
        style = CaptionStyle.full() if i % 3 == 0 else CaptionStyle()
        text = caption(scene, rng, style)
        verdict = check_caption(text, scene)
        assert verdict.ok, (text, verdict.problems, scene)
        if verdict.mentions:  # object lists are complete
            assert len(verdict.mentions) == scene.count


def test_grammar_uses_several_templates_and_synonyms():
    texts = [caption(sample_scene(r := scene_rng(12, i)), r) for i in range(2000)]
    assert len({re.sub(r"[^a-z ]", "", t).split(" ")[0] for t in texts}) >= 5
    joined = " ".join(texts)
    for word in ("disc", "box", "rhombus", "hoop", "little", "big", "upper left", "middle", "violet"):
        assert word in joined


def _other(value, options):
    return next(v for v in options if v != value)


def test_checker_rejects_wrong_attributes_and_counts():
    for i in range(300):
        r = scene_rng(13, i)
        scene = sample_scene(r, n_objects=1)
        text = caption(scene, r, CaptionStyle.full())
        obj: WorldObject = scene.objects[0]
        wrong_colour = replace(scene, objects=(replace(obj, colour=_other(obj.colour, tuple(COLOURS))),))
        wrong_shape = replace(scene, objects=(replace(obj, shape=_other(obj.shape, SHAPES)),))
        wrong_size = replace(scene, objects=(replace(obj, size="large" if obj.size == "small" else "small"),))
        wrong_place = replace(scene, objects=(replace(obj, position="center" if obj.position != "center" else "top left"),))
        for bad in (wrong_colour, wrong_shape, wrong_size, wrong_place):
            assert not check_caption(text, bad).ok, text
    two = sample_scene(scene_rng(13, 999), n_objects=2)
    assert not check_caption("three objects.", two).ok
    assert not check_caption("a red circle, a blue square and a green star.", two).ok
    assert check_caption("two shapes.", two).ok


def test_distractors_are_non_visual():
    rng = np.random.default_rng(0)
    visual = all_visual_words()
    sentences = {distractor_sentence(rng) for _ in range(3000)}
    assert len(sentences) > 1000
    for s in sentences:
        assert not set(re.findall(r"[a-z]+", s)) & visual, s
        assert check_caption(s, sample_scene(scene_rng(0, 0))).problems == ("no claim recognised",)


def test_one_attribute_captions_name_a_single_kind_of_attribute_and_stay_true():
    style = CaptionStyle(p_count_only=0.0, p_one_attribute=1.0)
    kinds_seen = set()
    for i in range(400):
        rng = scene_rng(13, i)
        scene = sample_scene(rng)
        verdict = check_caption(caption(scene, rng, style), scene)
        assert verdict.ok and len(verdict.mentions) == scene.count
        kinds = {k for m in verdict.mentions for k in ("shape", "colour", "size", "position") if getattr(m, k)}
        assert len(kinds) == 1, verdict.mentions
        kinds_seen |= kinds
    assert kinds_seen == {"shape", "colour", "size", "position"}
