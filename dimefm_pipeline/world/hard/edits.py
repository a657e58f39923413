"""Minimal edits of a hard-world scene: hard negatives for the teacher's contrastive training.

An edit changes one thing: one object's shape (often to a look-alike), shade (often to its partner),
or fill pattern; the colours or the places of two objects swapped (attribute binding and relations,
where a bag of words cannot tell the two pictures apart); two objects turned a quarter about their
midpoint (side by side becomes one above the other); or one object added or removed. Edits never
create a held-out colour-shape combination.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from dimefm_pipeline.world.hard.scene import SEPARATION, HardScene, draw_attributes, lit, make_object
from dimefm_pipeline.world.hard.vocab import COLOURS, HELD_OUT, PATTERNS, SHAPES

EDITS = ("shape", "colour", "pattern", "swap_colours", "swap_places", "turn", "count")
LOOK_ALIKE = {
    "triangle": ("trapezoid", "arrow"), "square": ("diamond", "trapezoid"), "pentagon": ("hexagon", "octagon"),
    "hexagon": ("pentagon", "octagon"), "octagon": ("hexagon", "circle"), "circle": ("octagon", "ring"),
    "ring": ("circle", "crescent"), "star": ("hexagram", "cross"), "hexagram": ("star", "hexagon"),
    "cross": ("star", "arrow"), "diamond": ("square", "heart"), "semicircle": ("crescent", "trapezoid"),
    "heart": ("diamond", "semicircle"), "crescent": ("semicircle", "ring"), "arrow": ("cross", "triangle"),
    "trapezoid": ("square", "semicircle"),
}
PARTNER = {"red": "maroon", "orange": "brown", "yellow": "olive", "green": "teal", "blue": "navy", "purple": "pink"}
PARTNER |= {v: k for k, v in PARTNER.items()}


def _other(rng: np.random.Generator, options, current, near=()):
    if near and rng.random() < 0.5:
        return near[int(rng.integers(len(near)))]
    choices = [o for o in options if o != current]
    return choices[int(rng.integers(len(choices)))]


def _free_spot(rng: np.random.Generator, objects, r: float, size: int) -> tuple[float, float] | None:
    """A centre for one more object of radius `r`, as close to the others as a crowd allows."""
    for _ in range(100):
        x, y = rng.uniform(r + 1, size - r - 1, size=2)
        if all(np.hypot(x - o.cx, y - o.cy) >= SEPARATION["crowd"] * (r + o.radius) for o in objects):
            return float(x), float(y)
    return None


def _turn(a, b, sign: float, size: int):
    """`a` and `b` turned a quarter about their midpoint, or None if either would leave the canvas."""
    mx, my = (a.cx + b.cx) / 2, (a.cy + b.cy) / 2
    out = []
    for o in (a, b):
        dx, dy = o.cx - mx, o.cy - my
        x, y = mx - sign * dy, my + sign * dx
        if not (o.radius <= x <= size - o.radius and o.radius <= y <= size - o.radius):
            return None
        out.append(replace(o, cx=float(x), cy=float(y)))
    return tuple(out)


def _allowed(objects) -> bool:
    return all((o.colour, o.shape) not in HELD_OUT for o in objects)


def edit_scene(scene: HardScene, rng: np.random.Generator, weights: tuple[float, ...] | None = None) -> HardScene:
    """`scene` with one change; `weights` are the odds of the kinds in `EDITS` order (default: equal)."""
    odds = None if weights is None else np.asarray(weights, dtype=float) / sum(weights)
    for _ in range(12):  # an edit that cannot apply here (or would make a held-out pair) is redrawn
        kind = EDITS[int(rng.choice(len(EDITS), p=odds))] if odds is not None else EDITS[int(rng.integers(len(EDITS)))]
        objs = list(scene.objects)
        i = int(rng.integers(len(objs)))
        o = objs[i]
        if kind == "shape":
            objs[i] = make_object(rng, _other(rng, SHAPES, o.shape, LOOK_ALIKE[o.shape]), o.colour, o.pattern,
                                  o.cx, o.cy, o.radius)
        elif kind == "colour":
            colour = _other(rng, tuple(COLOURS), o.colour, (PARTNER[o.colour],))
            objs[i] = replace(o, colour=colour, rgb=lit(rng, colour))
        elif kind == "pattern":
            objs[i] = replace(o, pattern=_other(rng, PATTERNS, o.pattern))
        elif kind == "turn" and len(objs) > 1:
            j = int(rng.choice([k for k in range(len(objs)) if k != i]))
            turned = _turn(objs[i], objs[j], 1.0 if rng.random() < 0.5 else -1.0, scene.size)
            if turned is None:
                continue
            objs[i], objs[j] = turned
        elif kind in ("swap_colours", "swap_places") and len(objs) > 1:
            j = int(rng.choice([k for k in range(len(objs)) if k != i]))
            a, b = objs[i], objs[j]
            if kind == "swap_colours":
                objs[i], objs[j] = replace(a, colour=b.colour, rgb=b.rgb), replace(b, colour=a.colour, rgb=a.rgb)
            else:
                objs[i], objs[j] = replace(a, cx=b.cx, cy=b.cy), replace(b, cx=a.cx, cy=a.cy)
        elif kind == "count" and (len(objs) == 6 or (len(objs) > 1 and rng.random() < 0.5)):
            objs.pop(i)
        elif kind == "count":
            r = float(np.mean([o.radius for o in objs]))
            spot = _free_spot(rng, objs, r, scene.size)
            if spot is None:
                continue
            objs.append(make_object(rng, *draw_attributes(rng), *spot, r))
        else:
            continue
        if objs != list(scene.objects) and _allowed(objs):
            return replace(scene, objects=tuple(objs))
    return replace(scene, objects=tuple(replace(o, pattern=_other(rng, PATTERNS, o.pattern)) if k == 0 else o
                                        for k, o in enumerate(scene.objects)))
