"""The hard world: true captions, verifiable class names, held-out combinations, long tails, shifts."""

from __future__ import annotations

import collections
from dataclasses import replace

import numpy as np
import pytest

from dimefm_pipeline.world.hard.captions import HardCaptionStyle, caption
from dimefm_pipeline.world.hard.checker import check_caption
from dimefm_pipeline.world.hard.edits import EDITS, edit_scene
from dimefm_pipeline.world.hard.render import render
from dimefm_pipeline.world.hard.scene import HardObject, relation, sample_scene
from dimefm_pipeline.world.hard.suite import SHIFTS, TASKS, pool_scenes, shifted_image
from dimefm_pipeline.world.hard.vocab import HELD_OUT, SHAPES, all_visual_words
from dimefm_pipeline.world.scene import scene_rng


def _obj(shape="circle", colour="red", pattern="solid", cx=32.0, cy=32.0, r=8.0) -> HardObject:
    return HardObject(shape, colour, pattern, cx, cy, r, 0.0, (200, 40, 40))


def test_relations_follow_the_picture_axes():
    left, right, up, down = _obj(cx=10), _obj(cx=40), _obj(cy=10), _obj(cy=40)
    assert relation(left, right) == "left" and relation(right, left) == "right"
    assert relation(up, down) == "above" and relation(down, up) == "below"
    assert relation(_obj(cx=10, cy=10), _obj(cx=30, cy=30)) is None  # diagonal: no relation is stated
    assert relation(_obj(cx=30), _obj(cx=34)) is None  # too close


def test_every_caption_of_random_scenes_is_true():
    for i in range(1500):
        rng = scene_rng(5, i, 3)
        scene = sample_scene(rng)
        for style in (HardCaptionStyle(), HardCaptionStyle.full()):
            sentence = caption(scene, rng, style)
            assert check_caption(sentence, scene).ok, (sentence, check_caption(sentence, scene).problems)


def test_the_checker_refuses_a_swapped_relation_or_a_neighbouring_shade():
    scene = sample_scene(np.random.default_rng(0), layout="pair")
    a, b = scene.objects
    scene = replace(scene, objects=(replace(a, cx=12.0, cy=32.0, shape="star", colour="red"),
                                    replace(b, cx=50.0, cy=30.0, shape="circle", colour="blue")))
    assert check_caption("a red star to the left of a blue circle.", scene).ok
    assert not check_caption("a red star to the right of a blue circle.", scene).ok
    assert not check_caption("a blue star to the left of a red circle.", scene).ok  # binding swapped
    assert not check_caption("a maroon star to the left of a blue circle.", scene).ok
    assert not check_caption("three objects: a red star and a blue circle.", scene).ok
    assert not check_caption("a red star left and a blue circle.", scene).ok  # a stray relation word


def test_every_class_name_is_true_of_its_pictures_and_no_other_is():
    rng = np.random.default_rng(0)
    pools = {}
    for task in TASKS:
        scenes = pools.setdefault(task.pool, pool_scenes(task.pool, "test", 150))
        labels = [task.label(s, extra) for s, extra in scenes]
        assert max(labels) < len(task.classnames)
        for (scene, _), label in zip(scenes, labels):
            for template in task.templates:
                assert check_caption(template.format(c=task.classnames[label]), scene).ok
            other = (label + 1 + int(rng.integers(len(task.classnames) - 1))) % len(task.classnames)
            assert not check_caption(task.templates[0].format(c=task.classnames[other]), scene).ok, task.name


def test_the_tasks_are_hard_by_construction():
    sizes = {t.name: len(t.classnames) for t in TASKS}
    assert sizes["shape_pattern"] >= 60 and max(t.label(s, e) for t in TASKS[2:3]
                                                for s, e in pool_scenes("crowd", "test", 200)) == 5
    counts = collections.Counter(s.count for s, _ in pool_scenes("crowd", "test", 600))
    assert set(counts) == {1, 2, 3, 4, 5, 6}
    # crowds hide parts of objects: some pairs of centres are closer than their summed radii
    overlapping = sum(any(np.hypot(a.cx - b.cx, a.cy - b.cy) < a.radius + b.radius
                          for k, a in enumerate(s.objects) for b in s.objects[k + 1:])
                      for s, _ in pool_scenes("crowd", "test", 300))
    assert overlapping > 30


def test_held_out_combinations_appear_only_in_the_compositional_test_pool():
    seen = collections.Counter()
    for i in range(4000):
        rng = scene_rng(0, i, 1)
        scene = sample_scene(rng)
        edited = edit_scene(scene, rng)
        for obj in scene.objects + edited.objects:
            seen[(obj.colour, obj.shape)] += 1
    assert not set(seen) & HELD_OUT
    novel = {(s.objects[0].colour, s.objects[0].shape) for s, _ in pool_scenes("novel", "test", 400)}
    assert novel == set(HELD_OUT)


def test_shape_frequencies_have_a_long_tail():
    shapes = collections.Counter(o.shape for i in range(6000) for o in sample_scene(scene_rng(0, i, 2)).objects)
    assert set(shapes) == set(SHAPES)
    assert shapes["circle"] > 6 * shapes["hexagram"]


def test_edits_change_exactly_one_thing_a_caption_can_tell():
    kinds = collections.Counter()
    for i in range(600):
        rng = scene_rng(0, i, 4)
        scene = sample_scene(rng)
        weights = tuple(float(k == i % len(EDITS)) for k in range(len(EDITS)))
        edited = edit_scene(scene, rng, weights)
        assert edited != scene
        kinds[EDITS[i % len(EDITS)]] += 1
        assert check_caption(caption(edited, rng, HardCaptionStyle.full()), edited).ok


def test_pictures_are_deterministic_and_shifts_keep_the_content():
    scene, _ = pool_scenes("crowd", "test", 3)[2]
    assert np.array_equal(render(scene), render(scene))
    assert render(scene).shape == (64, 64, 3) and render(scene).dtype == np.uint8
    for i, name in enumerate(SHIFTS):
        img = shifted_image(scene, name, 2)
        assert img.shape == (64, 64, 3) and np.array_equal(img, shifted_image(scene, name, 2))
        assert np.abs(img.astype(int) - render(scene).astype(int)).mean() > 1.0, name


def test_distractor_words_are_not_visual():
    from dimefm_pipeline.world.hard.corpus import hard_distractor

    visual = all_visual_words()
    for i in range(500):
        words = set(hard_distractor(np.random.default_rng(i)).replace(".", " ").replace(",", " ").split())
        assert not words & visual


@pytest.mark.parametrize("pool", ["single", "relation", "binding"])
def test_suite_pools_are_the_same_on_every_call(pool):
    a = [render(s) for s, _ in pool_scenes(pool, "val", 5)]
    b = [render(s) for s, _ in pool_scenes(pool, "val", 5)]
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
