"""Memory of a distill run as the cache grows, and of sentence dedup at tens of millions of sentences.

    .venv/bin/python benchmarks/bench_memory.py distill --rows 100000 1000000 --steps 30
    .venv/bin/python benchmarks/bench_memory.py dedup --sentences 10000000

distill: a synthetic cache of N image rows and N sentences is written exactly as stage one writes one
(`cache.UnitWriter`, the manifest's commits), with the world teacher's 128-d embeddings; every image
row points at one of 256 real world images packed in its unit. `dimefm distill` then runs for a fixed
number of steps in a fresh process (world student, teacher's text tower, 2 loader workers), and the
peak resident memory of the training process and of its largest loader worker are read from
`getrusage`, and split by sampling `/proc/PID/status` every 20 ms: private (anonymous) memory, and
pages of the memory-mapped cache files. The second grows with the cache because every random row
read maps the kernel's fault-around window (64 KiB) of page-cache pages into the process; those
pages are clean, shared between processes and ranks, and given back by the kernel under pressure,
so the goal (less than +10% from 100k to 1M rows) is read on private memory.

dedup: the content hashes of N synthetic sentences go through the planner's `SeenHashes` in chunks of
65,536 (as planning a sentence file does), against a Python set of the same hashes.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

console = Console(width=160)
UNIT = 65_536


def build_cache(folder: Path, n: int, seed: int = 0) -> Path:
    """A cache of n image rows and n sentences (reused if present)."""
    from dimefm_pipeline.core import models
    from dimefm_pipeline.store.shards import UnitWriter, read_markers
    from dimefm_pipeline.store.manifest import Manifest, TeacherInfo, catalog, commits, sources
    from dimefm_pipeline.formats.base import Plan, SourceSpec
    from dimefm_pipeline.formats.files import FileEntry, payload_hash
    from dimefm_pipeline.formats.images import centre_box
    from dimefm_pipeline.world.corpus import corpus_image, png_bytes

    cache = folder / "m.duckdb"
    if (folder / ".complete").exists():
        return cache
    folder.mkdir(parents=True, exist_ok=True)
    loaded = models.build(models.resolve_spec("world", None), quiet=True)
    pngs = [png_bytes(corpus_image(seed, i)) for i in range(256)]
    side = corpus_image(seed, 0).shape[0]  # world images are square: view 0 keeps all of it
    rng = np.random.default_rng(seed)
    with Manifest(cache, create=True) as man:
        catalog.check_teacher(man, TeacherInfo.of_model(loaded))
        run = catalog.start_run(man, "bench", "bench_memory", {}, 1)
        for sid, modality in ((1, "image"), (2, "text")):
            spec = SourceSpec(f"/synthetic/{modality}", modality, "parquet" if modality == "image" else "txt", "/synthetic",
                              ("data",), {})
            units = -(-n // UNIT)
            sources.register_source(man, spec, Plan([None] * units, [FileEntry("data", 0, 0)], f"synthetic-{modality}-{n}"), UNIT, run)
            for u in range(units):
                rows = min(UNIT, n - u * UNIT)
                emb = rng.standard_normal((rows, loaded.embed_dim), dtype=np.float32)
                emb = (emb / np.linalg.norm(emb, axis=1, keepdims=True)).astype(np.float16)
                w = UnitWriter(man.cache_dir, sid, u, modality, loaded.embed_dim, UNIT)
                pos = list(range(rows))
                view0 = dict(zip(("view", "crop_x0", "crop_y0", "crop_x1", "crop_y1", "flip"), ([v] * rows for v in (0, *centre_box(side, side)))))
                if modality == "image":
                    offsets = [w.add_packed(p) for p in pngs]
                    pick = [i % len(pngs) for i in pos]
                    w.add(emb, key=[f"{u}-{i}" for i in pos], pos=pos, file=[0] * rows, loc_file=[-1] * rows,
                          offset=[offsets[i] for i in pick], length=[len(pngs[i]) for i in pick],
                          payload_hash=[payload_hash(pngs[i]) for i in pick], **view0)
                else:
                    texts = [f"sentence {u}-{i} about a thing" for i in pos]
                    w.add(emb, key=[str(i + 1) for i in pos], pos=pos, file=[0] * rows, text=texts,
                          truncated=[False] * rows, text_hash=rng.integers(-2**62, 2**62, rows))
                w.finish()
        for path, commit in read_markers(man.cache_dir):
            commits.ingest(man, commit, run)
            path.unlink()
        catalog.refresh_relations(man)
        catalog.end_run(man, run, "complete")
    (folder / ".complete").write_text("")
    return cache


RUN = """
import json, resource, sys, threading, time
from pathlib import Path
from dimefm_pipeline.distill.config import DistillConfig
from dimefm_pipeline.distill.train import distill

def status(pid):
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return {}
    return {l.split(":")[0]: int(l.split()[1]) for l in lines if l.startswith(("RssAnon", "RssFile"))}

