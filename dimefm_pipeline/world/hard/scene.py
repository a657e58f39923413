"""Hard-world scenes: what is in a picture, drawn from a seeded stream.

Three layouts share one canvas: a single large object (fine detail: shape, fill pattern, shade), a
pair (relations, attribute binding) and a crowd of three to six smaller objects that may partly hide
one another, over backgrounds with clutter marks that are not objects. Shapes and colours follow
long-tailed frequencies, and the held-out colour-shape combinations never appear in training
streams. A scene is pure data; rendering and captioning read it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dimefm_pipeline.world.hard.vocab import (
    BRIGHTNESS,
    COLOUR_JITTER,
    COLOUR_ORDER,
    COLOUR_TAIL,
    COLOURS,
    HELD_OUT,
    PATTERN_FREQ,
    PATTERNS,
    RELATION_GAP,
    RELATION_SLOPE,
    SHAPE_ORDER,
    SHAPE_TAIL,
    SHAPES,
    tail_weights,
)
from dimefm_pipeline.world.scene import BACKGROUND_KINDS, Background, sample_background

SIZE = 64
TILT = 20.0  # degrees an object may turn either way in training pictures
ROUND = ("circle", "ring")  # shapes that look the same at every angle
LAYOUT_ODDS = {"single": 0.3, "pair": 0.3, "crowd": 0.4}
RADIUS = {"single": (11.0, 18.0), "pair": (7.5, 12.0), "crowd": (5.5, 9.0)}
# Centres closer than this share of the summed radii are redrawn: in a crowd a small object can sit
# mostly behind a big one (so a count can be ambiguous, as in real photos), pairs barely touch.
SEPARATION = {"single": 0.0, "pair": 0.9, "crowd": 0.62}
CLUTTER_ODDS = 0.5  # share of pictures with clutter marks on the background
_SHAPE_ODDS = np.asarray(tail_weights(SHAPE_ORDER, SHAPE_TAIL, SHAPES))
_COLOUR_ODDS = np.asarray(tail_weights(COLOUR_ORDER, COLOUR_TAIL, tuple(COLOURS)))


@dataclass(frozen=True)
class HardObject:
    """One object: its attributes (what captions name) and how it is drawn."""

    shape: str
    colour: str
    pattern: str
    cx: float  # centre, pixels
    cy: float
    radius: float  # circumscribed radius, pixels
    angle: float  # rotation of the drawing, degrees
    rgb: tuple[int, int, int]  # the colour under this picture's lighting


@dataclass(frozen=True)
class Mark:
    """A clutter mark: a short line or a speck, part of the background, never an object."""

    kind: str  # "line" or "speck"
    x0: float
    y0: float
    x1: float
    y1: float
    grey: int


@dataclass(frozen=True)
class HardScene:
    """A whole picture's content; objects are drawn in order, later ones on top."""

    objects: tuple[HardObject, ...]
    background: Background
    clutter: tuple[Mark, ...] = ()
    size: int = SIZE

    @property
    def count(self) -> int:
        return len(self.objects)


def _choice(rng: np.random.Generator, values, odds=None):
    if odds is None:
        return values[int(rng.integers(len(values)))]
    p = np.asarray(odds, dtype=float)
    return values[int(rng.choice(len(values), p=p / p.sum()))]


def lit(rng: np.random.Generator, colour: str) -> tuple[int, int, int]:
    """`colour` under a random lighting factor and channel jitter."""
    rgb = np.asarray(COLOURS[colour], dtype=float) * rng.uniform(*BRIGHTNESS)
    rgb += rng.uniform(-COLOUR_JITTER, COLOUR_JITTER, size=3)
    return tuple(int(v) for v in np.clip(np.round(rgb), 0, 255))


def draw_attributes(rng: np.random.Generator, *, shape: str | None = None, colour: str | None = None,
                    pattern: str | None = None, held_out: bool = False) -> tuple[str, str, str]:
    """Shape, colour and pattern from the world's long tails; a colour-shape combination in
    `HELD_OUT` only when `held_out` (the compositional test split), never otherwise."""
    if shape is None:
        shape = _choice(rng, SHAPES, _SHAPE_ODDS)
    if colour is None:
        names = tuple(COLOURS)
        allowed = [((c, shape) in HELD_OUT) == held_out for c in names]
        odds = _COLOUR_ODDS * np.asarray(allowed, dtype=float)
        colour = _choice(rng, names, odds)
    if pattern is None:
        pattern = _choice(rng, PATTERNS, PATTERN_FREQ)
    return shape, colour, pattern


