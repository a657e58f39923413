"""The hard-world teacher's paired stream: true captions, hard negatives that stay negative."""

from __future__ import annotations

import collections

import numpy as np

from dimefm_pipeline.world.hard.checker import check_caption
from dimefm_pipeline.world.hard.scene import relation
from dimefm_pipeline.world.hard.stream import batch_scenes, focused_group, paired_batch


def test_every_caption_is_true_and_false_of_the_other_pictures_of_its_group():
    pairs = batch_scenes(7, batch_size=61, group_share=0.5, seed=3)
    assert len(pairs) == 61
    groups = collections.defaultdict(list)
    for scene, text, group in pairs:
        assert check_caption(text, scene).ok, text
        if group >= 0:
            groups[group].append((scene, text))
    assert len(groups) >= 6 and sum(map(len, groups.values())) <= 28  # 61 * 0.5 -> 7 groups of at most 4
    for members in groups.values():
        for j, (_, text) in enumerate(members):
            others = [s for k, (s, _) in enumerate(members) if k != j]
            assert not any(check_caption(text, o).ok for o in others), text


def test_focused_groups_contrast_order_axis_and_binding():
    rng = np.random.default_rng(0)
    for _ in range(20):
        base, swapped, turned, recoloured = focused_group(rng)
        a, b = base.objects
        assert relation(a, b) is not None and a.shape != b.shape
        assert relation(*swapped.objects) != relation(a, b)
        assert {o.colour for o in recoloured.objects} == {a.colour, b.colour}
    assert turned.objects != base.objects


def test_a_step_is_the_same_batch_every_time_and_steps_differ():
    one = paired_batch(4, batch_size=24, group_share=0.5, seed=0)
    again = paired_batch(4, batch_size=24, group_share=0.5, seed=0)
    other = paired_batch(5, batch_size=24, group_share=0.5, seed=0)
    assert np.array_equal(one[0], again[0]) and one[1] == again[1]
    assert one[0].shape == (24, 64, 64, 3) and one[1] != other[1]
