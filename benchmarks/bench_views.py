"""What cached augmented views cost in stage one: encode time and cache bytes for K = 1, 4, 8.

    .venv/bin/python benchmarks/bench_views.py --images 2000 --views 1 4 8
    .venv/bin/python benchmarks/bench_views.py --images 500 --views 1 4 8 --teacher ViT-B-32 --pretrained random

A world image corpus (`dimefm world images`, WebDataset tars, 1,000 images per shard) is written once;
then `dimefm encode images --views K` runs on it into a fresh cache for every K, in a fresh process,
with 2 loader workers. Reported per K: the wall time of the whole command (teacher load and manifest
included), image rows per second of wall time, and the bytes of every file kind in the cache (`.npy`
embeddings, Parquet copies, `.loc.npy` locators), per image and in total. The world teacher is a small
ModifiedResNet, so its time is mostly decoding and cropping; an open_clip teacher (`--teacher`) shows
the case where the teacher's forward dominates, as at real scale.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

console = Console(width=160)
KINDS = {"embeddings .npy": ".npy", "Parquet": ".parquet", "locators .loc.npy": ".loc.npy"}


def dimefm(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "dimefm_pipeline", *args], check=True, stdout=subprocess.DEVNULL)


def cache_bytes(folder: Path) -> dict[str, int]:
    sizes = dict.fromkeys(KINDS, 0)
    for path in folder.rglob("*"):
        if path.is_file():
            kind = next((k for k, ext in sorted(KINDS.items(), key=lambda kv: -len(kv[1])) if path.name.endswith(ext)), None)
            if kind:
                sizes[kind] += path.stat().st_size
    return sizes


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=2000)
    p.add_argument("--views", type=int, nargs="+", default=[1, 4, 8])
    p.add_argument("--teacher", default="world", help="`world` or an open_clip architecture")
    p.add_argument("--pretrained", default=None, help="weights of an open_clip teacher (`random` for timing)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--scratch", default="/tmp/dimefm-bench/views")
    args = p.parse_args()

    scratch = Path(args.scratch)
    corpus = scratch / f"world-{args.images}"
    if not corpus.exists():
        dimefm("world", "images", str(corpus), "--n", str(args.images), "--format", "webdataset")
    teacher = ["--teacher", args.teacher] + (["--pretrained", args.pretrained] if args.pretrained else [])
    rows = []
    for k in args.views:
        cache = scratch / f"cache-{args.teacher}-{args.images}-k{k}"
        shutil.rmtree(cache, ignore_errors=True)
        cache.mkdir(parents=True)
        load_before = os.getloadavg()[0]
        t0 = time.perf_counter()
        dimefm("encode", "images", str(corpus / "*.tar"), "--cache", str(cache / "manifest.duckdb"), *teacher,
               "--views", str(k), "--batch-size", str(args.batch_size), "--workers", str(args.workers))
        wall = time.perf_counter() - t0
        rows.append((k, wall, cache_bytes(cache), load_before, os.getloadavg()[0]))
        console.print(f"K={k}: {wall:.1f} s", highlight=False)

    base_wall = rows[0][1]
    table = Table(title=f"encode images --views K: {args.images:,} world images, teacher {args.teacher}, "
                        f"{args.workers} workers, {os.cpu_count()} CPUs")
    for col in ("K", "image rows", "wall s", "rows/s", "time vs first", *[f"{k} B/image" for k in KINDS], "cache MB", "load before/after"):
        table.add_column(col, justify="right")
    for k, wall, sizes, lb, la in rows:
        total = sum(sizes.values())
        table.add_row(str(k), f"{k * args.images:,}", f"{wall:.1f}", f"{k * args.images / wall:,.0f}", f"{wall / base_wall:.2f}x",
                      *[f"{sizes[kind] / args.images:,.0f}" for kind in KINDS], f"{total / 1e6:,.1f}", f"{lb:.2f}/{la:.2f}")
    console.print(table)


if __name__ == "__main__":
    main()
