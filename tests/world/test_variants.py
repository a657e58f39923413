"""Minimal scene edits used as hard negatives: one change, still a valid scene."""

from __future__ import annotations

import itertools

import numpy as np

from dimefm_pipeline.world.captions import caption
from dimefm_pipeline.world.checker import check_caption
from dimefm_pipeline.world.scene import sample_scene, scene_rng
from dimefm_pipeline.world.variants import edit_scene


def _attrs(scene):
    return sorted((o.shape, o.colour, o.size, o.position) for o in scene.objects)


def test_an_edit_changes_exactly_one_thing_and_keeps_scenes_valid():
    kinds = set()
    for i in range(500):
        rng = scene_rng(21, i)
        base = sample_scene(rng)
        edited = edit_scene(base, rng)
        assert edited.background == base.background
        a, b = _attrs(base), _attrs(edited)
        if len(a) != len(b):
            kinds.add("count")
            assert abs(len(a) - len(b)) == 1
            small, big = (a, b) if len(a) < len(b) else (b, a)
            assert all(x in big for x in small)
        else:
            changed = [(x, y) for x, y in zip(sorted(set(a) - set(b)), sorted(set(b) - set(a)))]
            assert len(changed) == 1, (a, b)
            diff = [k for k, (x, y) in zip(("shape", "colour", "size", "position"), zip(*changed[0])) if x != y]
            assert len(diff) == 1
            kinds.add(diff[0])
        assert len({o.position for o in edited.objects}) == edited.count
        for p, q in itertools.combinations(edited.objects, 2):
            assert np.hypot(p.cx - q.cx, p.cy - q.cy) >= 0.85 * (p.radius + q.radius)
        assert check_caption(caption(edited, rng), edited).ok
    assert kinds == {"shape", "colour", "size", "position", "count"}


def test_edit_weights_pick_the_kind_of_edit():
    for i in range(100):
        rng = scene_rng(22, i)
        base = sample_scene(rng)
        edited = edit_scene(base, rng, weights=(0, 0, 0, 1, 0))  # position only
        moved = [(a, b) for a, b in zip(base.objects, edited.objects) if a != b]
        assert edited.count == base.count and len(moved) == 1
        a, b = moved[0]
        assert (a.shape, a.colour, a.size) == (b.shape, b.colour, b.size) and a.position != b.position
