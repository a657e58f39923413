"""The worst single inputs stage one can meet: what each costs in extra memory and time.

    .venv/bin/python benchmarks/bench_worst_inputs.py [--only NAME ...] [--keep DIR]

Each input is built in a temporary folder (the big ones sparse or compressed, so they cost little
disk) and then run in a fresh process exactly as stage one reads it: the source is resolved and
planned (`formats.planner`), each unit's read blocks go through their format's reader with the
default limits (`--max-image-bytes` 48 MiB, `--max-image-pixels` 32 MP), under the accounting check;
an image that is read is decoded (`formats.images.decode_image`) and put through CLIP's preprocessing
(bicubic resize to 224, centre crop, normalise); a sentence through the cut (`base.bounded_text`) and
open_clip's tokenizer, as the truncation count does. Extra memory is the process's peak resident
set (`VmHWM`, reset through `/proc/self/clear_refs` after the imports) above what it held then; time
is the wall time of the reading alone.
The teacher's forward pass is left out: it costs the same for every input.
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import os
import struct
import subprocess
import sys
import tarfile
import tempfile
import zlib
from pathlib import Path

CHILD = r"""
import json, sys, time
from dimefm_pipeline.formats import format_named, plan_source, resolve_source
from dimefm_pipeline.formats.accounting import Tally, accounted
from dimefm_pipeline.formats.base import Limits, Listing, bounded_text
from dimefm_pipeline.formats.images import decode_image
from dimefm_pipeline.formats.files import BadItem
import open_clip
from torchvision import transforms as T
modality, source = sys.argv[1], sys.argv[2]
tok = open_clip.get_tokenizer("ViT-B-32")
pre = T.Compose([T.Resize(224, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(224), T.ToTensor(),
                 T.Normalize((0.48, 0.46, 0.41), (0.27, 0.26, 0.28))])
tok(["warm up"]); pre(__import__("PIL.Image").Image.new("RGB", (8, 8)))
def status(field):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field))
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # the peak (VmHWM) starts again from what the process holds now
base = status("VmRSS:")
t0 = time.perf_counter()
outcomes = {}
spec = resolve_source(source, modality)
plan = plan_source(spec, 1, 65536)
for _, why in plan.problems:
    outcomes[why] = outcomes.get(why, 0) + 1
fmt = format_named(spec.fmt)
for unit in plan.units:
    if modality == "image":
        for block in fmt.blocks(unit, 64):
            for rec in accounted(fmt.image_records(unit, block, Limits()), "bench", Tally()):
                why = rec.error
                if why is None:
                    try:
                        pre(decode_image(rec.data, Limits().max_pixels))
                        why = "cached"
                    except BadItem as exc:
                        why = str(exc)
                outcomes[why] = outcomes.get(why, 0) + 1
    else:
        for rec in accounted(fmt.text_records(unit), "bench", Tally(), several=True):
            why = rec.error
            if why is None:
                text, cut = bounded_text(rec.text)
                tok([text]); tok.encode(text)
                why = "cached (cut)" if cut else "cached"
            outcomes[why] = outcomes.get(why, 0) + 1
seconds = time.perf_counter() - t0
extra = (status("VmHWM:") - base) / 1024
print(json.dumps({"extra_mb": extra, "seconds": seconds, "outcomes": outcomes}))
"""


def _png_header(width: int, height: int) -> bytes:
    """A PNG that is only a header claiming width x height pixels (no pixel data)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)) + chunk(b"IEND", b"")


