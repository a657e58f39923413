"""Scenes: what is in an image, sampled from a seed.

A scene is pure data (objects with attributes and exact geometry, plus a background); rendering
and captioning read it, never the other way round. Scene `i` of seed `s` is drawn from its own
random stream `(s, i)`, so a corpus is identical whether it is generated in one go or in pieces.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dimefm_pipeline.world.vocab import COLOURS, POSITION_ANCHOR, POSITIONS, SHAPES, SIZE_RADIUS, SIZES

BACKGROUND_KINDS = ("solid", "gradient", "noise")  # seen in training
UNSEEN_BACKGROUND_KINDS = ("stripes", "checker")  # kept back for the robustness shift
JITTER = 2.5  # px an object may move away from its position anchor
MAX_OVERLAP = 0.85  # centres closer than this share of the summed radii count as occluding


@dataclass(frozen=True)
class WorldObject:
    """One object: its attributes (what captions talk about) and its exact geometry."""

    shape: str
    colour: str
    size: str
    position: str
    cx: float  # centre, pixels
    cy: float
    radius: float  # circumscribed radius, pixels


@dataclass(frozen=True)
class Background:
    """How the canvas behind the objects is painted; colours are muted RGB triples."""

    kind: str
    colour_a: tuple[int, int, int]
    colour_b: tuple[int, int, int]
    param: float  # gradient angle (rad), noise level, or pattern period, depending on kind
    seed: int = 0  # drives the pixel noise of a "noise" background


@dataclass(frozen=True)
class Scene:
    """A whole image's content."""

    objects: tuple[WorldObject, ...]
    background: Background
    size: int = 64

    @property
    def count(self) -> int:
        return len(self.objects)


def scene_rng(seed: int, index: int, stream: int = 0) -> np.random.Generator:
    """The random stream of scene `index` under `seed`; `stream` separates independent uses (images vs texts)."""
    return np.random.default_rng([int(seed), int(stream), int(index)])


def _muted(rng: np.random.Generator) -> tuple[int, int, int]:
    # Greys with a slight tint: far enough from every saturated object colour to keep colour readable.
    level = rng.uniform(70, 195)
    tint = rng.uniform(-18, 18, size=3)
    return tuple(int(v) for v in np.clip(level + tint, 0, 255))


def sample_background(rng: np.random.Generator, kinds: tuple[str, ...] = BACKGROUND_KINDS) -> Background:
    """A random background of one of `kinds`."""
    kind = kinds[int(rng.integers(len(kinds)))]
    a, b = _muted(rng), _muted(rng)
    if kind == "gradient":
        param = float(rng.uniform(0, 2 * np.pi))
    elif kind == "noise":
        param = float(rng.uniform(4, 12))
    elif kind in UNSEEN_BACKGROUND_KINDS:
        param = float(rng.integers(4, 9))
    else:
        param = 0.0
    return Background(kind, a, b, param, int(rng.integers(2**31)))


def sample_object(rng: np.random.Generator, position: str, size: int, *, shape: str | None = None,
                  colour: str | None = None, obj_size: str | None = None, jitter: float = JITTER) -> WorldObject:
    """One object at `position`; attributes not given are drawn uniformly."""
    shape = shape or SHAPES[int(rng.integers(len(SHAPES)))]
    colour = colour or tuple(COLOURS)[int(rng.integers(len(COLOURS)))]
    obj_size = obj_size or SIZES[int(rng.integers(len(SIZES)))]
    lo, hi = SIZE_RADIUS[obj_size]
    ax, ay = POSITION_ANCHOR[position]
    jx, jy = rng.uniform(-jitter, jitter, size=2)
    return WorldObject(shape, colour, obj_size, position, ax * size + jx, ay * size + jy,
                       float(rng.uniform(lo, hi)) * size / 64)


def _occludes(a: WorldObject, b: WorldObject) -> bool:
    return float(np.hypot(a.cx - b.cx, a.cy - b.cy)) < MAX_OVERLAP * (a.radius + b.radius)


def sample_scene(rng: np.random.Generator, *, n_objects: int | None = None, size: int = 64,
                 background_kinds: tuple[str, ...] = BACKGROUND_KINDS,
                 count_weights: tuple[float, float, float] = (0.5, 0.25, 0.25)) -> Scene:
    """A random scene of 1-3 objects at distinct positions, none hiding another."""
    if n_objects is None:
        n_objects = int(rng.choice(3, p=np.asarray(count_weights) / sum(count_weights))) + 1
    positions = [POSITIONS[i] for i in rng.permutation(len(POSITIONS))[:n_objects]]
    objects: list[WorldObject] = []
    for pos in positions:
        obj = sample_object(rng, pos, size)
        # A large object next to the centre one can cover it; shrinking it keeps every object countable.
        if any(_occludes(obj, o) for o in objects):
            obj = sample_object(rng, pos, size, shape=obj.shape, colour=obj.colour, obj_size="small")
        if any(_occludes(obj, o) for o in objects):  # a small object on its anchor never occludes
            obj = sample_object(rng, pos, size, shape=obj.shape, colour=obj.colour, obj_size="small", jitter=0.0)
        objects.append(obj)
    return Scene(tuple(objects), sample_background(rng, background_kinds), size)
