"""The hard-world teacher's paired stream: a fresh batch of pictures and true captions per step.

Half of a batch comes in groups: a picture and minimal edits of it (hard negatives). Every caption
in a group is checked false of the group's other pictures, so a negative is never a picture the
caption also describes; a member no caption could tell apart is left out and an independent picture
takes its place. Every other group is a pair with a clear relation and its swapped, turned and
colour-swapped versions, captioned with the relation: order, axis and binding are what a contrastive
batch of independent pictures never contrasts, so they come with their own negatives.
"""

from __future__ import annotations

import numpy as np

from dimefm_pipeline.world.hard.captions import HardCaptionStyle, caption
from dimefm_pipeline.world.hard.checker import check_caption
from dimefm_pipeline.world.hard.edits import EDITS, edit_scene
from dimefm_pipeline.world.hard.render import render
from dimefm_pipeline.world.hard.scene import HardScene, relation, sample_scene

TRAIN_STREAM = 1  # the teacher's paired data; corpora and the suite use other streams
GROUP_CAPTIONS = HardCaptionStyle(p_colour=0.9, p_pattern=0.85, p_shape=0.95, p_relation=0.8, p_count_only=0.05)
FOCUS_CAPTIONS = HardCaptionStyle(p_colour=0.5, p_pattern=0.5, p_shape=1.0, p_relation=1.0, p_count_only=0.0)
# odds of the edits in `EDITS` order: shape, colour, pattern, swap colours, swap places, turn, count
EDIT_WEIGHTS = (2.0, 1.0, 1.0, 2.0, 2.0, 2.0, 1.0)
GROUP_SIZE = 4
TRIES = 12  # captions drawn for a group member before it is left out
_FOCUS_EDITS = ("swap_places", "turn", "swap_colours")


def _one_hot(kind: str) -> tuple[float, ...]:
    return tuple(float(k == kind) for k in EDITS)


def telling_caption(scene: HardScene, others: list[HardScene], rng: np.random.Generator,
                    style: HardCaptionStyle) -> str | None:
    """A true caption of `scene` that is false of every one of `others`, or None if none was drawn."""
    for _ in range(TRIES):
        text = caption(scene, rng, style)
        if not any(check_caption(text, o).ok for o in others):
            return text
    return None


def focused_group(rng: np.random.Generator) -> list[HardScene]:
    """A pair of different shapes in a clear relation, then the pair swapped, turned a quarter, and
    with its colours swapped."""
    while True:
        base = sample_scene(rng, layout="pair")
        if relation(*base.objects) is not None and base.objects[0].shape != base.objects[1].shape:
            break
    return [base] + [edit_scene(base, rng, _one_hot(kind)) for kind in _FOCUS_EDITS]


def batch_scenes(step: int, *, batch_size: int, group_share: float, seed: int,
                 edit_weights: tuple[float, ...] = EDIT_WEIGHTS) -> list[tuple[HardScene, str, int]]:
    """(scene, caption, group) of every pair of step `step`; group -1 for an independent scene. A
    function of (seed, step) alone, so a resumed run sees the same batches."""
    pairs: list[tuple[HardScene, str, int]] = []
    grouped = int(batch_size * group_share) // GROUP_SIZE * GROUP_SIZE
    draw, groups = 0, 0
    while len(pairs) < batch_size:
        rng = np.random.default_rng([int(seed), TRAIN_STREAM, int(step), draw])
        draw += 1
        if len(pairs) + GROUP_SIZE > grouped:
            scene = sample_scene(rng)
            pairs.append((scene, caption(scene, rng), -1))
            continue
        if groups % 2 == 0:
            members, style = focused_group(rng), FOCUS_CAPTIONS
        else:
            base = sample_scene(rng)
            members = [base] + [edit_scene(base, rng, edit_weights) for _ in range(GROUP_SIZE - 1)]
            style = GROUP_CAPTIONS
        for j, scene in enumerate(members):
            text = telling_caption(scene, members[:j] + members[j + 1:], rng, style)
            if text is not None:
                pairs.append((scene, text, groups))
        groups += 1
    return pairs


def paired_batch(step: int, *, batch_size: int, group_share: float, seed: int,
                 edit_weights: tuple[float, ...] = EDIT_WEIGHTS) -> tuple[np.ndarray, list[str]]:
    """Pictures (B x H x W x 3 uint8) and one true caption each for optimiser step `step`."""
    pairs = batch_scenes(step, batch_size=batch_size, group_share=group_share, seed=seed, edit_weights=edit_weights)
    return np.stack([render(scene) for scene, _, _ in pairs]), [text for _, text, _ in pairs]
