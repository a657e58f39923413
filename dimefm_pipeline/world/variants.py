"""Minimal edits of a scene: the same picture with one attribute of one object changed.

Training the teacher on groups of such near-duplicates puts, next to every image, negatives that
differ only in shape, or only in colour, size, position or count, so the contrastive loss cannot be
lowered by colour alone and every attribute gets a gradient from the first steps.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from dimefm_pipeline.world.scene import Scene, WorldObject, _occludes, sample_object
from dimefm_pipeline.world.vocab import COLOURS, POSITIONS, SHAPES, SIZES

EDITS = ("shape", "colour", "size", "position", "count")


def _other(rng: np.random.Generator, options, current):
    choices = [o for o in options if o != current]
    return choices[int(rng.integers(len(choices)))]


def _fits(objects: list[WorldObject]) -> bool:
    return not any(_occludes(a, b) for i, a in enumerate(objects) for b in objects[i + 1:])


def edit_scene(scene: Scene, rng: np.random.Generator, weights: tuple[float, ...] | None = None) -> Scene:
    """`scene` with one attribute of one object changed (or one object added or removed).

    `weights` are the relative odds of the kinds of edit, in `EDITS` order (default: all equal).
    """
    odds = None if weights is None else np.asarray(weights, dtype=float) / sum(weights)
    for _ in range(8):  # an edit that would make objects overlap is redrawn
        kind = EDITS[int(rng.integers(len(EDITS)))] if odds is None else EDITS[int(rng.choice(len(EDITS), p=odds))]
        objs = list(scene.objects)
        i = int(rng.integers(len(objs)))
        o = objs[i]
        free = [p for p in POSITIONS if p not in {x.position for x in objs}]
        if kind == "shape":
            objs[i] = replace(o, shape=_other(rng, SHAPES, o.shape))
        elif kind == "colour":
            objs[i] = replace(o, colour=_other(rng, tuple(COLOURS), o.colour))
        elif kind == "size":
            objs[i] = sample_object(rng, o.position, scene.size, shape=o.shape, colour=o.colour,
                                    obj_size=_other(rng, SIZES, o.size))
        elif kind == "position":
            objs[i] = sample_object(rng, free[int(rng.integers(len(free)))], scene.size, shape=o.shape,
                                    colour=o.colour, obj_size=o.size)
        elif len(objs) == 3 or (len(objs) > 1 and rng.random() < 0.5):
            objs.pop(i)
        else:
            objs.append(sample_object(rng, free[int(rng.integers(len(free)))], scene.size))
        if _fits(objs):
            return replace(scene, objects=tuple(objs))
    return replace(scene, objects=tuple(replace(o, shape=_other(rng, SHAPES, o.shape)) if k == 0 else o
                                        for k, o in enumerate(scene.objects)))