def _at_limit(folder: Path, name: str, mode: str, fmt: str) -> str:
    """An image just under the default pixel limit (5,650 x 5,650 = 31.9 MP) in a mode that must be
    converted, its file as close to --max-image-bytes as noise in part of its rows makes it."""
    import numpy as np
    from PIL import Image

    side = 5650
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    bands = {"RGBA": 4, "I;16": 2, "P": 1}.get(mode, 3)
    noisy = min(side, int(side * 47e6 / (side * side * bands)))  # rows of noise: a file of about 47 MB
    if mode == "I;16":
        arr = np.zeros((side, side), np.uint16)
        arr[:noisy] = rng.integers(0, 65535, (noisy, side), dtype=np.uint16)
        img = Image.fromarray(arr)
    else:
        arr = np.full((side, side, 4 if mode == "RGBA" else 3), 128, np.uint8)
        arr[:noisy] = rng.integers(0, 255, (noisy, side, arr.shape[2]), dtype=np.uint8)
        img = Image.fromarray(arr, "RGBA" if mode == "RGBA" else "RGB")
        if mode == "P":
            img = img.quantize(256)
            img.info["transparency"] = 0
        elif mode != "RGBA":
            img = img.convert(mode)
    del arr
    img.save(folder / name, format=fmt, **({"quality": 95} if fmt == "JPEG" else {"compress_level": 1}))
    return str(folder)


def _gz_tar(path: Path, members: list[tuple[str, int]]) -> str:
    """A gzip-compressed tar of members of zeros (name, size), written streaming."""
    with gzip.open(path, "wb", compresslevel=1) as gz, tarfile.open(fileobj=gz, mode="w|") as tf:
        for name, size in members:
            info = tarfile.TarInfo(name)
            info.size = size
            tf.addfile(info, _Zeros(size))
    return str(path)


class _Zeros(io.RawIOBase):
    def __init__(self, n):
        self.n = n

    def readinto(self, b):
        k = min(len(b), self.n)
        b[:k] = bytes(k)
        self.n -= k
        return k


def _sparse(path: Path, size: int, head: bytes = b"") -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.write(head)
        f.truncate(size)
    return str(path)


def _tar_claiming(path: Path, size: int) -> str:
    """An uncompressed tar whose one member's header says `size` bytes (the file is sparse)."""
    info = tarfile.TarInfo("big.png")
    info.size = size
    with open(path, "wb") as f:
        f.write(info.tobuf(format=tarfile.GNU_FORMAT))
        f.truncate(512 + size + 1024)
    return str(path)


def _parquet(path: Path, column: str, values) -> str:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"key": [str(i) for i in range(len(values))], column: values}), path, row_group_size=1)
    return str(path)


