"""Drawing hard-world scenes: anti-aliased shapes with fill patterns, clutter, and test-time shifts.

A picture is drawn at twice its side and box-filtered down, so a hexagon's corners and a stripe's
edges survive at 64 px. Rendering is a pure function of (scene, style, seed).
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, replace

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from dimefm_pipeline.world.hard.scene import ROUND, HardObject, HardScene
from dimefm_pipeline.world.render import paint_background

SUPER = 2  # drawing scale before the box filter
OUTLINE_RGB = (28, 28, 28)
PAPER_RGB = (246, 244, 238)


@dataclass(frozen=True)
class HardStyle:
    """How to draw a scene; the default is the training distribution, the others are test-time shifts."""

    outline: float = 0.0  # dark contour around every object, px (clip-art style)
    paper: bool = False  # plain off-white paper instead of the scene's background and clutter
    blur: float = 0.0  # Gaussian blur radius, px
    noise: float = 0.0  # std of additive pixel noise (0-255), after the blur
    jpeg: int = 0  # JPEG quality the picture is passed through (0: none)
    zoom: float = 1.0  # the scene scaled about the canvas centre (objects and distances)
    turn: float = 0.0  # every non-round object turned a further turn/2 to turn degrees, either way


STANDARD = HardStyle()


def _regular(n: int, radius: float = 1.0, phase: float = -math.pi / 2) -> list[tuple[float, float]]:
    return [(radius * math.cos(phase + 2 * math.pi * k / n), radius * math.sin(phase + 2 * math.pi * k / n))
            for k in range(n)]


def _star(points: int, inner: float) -> list[tuple[float, float]]:
    outer, inside = _regular(points, 1.0), _regular(points, inner, -math.pi / 2 + math.pi / points)
    return [p for pair in zip(outer, inside) for p in pair]


def _heart(n: int = 28) -> list[tuple[float, float]]:
    pts = []
    for k in range(n):
        t = 2 * math.pi * k / n
        x = 16 * math.sin(t) ** 3
        y = 13 * math.cos(t) - 5 * math.cos(2 * t) - 2 * math.cos(3 * t) - math.cos(4 * t)
        pts.append((x / 17.0, -y / 17.0 - 0.1))
    return pts


def _arc(n: int, start: float, stop: float, r: float = 1.0, dx: float = 0.0, dy: float = 0.0):
    return [(dx + r * math.cos(start + (stop - start) * k / n), dy + r * math.sin(start + (stop - start) * k / n))
            for k in range(n + 1)]


# Unit polygons (circumscribed radius about 1), point up before rotation; circle and ring are ellipses.
POLYGONS = {
    "triangle": [(x, y + 0.15) for x, y in _regular(3, 1.05)],
    "square": [(-0.72, -0.72), (0.72, -0.72), (0.72, 0.72), (-0.72, 0.72)],
    "pentagon": _regular(5, 0.95),
    "hexagon": _regular(6, 0.95, 0.0),
    "octagon": _regular(8, 0.95, math.pi / 8),
    "star": _star(5, 0.45),
    "hexagram": _star(6, 0.58),
    "cross": [(-0.3, -1), (0.3, -1), (0.3, -0.3), (1, -0.3), (1, 0.3), (0.3, 0.3), (0.3, 1), (-0.3, 1), (-0.3, 0.3),
              (-1, 0.3), (-1, -0.3), (-0.3, -0.3)],
    "diamond": [(0.0, -1.0), (0.66, 0.0), (0.0, 1.0), (-0.66, 0.0)],
    "semicircle": _arc(16, math.pi, 2 * math.pi, 1.0, 0.0, 0.4),
    "heart": _heart(),
    "crescent": _arc(16, 0.5 * math.pi, 1.5 * math.pi) + _arc(16, 1.3 * math.pi, 0.7 * math.pi, 0.78, 0.42),
    "arrow": [(-1, -0.25), (0.2, -0.25), (0.2, -0.65), (1, 0), (0.2, 0.65), (0.2, 0.25), (-1, 0.25)],
    "trapezoid": [(-0.45, -0.6), (0.45, -0.6), (0.9, 0.6), (-0.9, 0.6)],
}


def _mask(obj: HardObject, side: int, scale: float) -> Image.Image:
    """The object's silhouette on a canvas of `side` px (drawing scale `scale` px per scene px)."""
    m = Image.new("L", (side, side), 0)
    d = ImageDraw.Draw(m)
    cx, cy, r = obj.cx * scale, obj.cy * scale, obj.radius * scale
    if obj.shape in ROUND:
        d.ellipse((cx - r, cy - r, cx + r, cy + r), fill=255)
        if obj.shape == "ring":
            inner = 0.55 * r
            d.ellipse((cx - inner, cy - inner, cx + inner, cy + inner), fill=0)
        return m
    c, s = math.cos(math.radians(obj.angle)), math.sin(math.radians(obj.angle))
    d.polygon([(cx + r * (x * c - y * s), cy + r * (x * s + y * c)) for x, y in POLYGONS[obj.shape]], fill=255)
    return m


