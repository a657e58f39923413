"""Image decoding with explicit failure reasons: a bad image is reported, never replaced."""

from __future__ import annotations

import base64
import binascii
import io
import warnings

from dimefm_pipeline.formats.base import B64
from dimefm_pipeline.formats.files import BadItem

MAX_IMAGE_PIXELS = 16_000 * 16_000  # above this a file is treated as a decompression bomb
# Resizing the short side to the model's size would blow a 10,000 x 1 strip up to 2.24M x 224 pixels.
MAX_ASPECT = 100

__all__ = ["BadItem", "decode_image", "load_bytes", "to_rgb"]


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


def decode_image(payload):
    """Decode to an RGB PIL image (first frame of animations), or raise BadItem with the reason.

    Handles CMYK, palette, alpha, 16-bit and float modes explicitly; truncated files, non-images and
    decompression bombs are refused rather than partially decoded.
    """
    from PIL import Image, UnidentifiedImageError

    data = load_bytes(payload)
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        old_limit = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS
        try:
            img = Image.open(io.BytesIO(data))
            img.seek(0)
            img.load()
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise BadItem(f"decompression bomb: {exc}") from None
        except UnidentifiedImageError:
            raise BadItem("not an image") from None
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            raise BadItem(f"corrupt or truncated image: {exc}") from None
        finally:
            Image.MAX_IMAGE_PIXELS = old_limit
    w, h = img.size
    if max(w, h) > MAX_ASPECT * max(min(w, h), 1):
        raise BadItem(f"{w} x {h} pixels: an aspect ratio beyond {MAX_ASPECT}:1")
    return to_rgb(img)


def to_rgb(img):
    """Convert any PIL mode to RGB, scaling high-bit-depth data instead of clipping it."""
    import numpy as np
    from PIL import Image

    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        scale = 255.0 / (hi - lo) if hi > lo else 0.0
        img = Image.fromarray(((arr - lo) * scale).astype(np.uint8), "L")
    elif img.mode in ("P", "PA") or "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA"):
        # Composite on white: dropping alpha would expose arbitrary colours under transparent pixels.
        bg = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(bg, img.convert("RGBA"))
    return img.convert("RGB")
