"""Drawing scenes: numpy backgrounds, PIL polygons, optional distribution-shift effects.

Rendering is a pure function of (scene, style, seed): the same inputs give the same bytes. Shapes
are unit polygons scaled to an object's radius, which makes rotation (the tilt shift) and
outline-only drawing (the sketch shift) one code path for every shape.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from dimefm_pipeline.world.scene import Background, Scene, WorldObject
from dimefm_pipeline.world.vocab import COLOURS


@dataclass(frozen=True)
class RenderStyle:
    """How to draw a scene; the default is the training distribution, the others are test-time shifts."""

    outline_only: bool = False  # draw object contours only ("sketch")
    blur: float = 0.0  # Gaussian blur radius in pixels, applied after drawing
    noise: float = 0.0  # std of additive pixel noise (0-255 scale), applied after blur
    tilt: float = 0.0  # objects rotated by a random angle of tilt/2 to tilt degrees, either way


STANDARD = RenderStyle()


def _regular(n: int, radius: float = 1.0, phase: float = -math.pi / 2) -> list[tuple[float, float]]:
    return [(radius * math.cos(phase + 2 * math.pi * k / n), radius * math.sin(phase + 2 * math.pi * k / n))
            for k in range(n)]


def _star() -> list[tuple[float, float]]:
    outer, inner = _regular(5, 1.0), _regular(5, 0.45, -math.pi / 2 + math.pi / 5)
    return [p for pair in zip(outer, inner) for p in pair]


def _cross(arm: float = 0.32) -> list[tuple[float, float]]:
    a, b = arm, 1.0
    return [(-a, -b), (a, -b), (a, -a), (b, -a), (b, a), (a, a), (a, b), (-a, b), (-a, a), (-b, a), (-b, -a), (-a, -a)]


def _semicircle(n: int = 14) -> list[tuple[float, float]]:
    # Flat side down, lifted so the half disc sits centred on its anchor.
    return [(math.cos(math.pi + math.pi * k / n), 0.4 + math.sin(math.pi + math.pi * k / n)) for k in range(n + 1)]


# Unit polygons (circumscribed radius about 1); circle and ring are drawn as ellipses.
POLYGONS = {
    "square": [(-0.75, -0.75), (0.75, -0.75), (0.75, 0.75), (-0.75, 0.75)],
    "triangle": [(x, y + 0.15) for x, y in _regular(3, 1.05)],
    "diamond": [(0.0, -1.0), (0.72, 0.0), (0.0, 1.0), (-0.72, 0.0)],
    "star": _star(),
    "cross": _cross(),
    "semicircle": _semicircle(),
}


def paint_background(bg: Background, size: int) -> np.ndarray:
    """The background as an HxWx3 uint8 array."""
    a = np.asarray(bg.colour_a, dtype=np.float32)
    b = np.asarray(bg.colour_b, dtype=np.float32)
    if bg.kind == "solid":
        return np.broadcast_to(a.astype(np.uint8), (size, size, 3)).copy()
    coords = np.arange(size, dtype=np.float32)
    if bg.kind == "gradient":
        t = (coords[None, :] * math.cos(bg.param) + coords[:, None] * math.sin(bg.param)) / size
        t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
        img = a * (1 - t[..., None]) + b * t[..., None]
    elif bg.kind == "noise":
        rng = np.random.default_rng(bg.seed)
        img = a + rng.normal(0.0, bg.param, size=(size, size, 1)).astype(np.float32) * np.ones(3, np.float32)
    elif bg.kind in ("stripes", "checker"):
        period = int(bg.param)
        yy, xx = np.meshgrid(coords.astype(int), coords.astype(int), indexing="ij")
        mask = ((xx + yy) // period) % 2 if bg.kind == "stripes" else (xx // period + yy // period) % 2
        img = np.where(mask[..., None] == 1, b, a)
    else:
        raise ValueError(f"unknown background kind {bg.kind!r}")
    return np.clip(img, 0, 255).astype(np.uint8)


def _draw_object(draw: ImageDraw.ImageDraw, obj: WorldObject, style: RenderStyle, angle: float) -> None:
    colour = COLOURS[obj.colour]
    r, cx, cy = obj.radius, obj.cx, obj.cy
    line = max(1, round(r / 5))
    if obj.shape in ("circle", "ring"):
        box = (cx - r, cy - r, cx + r, cy + r)
        if obj.shape == "ring":
            thick = max(2, round(0.38 * r))
            if style.outline_only:
                draw.ellipse(box, outline=colour, width=line)
                inner = r - thick
                draw.ellipse((cx - inner, cy - inner, cx + inner, cy + inner), outline=colour, width=line)
            else:
                draw.ellipse(box, outline=colour, width=thick)
        elif style.outline_only:
            draw.ellipse(box, outline=colour, width=line)
        else:
            draw.ellipse(box, fill=colour)
        return
    c, s = math.cos(angle), math.sin(angle)
    pts = [(cx + r * (x * c - y * s), cy + r * (x * s + y * c)) for x, y in POLYGONS[obj.shape]]
    if style.outline_only:
        draw.polygon(pts, outline=colour, width=line)
    else:
        draw.polygon(pts, fill=colour)


def render(scene: Scene, style: RenderStyle = STANDARD, seed: int = 0) -> np.ndarray:
    """Draw `scene` as an HxWx3 uint8 array; `seed` drives the random parts of `style` (tilt, noise)."""
    canvas = Image.fromarray(paint_background(scene.background, scene.size))
    draw = ImageDraw.Draw(canvas)
    rng = np.random.default_rng([int(seed), 7]) if (style.tilt or style.noise) else None
    for obj in scene.objects:
        angle = 0.0
        if style.tilt:  # at least half the tilt, so every polygon visibly turns
            angle = math.radians(float(rng.uniform(style.tilt / 2, style.tilt) * rng.choice((-1, 1))))
        _draw_object(draw, obj, style, angle)
    if style.blur:
        canvas = canvas.filter(ImageFilter.GaussianBlur(style.blur))
    img = np.asarray(canvas)
    if style.noise:
        noisy = img.astype(np.float32) + rng.normal(0.0, style.noise, size=img.shape).astype(np.float32)
        img = np.clip(noisy, 0, 255).astype(np.uint8)
    return img