def _fill(obj: HardObject, box: tuple[int, int, int, int], scale: float) -> np.ndarray:
    """The object's fill over the canvas box (x0, y0, x1, y1) (HxWx3 float): its colour, or its pattern
    of colour and a pale tint, laid out in the object's own frame so patterns turn with it."""
    x0, y0, x1, y1 = box
    rgb = np.asarray(obj.rgb, dtype=np.float32)
    if obj.pattern == "solid":
        return np.broadcast_to(rgb, (y1 - y0, x1 - x0, 3))
    pale = 0.4 * rgb + 0.6 * 255.0
    x = (np.arange(x0, x1, dtype=np.float32) + 0.5)[None, :] / scale - obj.cx
    y = (np.arange(y0, y1, dtype=np.float32) + 0.5)[:, None] / scale - obj.cy
    a = math.radians(obj.angle)
    u, v = x * math.cos(a) + y * math.sin(a), -x * math.sin(a) + y * math.cos(a)
    if obj.pattern == "striped":
        on = np.floor(v / 2.0) % 2 == 0
    elif obj.pattern == "dotted":
        on = (np.mod(u, 4.0) - 2.0) ** 2 + (np.mod(v, 4.0) - 2.0) ** 2 <= 1.3 ** 2
    else:  # checked
        on = (np.floor(u / 3.0) + np.floor(v / 3.0)) % 2 == 0
    return np.where(on[..., None], rgb, pale)


def _box(obj: HardObject, side: int, scale: float, pad: float) -> tuple[int, int, int, int]:
    """The canvas pixels an object (with `pad` px of outline) can touch."""
    reach = (obj.radius * 1.1 + pad) * scale + 2
    lo = lambda c: max(0, int(math.floor(c * scale - reach)))  # noqa: E731
    hi = lambda c: min(side, int(math.ceil(c * scale + reach)))  # noqa: E731
    return lo(obj.cx), lo(obj.cy), hi(obj.cx), hi(obj.cy)


def _turned(scene: HardScene, style: HardStyle, rng: np.random.Generator | None) -> HardScene:
    if style.zoom == 1.0 and not style.turn:
        return scene
    half = scene.size / 2
    objects = []
    for o in scene.objects:
        angle = o.angle
        if style.turn and o.shape not in ROUND:
            angle += float(rng.uniform(style.turn / 2, style.turn) * rng.choice((-1, 1)))
        objects.append(replace(o, cx=half + (o.cx - half) * style.zoom, cy=half + (o.cy - half) * style.zoom,
                               radius=o.radius * style.zoom, angle=angle))
    return replace(scene, objects=tuple(objects))


def render(scene: HardScene, style: HardStyle = STANDARD, seed: int = 0) -> np.ndarray:
    """Draw `scene` as an HxWx3 uint8 array; `seed` drives the random parts of `style`."""
    rng = np.random.default_rng([int(seed), 11])
    scene = _turned(scene, style, rng)
    side = scene.size * SUPER
    if style.paper:
        canvas = np.broadcast_to(np.asarray(PAPER_RGB, np.float32), (side, side, 3)).copy()
    else:
        canvas = paint_background(scene.background, scene.size).repeat(SUPER, 0).repeat(SUPER, 1).astype(np.float32)
        if scene.clutter:
            layer = Image.fromarray(canvas.astype(np.uint8))
            d = ImageDraw.Draw(layer)
            for mk in scene.clutter:
                g = (mk.grey,) * 3
                if mk.kind == "line":
                    d.line([(mk.x0 * SUPER, mk.y0 * SUPER), (mk.x1 * SUPER, mk.y1 * SUPER)], fill=g, width=SUPER)
                else:
                    d.ellipse((SUPER * (mk.x0 - 1.2), SUPER * (mk.y0 - 1.2), SUPER * (mk.x0 + 1.2),
                               SUPER * (mk.y0 + 1.2)), fill=g)
            canvas = np.asarray(layer, dtype=np.float32)
    for obj in scene.objects:
        x0, y0, x1, y1 = box = _box(obj, side, SUPER, style.outline)
        if x1 <= x0 or y1 <= y0:
            continue
        mask = _mask(obj, side, SUPER).crop(box)
        part = canvas[y0:y1, x0:x1]
        if style.outline:
            ring = np.asarray(mask.filter(ImageFilter.MaxFilter(2 * round(style.outline * SUPER / 2) + 1)),
                              np.float32)[..., None] / 255.0
            part = part * (1 - ring) + np.asarray(OUTLINE_RGB, np.float32) * ring
        alpha = np.asarray(mask, np.float32)[..., None] / 255.0
        canvas[y0:y1, x0:x1] = part * (1 - alpha) + _fill(obj, box, SUPER) * alpha
    img = Image.fromarray(np.clip(np.round(canvas), 0, 255).astype(np.uint8)).resize(
        (scene.size, scene.size), Image.BOX)
    if style.blur:
        img = img.filter(ImageFilter.GaussianBlur(style.blur))
    out = np.asarray(img)
    if style.noise:
        out = np.clip(out.astype(np.float32) + rng.normal(0.0, style.noise, size=out.shape), 0, 255).astype(np.uint8)
    if style.jpeg:
        buf = io.BytesIO()
        Image.fromarray(out).save(buf, format="JPEG", quality=style.jpeg)
        out = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
    return out
