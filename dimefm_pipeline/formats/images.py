"""From an item's bytes to a model's input: decoding with explicit failure reasons (a bad image is
reported, never replaced), and the cached augmented views: the crops and flips stage one encodes
and stage two replays exactly.

View 0 of every image is the un-augmented image as the teacher's own preprocessing sees it (resize the
short side, centre crop). Views 1..K-1 are drawn from a seeded augmentation (`ViewAugment`): a crop box
in source pixels and a horizontal flip, recorded with the view's embedding row. Either stage builds a
model's input from a view the same way, in the same order (crop in source pixels, resize to the
model's side with bicubic filtering, flip), so at equal resolution the student sees exactly the pixels
the teacher's target came from; at another resolution, the same crop. No colour change is applied by
the built-in augmentations.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dimefm_pipeline.core.errors import DimefmError
from dimefm_pipeline.formats.base import B64, MAX_IMAGE_PIXELS
from dimefm_pipeline.formats.files import BadItem
from dimefm_pipeline.formats.image_kinds import register_plugins, sniff, unsupported

# Resizing the short side to the model's size would blow a 10,000 x 1 strip up to 2.24M x 224 pixels.
MAX_ASPECT = 100
STRIP_PIXELS = 1 << 18  # images in another mode are converted to RGB this many pixels at a time


def load_bytes(payload) -> bytes:
    """The raw file bytes of a payload: bytes, or (B64, text) for base64 text."""
    if payload is None:
        raise BadItem("no image member for this key")
    if isinstance(payload, tuple) and payload[0] == B64:
        try:
            data = base64.b64decode(payload[1], validate=True)
        except (binascii.Error, ValueError) as exc:
            raise BadItem(f"invalid base64: {exc}") from None
    else:
        data = bytes(payload)
    if not data:
        raise BadItem("zero-byte file")
    return data


def decode_image(payload, max_pixels: int | None = MAX_IMAGE_PIXELS):
    """Decode to an RGB PIL image (first frame of animations), or raise BadItem with the reason.

    The pixel count is checked from the header, before any pixel is decoded. Handles CMYK, palette,
    alpha, 16-bit and float modes explicitly; truncated files, non-images and formats this
    installation cannot decode are refused with their reason rather than partially decoded.
    """
    from PIL import Image, UnidentifiedImageError

    data = load_bytes(payload)
    register_plugins()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the pixel check below is ours
        old_limit = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        try:
            img = Image.open(io.BytesIO(data))
            w, h = img.size
            if max_pixels is not None and w * h > max_pixels:
                raise BadItem(f"too many pixels: {w} x {h} = {w * h / 1e6:.1f} MP > --max-image-pixels "
                              f"({max_pixels / 1e6:.1f} MP)")
            img.seek(0)
            img.load()
        except UnidentifiedImageError:
            kind = sniff(data)
            raise BadItem(unsupported(kind) if kind else "not an image") from None
        except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as exc:
            if "not available" in str(exc) or "not supported" in str(exc):  # Pillow built without the decoder
                raise BadItem(unsupported(getattr(img, "format", None) or sniff(data) or "unknown")) from None
            raise BadItem(f"corrupt or truncated image: {exc}") from None
        finally:
            Image.MAX_IMAGE_PIXELS = old_limit
    w, h = img.size
    if max(w, h) > MAX_ASPECT * max(min(w, h), 1):
        raise BadItem(f"{w} x {h} pixels: an aspect ratio beyond {MAX_ASPECT}:1")
    return to_rgb(img)


def to_rgb(img):
    """Convert any PIL mode to RGB, scaling high-bit-depth data instead of clipping it; transparent
    pixels are composited on white. Converted a strip of rows at a time, so the extra memory is the
    RGB result and one strip, whatever the mode."""
    from PIL import Image

    if img.mode == "RGB":
        return img
    lo, hi = img.getextrema() if img.mode in ("I;16", "I;16B", "I;16L", "I", "F") else (0, 0)
    alpha = img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info
    out = Image.new("RGB", img.size)
    rows = max(1, STRIP_PIXELS // max(img.width, 1))
    for y in range(0, img.height, rows):
        box = (0, y, img.width, min(y + rows, img.height))
        out.paste(_strip_to_rgb(img.crop(box), lo, hi, alpha), box[:2])
    return out


def _strip_to_rgb(strip, lo, hi, alpha: bool):
    from PIL import Image

    if strip.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(strip, dtype=np.float32)
        scale = 255.0 / (hi - lo) if hi > lo else 0.0
        strip = Image.fromarray(((arr - lo) * scale).astype(np.uint8), "L")
    if alpha:
        strip = strip.convert("RGBA")  # a palette or a transparency colour to real alpha
        # Composite on white: dropping alpha would expose arbitrary colours under transparent pixels.
        bg = Image.new("RGBA", strip.size, (255, 255, 255, 255))
        strip = Image.alpha_composite(bg, strip)
    return strip.convert("RGB")


# ---------------------------------------------------------------------------------------- cached views
@dataclass(frozen=True)
class ViewAugment:
    """A RandomResizedCrop + horizontal flip, as parameters: crop area share and aspect ratio ranges."""

    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip: float = 0.5

    @classmethod
    def named(cls, spec: str) -> "ViewAugment":
        """`reference` (the paper's crop of 8-100% of the area, flip 0.5), `light` (50-100%, near-square,
        flip 0.5), or a JSON file {"scale": [a, b], "ratio": [a, b], "flip": p}."""
        if spec == "reference":
            return cls()
        if spec == "light":
            return cls((0.5, 1.0), (0.9, 1.1), 0.5)
        path = Path(spec)
        if not path.is_file():
            raise DimefmError(f"--view-augment must be reference, light or a JSON file, not {spec!r}")
        try:
            d = json.loads(path.read_text())
            aug = cls(tuple(d.get("scale", (0.08, 1.0))), tuple(d.get("ratio", (3 / 4, 4 / 3))), float(d.get("flip", 0.5)))
        except (ValueError, TypeError) as exc:
            raise DimefmError(f"{spec}: not a view augmentation ({exc})") from None
        if not (0 < aug.scale[0] <= aug.scale[1] <= 1 and 0 < aug.ratio[0] <= aug.ratio[1] and 0 <= aug.flip <= 1):
            raise DimefmError(f"{spec}: scale must lie in (0, 1], ratio be positive and flip a probability")
        return aug


def view_rng(seed: int, source_id: int, unit: int, pos: int, view: int) -> np.random.Generator:
    """The generator of one view's parameters: the same whoever encodes the item, whenever."""
    return np.random.default_rng([seed, source_id, unit, pos, view])