peak = {"anon": 0, "file": 0, "worker_anon": 0}
def watch():  # private (anonymous) and mapped-file resident memory, sampled every 20 ms
    while True:
        me = status("self")
        peak["anon"] = max(peak["anon"], me.get("RssAnon", 0))
        peak["file"] = max(peak["file"], me.get("RssFile", 0))
        for task in Path("/proc/self/task").iterdir():
            for child in (task / "children").read_text().split():
                peak["worker_anon"] = max(peak["worker_anon"], status(child).get("RssAnon", 0))
        time.sleep(0.02)
threading.Thread(target=watch, daemon=True).start()
cfg = DistillConfig.from_dict(json.loads(sys.argv[1]))
t0 = time.time()
distill(cfg, progress=False)
time.sleep(0.05)
print(json.dumps({"seconds": time.time() - t0, "self_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                  "worker_kib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, **{f"{k}_kib": v for k, v in peak.items()}}))
"""


def bench_distill(args) -> None:
    scratch = Path(args.scratch)
    table = Table(title=f"Peak memory of dimefm distill ({args.steps} steps of {args.batch} images + {args.batch} sentences, "
                        "2 loader workers)")
    for col in ("image rows", "sentences", "training process peak RSS", "of it private (anonymous)", "of it mapped cache files",
                "largest loader worker peak RSS", "of it private", "seconds"):
        table.add_column(col, justify="right")
    results = []
    for n in args.rows:
        t0 = time.time()
        cache = build_cache(scratch / f"cache-{n}", n)
        console.print(f"cache of {n:,} rows ready ({time.time() - t0:.0f} s)")
        out = scratch / f"run-{n}-{time.time_ns()}"
        cfg = dict(cache=str(cache), out=str(out), student="dimefm-world-student", text_tower="teacher",
                   batch_size=args.batch, text_batch_size=args.batch, steps=args.steps, workers=2, augment="none",
                   precision="bf16", checkpoint_every=10**6, log_every=10)
        r = subprocess.run([sys.executable, "-c", RUN, json.dumps(cfg)], capture_output=True, text=True,
                           env={**os.environ, "PYTHONWARNINGS": "ignore"})
        if r.returncode:
            raise SystemExit(r.stderr[-3000:])
        m = json.loads(r.stdout.strip().splitlines()[-1])
        results.append((n, m))
        mib = lambda key: f"{m[key] / 2**10:,.0f} MiB"
        table.add_row(f"{n:,}", f"{n:,}", mib("self_kib"), mib("anon_kib"), mib("file_kib"), mib("worker_kib"), mib("worker_anon_kib"),
                      f"{m['seconds']:.1f}")
    console.print(table)
    if len(results) > 1:
        (a, ma), (b, mb) = results[0], results[-1]
        grow = lambda key: f"{mb[key] / ma[key] - 1:+.1%}"
        console.print(f"{b:,} rows against {a:,}: training process peak RSS {grow('self_kib')}, private {grow('anon_kib')}; "
                      f"loader worker peak RSS {grow('worker_kib')}, private {grow('worker_anon_kib')}; load {os.getloadavg()[0]:.2f}")


def bench_dedup(args) -> None:
    from dimefm_pipeline.formats.planner import SeenHashes

    def rss_mib() -> float:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

    rng = np.random.default_rng(0)
    n = args.sentences
    # a tenth of the sentences repeat an earlier one, as duplicates do in scraped corpora
    hashes = rng.integers(-2**63, 2**63 - 1, n, dtype=np.int64)
    repeats = rng.random(n) < 0.1
    hashes[repeats] = hashes[rng.integers(0, n, int(repeats.sum()))]
    table = Table(title=f"Exact-duplicate skipping over {n:,} sentence hashes (chunks of {UNIT:,})")
    for col in ("structure", "memory held", "seconds", "kept"):
        table.add_column(col, justify="left" if col == "structure" else "right")
    base = rss_mib()
    t0 = time.time()
    seen = SeenHashes()
    kept = sum(int(seen.keep(hashes[lo : lo + UNIT], np.ones(min(UNIT, n - lo), bool)).sum()) for lo in range(0, n, UNIT))
    table.add_row("SeenHashes: sorted int64 runs", f"{rss_mib() - base:,.0f} MiB", f"{time.time() - t0:.1f}", f"{kept:,}")
    del seen
    base = rss_mib()
    t0 = time.time()
    py: set = set()
    kept_set = 0
    for h in hashes.tolist():
        if h not in py:
            py.add(h)
            kept_set += 1
    table.add_row("Python set of ints (before)", f"{rss_mib() - base:,.0f} MiB", f"{time.time() - t0:.1f}", f"{kept_set:,}")
    console.print(table)
    console.print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10:,.0f} MiB; load {os.getloadavg()[0]:.2f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("part", choices=("distill", "dedup"))
    p.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000])
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--sentences", type=int, default=10_000_000)
    p.add_argument("--scratch", default="/tmp/dimefm-bench/memory")
    args = p.parse_args()
    bench_distill(args) if args.part == "distill" else bench_dedup(args)


if __name__ == "__main__":
    main()