def make_object(rng: np.random.Generator, shape: str, colour: str, pattern: str, cx: float, cy: float,
                radius: float, tilt: float = TILT) -> HardObject:
    """An object at a given place, with its drawing angle and lighting drawn from `rng`."""
    angle = 0.0 if shape in ROUND else float(rng.uniform(-tilt, tilt))
    return HardObject(shape, colour, pattern, float(cx), float(cy), float(radius), angle, lit(rng, colour))


def place(rng: np.random.Generator, radii: list[float], separation: float, size: int = SIZE,
          tries: int = 200) -> list[tuple[float, float]]:
    """Centres for objects of `radii`, each inside the canvas, no two closer than `separation` times
    their summed radii. Radii that cannot be placed are shrunk by 10% and tried again."""
    for _ in range(20):
        centres: list[tuple[float, float]] = []
        for r in radii:
            for _ in range(tries):
                x, y = rng.uniform(r + 1, size - r - 1, size=2)
                if all(np.hypot(x - a, y - b) >= separation * (r + rb) for (a, b), rb in zip(centres, radii)):
                    centres.append((float(x), float(y)))
                    break
            else:
                break
        if len(centres) == len(radii):
            return centres
        radii[:] = [0.9 * r for r in radii]
    raise RuntimeError("cannot place objects")  # unreachable for the layouts of this module


def sample_clutter(rng: np.random.Generator, background: Background, size: int = SIZE,
                   odds: float = CLUTTER_ODDS) -> tuple[Mark, ...]:
    """Up to six muted marks, each a short line or a speck."""
    if rng.random() >= odds:
        return ()
    base = int(np.mean(background.colour_a))
    marks = []
    for _ in range(int(rng.integers(1, 7))):
        kind = "line" if rng.random() < 0.6 else "speck"
        x0, y0 = rng.uniform(2, size - 2, size=2)
        length, theta = rng.uniform(4, 12), rng.uniform(0, np.pi)
        x1, y1 = (x0 + length * np.cos(theta), y0 + length * np.sin(theta)) if kind == "line" else (x0, y0)
        grey = int(np.clip(base + rng.choice((-1, 1)) * rng.uniform(30, 55), 0, 255))
        marks.append(Mark(kind, float(x0), float(y0), float(x1), float(y1), grey))
    return tuple(marks)


def scene_of(rng: np.random.Generator, attributes: list[tuple[str, str, str]], layout: str, *,
             background_kinds: tuple[str, ...] = BACKGROUND_KINDS, clutter: float = CLUTTER_ODDS,
             radius: tuple[float, float] | None = None) -> HardScene:
    """A scene holding objects with the given (shape, colour, pattern), placed as `layout` places them
    (`radius`: the range object sizes are drawn from, when not the layout's own)."""
    lo, hi = radius or RADIUS[layout]
    radii = [float(rng.uniform(lo, hi)) for _ in attributes]
    centres = place(rng, radii, SEPARATION[layout])
    objects = tuple(make_object(rng, *attrs, x, y, r) for attrs, (x, y), r in zip(attributes, centres, radii))
    background = sample_background(rng, background_kinds)
    return HardScene(objects, background, sample_clutter(rng, background, odds=clutter))


def sample_scene(rng: np.random.Generator, *, layout: str | None = None, n_objects: int | None = None,
                 background_kinds: tuple[str, ...] = BACKGROUND_KINDS) -> HardScene:
    """A random picture of the world (what corpora and the teacher's paired stream show)."""
    if layout is None:
        layout = _choice(rng, tuple(LAYOUT_ODDS), tuple(LAYOUT_ODDS.values()))
    if n_objects is None:
        n_objects = {"single": 1, "pair": 2}.get(layout) or int(rng.integers(3, 7))
    attributes = [draw_attributes(rng) for _ in range(n_objects)]
    return scene_of(rng, attributes, layout, background_kinds=background_kinds)


def relation(a: HardObject, b: HardObject) -> str | None:
    """Where `a` is with respect to `b` ("left", "right", "above", "below"), or None when the two are
    not clearly apart along one axis (then no caption states a relation between them)."""
    dx, dy = a.cx - b.cx, a.cy - b.cy
    if abs(dx) >= RELATION_GAP and abs(dy) <= RELATION_SLOPE * abs(dx):
        return "left" if dx < 0 else "right"
    if abs(dy) >= RELATION_GAP and abs(dx) <= RELATION_SLOPE * abs(dy):
        return "above" if dy < 0 else "below"
    return None
