"""Pseudo-pair mining: faiss (exact flat and IVF) against torch matmul + topk, on the same data.

    .venv/bin/python benchmarks/bench_mining.py --images 50000 --texts 200000 --dim 256 --k 8

Embeddings are synthetic L2-normalised fp16 rows (the cache format): isotropic by default (no
structure at all, the worst case for IVF), or drawn around `--clusters` random centres with
`--spread` noise (clustered, closer to real teacher embeddings).
Recall is the share of the exact top-k that a method returns, against faiss flat.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from dimefm_pipeline.mining import build_text_index, default_nlist, default_nprobe, iter_mine_topk, mine_topk_torch


def synthetic(n: int, dim: int, *, clusters: int, spread: float, rng: np.random.Generator, centres) -> np.ndarray:
    if clusters:
        x = centres[rng.integers(0, clusters, size=n)] + spread * rng.standard_normal((n, dim), dtype=np.float32)
    else:
        x = rng.standard_normal((n, dim), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float16)


def timed_index(texts, **options):
    t0 = time.perf_counter()
    index = build_text_index(texts, **options)
    return index, time.perf_counter() - t0


def timed_search(images, index, k, *, batch_size):
    t0 = time.perf_counter()
    parts = list(iter_mine_topk(images, index, k, batch_size=batch_size))
    return np.concatenate([p[2] for p in parts]), time.perf_counter() - t0


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    hits = sum(len(np.intersect1d(a, b)) for a, b in zip(found, truth))
    return hits / truth.size


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=50_000)
    p.add_argument("--texts", type=int, default=200_000)
    p.add_argument("--dim", type=int, default=256)
    p.add_argument("--k", type=int, default=8)
    p.add_argument("--clusters", type=int, default=0, help="0: isotropic rows; C: rows around C random centres")
    p.add_argument("--spread", type=float, default=1.0, help="noise around a centre, relative to the centres' scale")
    p.add_argument("--nlist", type=int, default=None, help="IVF lists (default: dimefm's default for the corpus)")
    p.add_argument("--nprobe", type=int, nargs="+", default=None, help="IVF lists probed, one run each (default: dimefm's default)")
    p.add_argument("--batch-size", type=int, default=65536, help="images per faiss search call")
    p.add_argument("--torch-device", default=None, help="device for the torch baseline (default: cuda if present)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()

    rng = np.random.default_rng(args.seed)
    centres = rng.standard_normal((args.clusters, args.dim), dtype=np.float32) if args.clusters else None
    images = synthetic(args.images, args.dim, clusters=args.clusters, spread=args.spread, rng=rng, centres=centres)
    texts = synthetic(args.texts, args.dim, clusters=args.clusters, spread=args.spread, rng=rng, centres=centres)
    nlist = args.nlist or default_nlist(args.texts)
    nprobes = args.nprobe or [default_nprobe(nlist)]

    import faiss

    gpu = faiss.get_num_gpus() > 0
    console = Console(width=130)
    console.print(
        f"{args.images} images x {args.texts} sentences x {args.dim}-d fp16, k={args.k}, "
        f"clusters={args.clusters} spread={args.spread}; faiss {faiss.__version__} ({'GPU' if gpu else 'CPU'}), torch {torch.__version__}, "
        f"{os.cpu_count()} CPUs ({platform.processor() or platform.machine()}), torch threads {torch.get_num_threads()}, load average {os.getloadavg()[0]:.2f}"
    )

    rows = []
    index, build = timed_index(texts, exact_threshold=args.texts, batch_size=args.batch_size)
    truth, search = timed_search(images, index, args.k, batch_size=args.batch_size)
    rows.append(("faiss IndexFlatIP (exact)", build, search, 1.0))
    # one IVF index, searched at each nprobe (its build time is shown on every row)
    index, build = timed_index(texts, exact_threshold=0, nlist=nlist, nprobe=nprobes[0], batch_size=args.batch_size)
    for nprobe in nprobes:
        index.nprobe = nprobe
        found, search = timed_search(images, index, args.k, batch_size=args.batch_size)
        rows.append((f"faiss IndexIVFFlat nlist={nlist} nprobe={nprobe}", build, search, recall(found, truth)))
    t0 = time.perf_counter()
    _, found = mine_topk_torch(images, texts, args.k, device=args.torch_device)
    rows.append((f"torch matmul+topk ({args.torch_device or ('cuda' if torch.cuda.is_available() else 'cpu')})",
                 0.0, time.perf_counter() - t0, recall(found, truth)))

    table = Table(title="Pseudo-pair mining")
    for col in ("method", "index build s", "search s", "total s", "images/s", f"recall@{args.k}"):
        table.add_column(col, justify="left" if col == "method" else "right")
    for name, b, s, r in rows:
        table.add_row(name, f"{b:.2f}", f"{s:.2f}", f"{b + s:.2f}", f"{args.images / (b + s):,.0f}", f"{r:.4f}")
    console.print(table)


if __name__ == "__main__":
    main()
