"""Image formats known by name and by their first bytes, and the optional Pillow plugins that decode
the ones Pillow does not (HEIC/HEIF with `pillow-heif`, JPEG XL with `pillow-jxl-plugin`: the
`images` extra).

Every file with an image extension is an item: it is encoded, or recorded with why it is not, and a
format this installation cannot decode is recorded as `unsupported format: NAME`, never skipped.
"""

from __future__ import annotations

import functools
import importlib

# File-name endings of images: items of a folder, the image member of a WebDataset key. Formats that
# Pillow decodes by itself come first; the others are decoded by a plugin or recorded as unsupported.
PILLOW_EXTS = (".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".apng", ".webp", ".bmp", ".dib", ".gif", ".tif", ".tiff",
               ".avif", ".ico", ".cur", ".jp2", ".j2k", ".jpx", ".jpf", ".j2c", ".tga", ".ppm", ".pgm", ".pbm", ".pnm",
               ".pcx", ".qoi", ".dds", ".psd", ".sgi", ".rgb", ".ras", ".xbm", ".icns", ".blp", ".ftex", ".im", ".msp")
OTHER_EXTS = (".heic", ".heif", ".hif", ".jxl", ".svg", ".svgz", ".eps", ".exr", ".hdr", ".dng", ".cr2", ".cr3", ".nef",
              ".arw", ".orf", ".rw2", ".raf", ".raw", ".pef", ".srw")
IMAGE_EXTS = PILLOW_EXTS + OTHER_EXTS

PLUGINS = {"heic": "pillow_heif", "jxl": "pillow_jxl"}  # format -> the module that adds it to Pillow
EXTRA_HINT = "install the images extra: pip install 'dimefm[images]'"

_HEIF_BRANDS = {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1"}
_VIDEO_BRANDS = {b"isom", b"iso2", b"mp41", b"mp42", b"qt  ", b"M4V ", b"avc1", b"3gp4", b"3gp5"}
_MAGIC = (  # (first bytes, format)
    (b"\x00\x00\x00\x0cJXL \r\n\x87\n", "jxl"), (b"\xff\x0a", "jxl"),
    (b"\x00\x00\x00\x0cjP  \r\n\x87\n", "jpeg2000"), (b"\xff\x4f\xff\x51", "jpeg2000"),
    (b"\x76\x2f\x31\x01", "exr"), (b"#?RADIANCE", "hdr"), (b"#?RGBE", "hdr"), (b"%PDF", "pdf"), (b"%!PS", "eps"),
    (b"\xc5\xd0\xd3\xc6", "eps"), (b"8BPS", "psd"), (b"\x00\x00\x01\x00", "ico"), (b"II*\x00\x10\x00\x00\x00CR", "cr2"),
    (b"FUJIFILMCCD-RAW", "raf"), (b"\x1f\x8b", "gzip"), (b"PK\x03\x04", "zip"), (b"RIFF", "riff"),
)


@functools.cache
def register_plugins() -> frozenset:
    """Register the optional decoders that are installed (once per process); their formats."""
    found = set()
    for kind, module in PLUGINS.items():
        try:
            mod = importlib.import_module(module)
        except ImportError:
            continue
        if kind == "heic":
            mod.register_heif_opener()
        found.add(kind)
    return frozenset(found)


def sniff(data: bytes) -> str | None:
    """The format of an image file Pillow could not identify, from its first bytes (None: unknown)."""
    head = bytes(data[:64])
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in _HEIF_BRANDS:
            return "heic"
        if brand in (b"avif", b"avis"):
            return "avif"
        if brand == b"crx ":
            return "cr3"
        return "video" if brand in _VIDEO_BRANDS else None
    for magic, kind in _MAGIC:
        if head.startswith(magic):
            return kind
    text = bytes(data[:1024]).lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if text.startswith(b"<svg") or (text.startswith((b"<?xml", b"<!doctype svg")) and b"<svg" in text):
        return "svg"
    return None


def unsupported(kind: str) -> str:
    """The recorded reason for an image of format `kind` that this installation does not decode."""
    if kind in PLUGINS and kind not in register_plugins():
        return f"unsupported format: {kind} ({EXTRA_HINT})"
    return f"unsupported format: {kind}"
