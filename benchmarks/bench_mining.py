"""Pseudo-pair mining: dimefm's exact blocked search against faiss (exact flat and IVF) and torch
matmul + topk, on the same data; and the exact search on sentence rows too large for the memory
the process is allowed (out of core).

    .venv/bin/python benchmarks/bench_mining.py --images 50000 --texts 200000 --dim 256 --k 8
    .venv/bin/python benchmarks/bench_mining.py --out-of-core --images 4000 --texts 4000000 --dim 768 \
        --memory-limit-gib 2 --scratch /tmp/dimefm-bench/mining

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

from dimefm_pipeline.mine.ivf import build_text_index, default_nlist, default_nprobe, iter_mine_topk
from dimefm_pipeline.mine.search import SentenceBlocks, exact_topk, mine_topk_torch


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


def blocked_exact(images, texts, k, image_block=65536, text_block=262144, dtype=torch.float32):
    """dimefm mine's default engine on the CPU (float32 torch products; dtype None: faiss.knn per block):
    image blocks x sentence blocks, a running top-k."""
    blocks = SentenceBlocks(texts, block=text_block, dtype=dtype)
    found = [exact_topk(images[lo : lo + image_block], blocks, k)[1] for lo in range(0, len(images), image_block)]
    return np.concatenate(found)


def peak_rss_gib() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def enter_memory_cgroup(limit_gib: float) -> str:
    """Put this process in a cgroup (v1) whose memory, page cache included, is capped at `limit_gib`."""
    path = f"/sys/fs/cgroup/memory/dimefm-bench-{os.getpid()}"
    os.makedirs(path, exist_ok=True)
    with open(f"{path}/memory.limit_in_bytes", "w") as f:
        f.write(str(int(limit_gib * 2**30)))
    with open(f"{path}/cgroup.procs", "w") as f:
        f.write(str(os.getpid()))
    return path


def out_of_core(args, console) -> None:
    """Exact mining over memory-mapped sentence rows larger than the memory the process may use."""
    from pathlib import Path

    if args.memory_limit_gib:
        cgroup = enter_memory_cgroup(args.memory_limit_gib)
        console.print(f"memory limit {args.memory_limit_gib} GiB (cgroup {cgroup})")
    scratch = Path(args.scratch)
    scratch.mkdir(parents=True, exist_ok=True)
    path = scratch / f"texts-{args.texts}-{args.dim}.npy"
    rng = np.random.default_rng(args.seed)
    if not path.exists():
        out = np.lib.format.open_memmap(path.with_suffix(".tmp.npy"), mode="w+", dtype=np.float16, shape=(args.texts, args.dim))
        for lo in range(0, args.texts, 262144):
            hi = min(lo + 262144, args.texts)
            out[lo:hi] = synthetic(hi - lo, args.dim, clusters=0, spread=1.0, rng=rng, centres=None)
        out.flush()
        del out
        path.with_suffix(".tmp.npy").rename(path)
    texts = np.load(path, mmap_mode="r")
    images = synthetic(args.images, args.dim, clusters=0, spread=1.0, rng=rng, centres=None)
    flat_gib = args.texts * args.dim * 4 / 2**30
    t0 = time.perf_counter()
    found = blocked_exact(images, texts, args.k, text_block=args.text_block)
    dt = time.perf_counter() - t0
    check = np.random.default_rng(1).choice(args.images, 20, replace=False)  # brute force on a sample of images
    q = images[check].astype(np.float64)
    best_s, best_i = np.full((20, 0), -np.inf), np.zeros((20, 0), np.int64)
    for lo in range(0, args.texts, 262144):  # numpy in float64, one pass over the rows, a running top-k
        sc = np.asarray(texts[lo : lo + 262144], dtype=np.float64) @ q.T
        sc, ids = np.concatenate([best_s, sc.T], 1), np.concatenate([best_i, np.arange(lo, lo + len(sc))[None].repeat(20, 0)], 1)
        top = np.argsort(-sc, axis=1, kind="stable")[:, : args.k]
        best_s, best_i = np.take_along_axis(sc, top, 1), np.take_along_axis(ids, top, 1)
    truth = best_i
    table = Table(title="Exact mining out of core")
    for col in ("sentences x dim", "fp16 rows on disk", "float32 flat index would need", "memory limit", "peak RSS",
                "images", "seconds", "images/s", f"recall@{args.k} (20 images, brute force)"):
        table.add_column(col, justify="right")
    table.add_row(f"{args.texts:,} x {args.dim}", f"{path.stat().st_size / 2**30:.2f} GiB", f"{flat_gib:.2f} GiB",
                  f"{args.memory_limit_gib or '-'} GiB", f"{peak_rss_gib():.2f} GiB", f"{args.images:,}", f"{dt:.1f}",
                  f"{args.images / dt:,.1f}", f"{recall(found[check], np.array(truth)):.4f}")
    console.print(table)
    if args.memory_limit_gib:  # ru_maxrss also counts mapped pages charged to other cgroups (read there first)
        mem = Path(cgroup)
        peak, fails = ((mem / f"memory.{f}").read_text().strip() for f in ("max_usage_in_bytes", "failcnt"))
        console.print(f"cgroup peak (page cache included) {int(peak) / 2**30:.2f} GiB, limit hit {fails} times")


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
    p.add_argument("--threads", type=int, default=None, help="threads for faiss (OpenMP) and torch alike (default: theirs)")
    p.add_argument("--skip-ivf", action="store_true", help="leave the IVF rows out")
    p.add_argument("--skip-torch", action="store_true", help="leave the torch baseline out")
    p.add_argument("--text-block", type=int, default=262144, help="sentences per block of the exact blocked search")
    p.add_argument("--out-of-core", action="store_true", help="only the exact search, on memory-mapped sentence rows")
    p.add_argument("--memory-limit-gib", type=float, default=None, help="--out-of-core: cap this process's memory (cgroup v1, root)")
    p.add_argument("--scratch", default="/tmp/dimefm-bench/mining", help="--out-of-core: where the sentence rows are written")
    args = p.parse_args()
    if args.threads:
        import faiss

        faiss.omp_set_num_threads(args.threads)
        torch.set_num_threads(args.threads)
    if args.out_of_core:
        out_of_core(args, Console(width=200))
        return

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
        f"{os.cpu_count()} CPUs ({platform.processor() or platform.machine()}), torch threads {torch.get_num_threads()}, faiss threads {faiss.omp_get_max_threads()}, load average {os.getloadavg()[0]:.2f}"
    )

    rows = []
    index, build = timed_index(texts, exact_threshold=args.texts, batch_size=args.batch_size)
    truth, search = timed_search(images, index, args.k, batch_size=args.batch_size)
    rows.append(("faiss IndexFlatIP (exact, all sentences in RAM as float32)", build, search, 1.0))
    del index
    for dtype, name in ((torch.float32, "dimefm exact (CPU default): float32 torch products"), (None, "blocked faiss knn")):
        t0 = time.perf_counter()
        found = blocked_exact(images, texts, args.k, text_block=args.text_block, dtype=dtype)
        rows.append((f"{name}, no index ({args.text_block:,}-sentence blocks)", 0.0, time.perf_counter() - t0, recall(found, truth)))
    if not args.skip_ivf:
        # one IVF index, searched at each nprobe (its build time is shown on every row)
        index, build = timed_index(texts, exact_threshold=0, nlist=nlist, nprobe=nprobes[0], batch_size=args.batch_size)
        for nprobe in nprobes:
            index.nprobe = nprobe
            found, search = timed_search(images, index, args.k, batch_size=args.batch_size)
            rows.append((f"faiss IndexIVFFlat nlist={nlist} nprobe={nprobe}", build, search, recall(found, truth)))
    if not args.skip_torch:
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
    console.print(f"peak RSS {peak_rss_gib():.2f} GiB; load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