def sample_view(rng: np.random.Generator, width: int, height: int, aug: ViewAugment) -> tuple[int, int, int, int, int]:
    """(x0, y0, x1, y1, flip) of a random resized crop in source pixels (torchvision's algorithm:
    ten tries at a random area share and log-uniform aspect ratio, else the centre crop that fits)."""
    area = width * height
    log_r = (math.log(aug.ratio[0]), math.log(aug.ratio[1]))
    flip = int(rng.random() < aug.flip)
    for _ in range(10):
        target = area * rng.uniform(*aug.scale)
        ratio = math.exp(rng.uniform(*log_r))
        w, h = int(round(math.sqrt(target * ratio))), int(round(math.sqrt(target / ratio)))
        if 0 < w <= width and 0 < h <= height:
            x0, y0 = int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1))
            return x0, y0, x0 + w, y0 + h, flip
    in_ratio = width / height
    if in_ratio < aug.ratio[0]:
        w, h = width, int(round(width / aug.ratio[0]))
    elif in_ratio > aug.ratio[1]:
        w, h = int(round(height * aug.ratio[1])), height
    else:
        w, h = width, height
    x0, y0 = (width - w) // 2, (height - h) // 2
    return x0, y0, x0 + w, y0 + h, flip


def header_size(payload) -> tuple[int, int]:
    """An image's (width, height) from its header alone (no pixels decoded), or BadItem."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(load_bytes(payload))) as img:
            return img.size
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as exc:
        raise BadItem(f"not an image: {exc}") from None


def centre_box(width: int, height: int) -> tuple[int, int, int, int, int]:
    """View 0's record: the centre square a resize-then-centre-crop keeps, no flip."""
    side = min(width, height)
    x0, y0 = (width - side) // 2, (height - side) // 2
    return x0, y0, x0 + side, y0 + side, 0


def apply_view(img, box: tuple[int, int, int, int], flip: int, size: int):
    """The view as a `size` x `size` PIL image: crop in source pixels, bicubic resize, then flip."""
    from PIL import Image

    out = img.crop(tuple(int(v) for v in box)).resize((size, size), Image.BICUBIC)
    return out.transpose(Image.FLIP_LEFT_RIGHT) if flip else out


def view_transform(size: int, mean, std):
    """PIL view image -> normalised tensor (the part after `apply_view`)."""
    from torchvision import transforms as T

    return T.Compose([T.ToTensor(), T.Normalize(mean, std)])


def pick_views(images: np.ndarray, k: int, seed: int, epoch: int) -> np.ndarray:
    """The cached view each image trains on this epoch: seeded by (seed, epoch, image), so it is the
    same on every rank, worker and resume (a splitmix64 hash, computed per batch, no table)."""
    if k == 1:
        return np.zeros(len(images), dtype=np.int64)
    x = (np.asarray(images, dtype=np.uint64) + np.uint64((seed * 1_000_003 + epoch) * 0x9E3779B97F4A7C15 % 2**64)) & np.uint64(2**64 - 1)
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        x = x ^ (x >> np.uint64(31))
    return (x % np.uint64(k)).astype(np.int64)