def _dictionary_bomb(path: Path) -> str:
    """A Parquet file whose one 1 MiB value is repeated 10,000 times by its dictionary (10 GB decoded)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    col = pa.DictionaryArray.from_arrays(pa.array(np.zeros(10_000, np.int32)), pa.array([bytes(1 << 20)]))
    pq.write_table(pa.table({"key": [str(i) for i in range(10_000)], "image": col}), path, row_group_size=10_000)
    return str(path)


def _text(path: Path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


def cases(d: Path) -> dict:
    """name -> (modality, builder of the source argument)."""
    import random

    random.seed(0)
    word = "".join(random.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(100_000))
    return {
        "folder: sparse file, 1 TB apparent size": ("image", lambda: str(Path(_sparse(d / "sparse" / "x.jpg", 10**12)).parent)),
        "folder: PNG header of 60000 x 60000": ("image", lambda: _text_folder(d / "hdr", "x.png", _png_header(60000, 60000))),
        "folder: RGBA PNG at the pixel limit": ("image", lambda: _at_limit(d / "rgba", "x.png", "RGBA", "PNG")),
        "folder: CMYK JPEG of noise at the pixel limit": ("image", lambda: _at_limit(d / "cmyk", "x.jpg", "CMYK", "JPEG")),
        "folder: 16-bit grey PNG of noise at the pixel limit": ("image", lambda: _at_limit(d / "i16", "x.png", "I;16", "PNG")),
        "folder: palette PNG with transparency at the pixel limit": ("image", lambda: _at_limit(d / "pal", "x.png", "P", "PNG")),
        "tar: header claiming an 8 GB member": ("image", lambda: _tar_claiming(d / "claim.tar", 8 << 30)),
        "tar.gz: gzip bomb (4 GiB of zeros)": ("image", lambda: _gz_tar(d / "bomb.tar.gz", [("z.png", 4 << 30)])),
        "tar.gz: one 200 MiB member": ("image", lambda: _gz_tar(d / "big.tar.gz", [("z.png", 200 << 20), ("y.png", 10)])),
        "Parquet: one 100 MiB cell": ("image", lambda: _parquet(d / "cell.parquet", "image", [bytes(100 << 20)])),
        "Parquet: one 250 MiB cell (a row group under its bound)": ("image", lambda: _parquet(d / "cell2.parquet", "image", [bytes(250 << 20)])),
        "Parquet: one 900 MiB cell": ("image", lambda: _parquet(d / "cell9.parquet", "image", [bytes(900 << 20)])),
        "Parquet: 1 MiB value repeated 10,000 times by its dictionary": ("image", lambda: _dictionary_bomb(d / "dict.parquet")),
        "TSV: one 1 GB line without a break": ("image", lambda: _sparse(d / "line.tsv", 1 << 30, b"key\t")),
        "txt: one word of 100,000 random letters": ("text", lambda: _text(d / "word.txt", word.encode() + b"\n")),
        "txt: one 1 GB line without a break": ("text", lambda: _sparse(d / "long.txt", 1 << 30, b"fine\nx")),
        "txt (UTF-16): one 1 GB line": ("text", lambda: _sparse(d / "long16.txt", 1 << 30, "\ufefffine\nx".encode("utf-16-le"))),
        "JSONL: 2,000,000 nested brackets": ("text", lambda: _text(d / "deep.jsonl", b'{"text": "fine"}\n{"text": ' + b"[" * 2_000_000 + b"}\n")),
        "JSONL: an integer of 4,000,000 digits": ("text", lambda: _text(d / "int.jsonl", b'{"text": "fine"}\n{"text": "x", "n": ' + b"9" * 4_000_000 + b"}\n")),
        "TSV: one line of 400,000 captions": ("text", lambda: _text(d / "caps.tsv", b'k\t{"captions": [' + b",".join(
            b'"c%d"' % i for i in range(400_000)) + b"]}\n")),
        "Parquet: one 60 MiB sentence": ("text", lambda: _parquet(d / "text.parquet", "text", ["y" * (60 << 20), "fine"])),
        "Parquet: one 100 MiB sentence": ("text", lambda: _parquet(d / "text2.parquet", "text", ["y" * (100 << 20), "fine"])),
    }


def _text_folder(folder: Path, name: str, data: bytes) -> str:
    folder.mkdir(parents=True)
    (folder / name).write_bytes(data)
    return str(folder)


def run(name: str, modality: str, source: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "PYTHONWARNINGS": "ignore"}
    r = subprocess.run([sys.executable, "-c", CHILD, modality, source], capture_output=True, text=True, env=env, timeout=600)
    if r.returncode != 0:
        return {"name": name, "error": r.stderr.strip().splitlines()[-1] if r.stderr.strip() else f"exit {r.returncode}"}
    return {"name": name, **json.loads(r.stdout.strip().splitlines()[-1])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="*", help="Run the cases whose name contains one of these words.")
    ap.add_argument("--keep", help="Build the inputs in this folder and keep them.")
    args = ap.parse_args()
    folder = Path(args.keep or tempfile.mkdtemp(prefix="dimefm-worst-"))
    folder.mkdir(parents=True, exist_ok=True)
    print("| input | extra RSS (MB) | seconds | outcome |\n| --- | ---: | ---: | --- |", flush=True)
    for name, (modality, build) in cases(folder).items():
        if args.only and not any(w.lower() in name.lower() for w in args.only):
            continue
        r = run(name, modality, build())
        if "error" in r:
            print(f"| {name} | - | - | failed: {r['error'][:120]} |", flush=True)
            continue
        what = "; ".join(f"{n:,} x {why[:90]}" for why, n in sorted(r["outcomes"].items(), key=lambda kv: -kv[1]))
        print(f"| {name} | {r['extra_mb']:.0f} | {r['seconds']:.2f} | {what} |", flush=True)
    if not args.keep:
        import shutil

        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
