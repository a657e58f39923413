"""Stage one throughput and cache read speed.

    .venv/bin/python benchmarks/bench_encode.py --part encode --images 256 --batch-size 32 --workers 2 --repeats 3
    .venv/bin/python benchmarks/bench_encode.py --part reads --rows 1000000 --dim 768

encode: `encode()` end to end over a folder of generated images (decode, preprocess, teacher
forward, fp16 shards, manifest) against the teacher's forward alone on pre-made tensors at the same
batch size. Stage one is doing its job when the ratio is close to 1: the loader keeps the teacher
busy. "steady" times the encode loop from the first forward to the last (see `ForwardClock`), so
the call's set-up (manifest, building the teacher) is left out: the rate a long run settles at.
On a GPU box the target is a ratio >= 0.9; there it depends on enough loader workers actually
starting (`encode()` starts at most one per unit: lower `--shard-size` for a small folder).

reads: random batches of row indices from a cache of `--rows` x `--dim` fp16 rows, written in
shards exactly as stage one writes them (`UnitWriter`: `.npy` + Parquet), read by memory mapping
(`EmbeddingTable.take`, the stage-two hot path), from the Parquet shards, and from the reference's
TSV layout (`key<TAB>base64(float32)` per line plus a byte-offset index), against copying the same
rows out of an in-RAM array. The files are built once under `--scratch` and reused; every file is
read once before timing, so all layouts are measured with a warm page cache. Every method gets the
same batches of rows in ascending order (stage two asks for a batch's rows that way: a batch is a
set); one more row times `EmbeddingTable.take` with the same rows in a random order.
"""

from __future__ import annotations

import argparse
import base64
import copy
import itertools
import math
import os
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

console = Console(width=140)


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"load {one:.2f} (1 min) {five:.2f} (5 min) on {os.cpu_count()} CPUs"


# ---------------------------------------------------------------------------------------------
# encode throughput


def make_images(folder: Path, n: int, size: int, fmt: str, seed: int) -> Path:
    """n distinct smooth random colour fields with mild noise (about 20 kB as 256 px JPEGs); reused if present."""
    from PIL import Image

    done = folder / ".complete"
    if done.exists() and done.read_text() == f"{n} {size} {fmt} {seed}":
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        base = Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).resize((size, size), Image.BICUBIC)
        pix = np.asarray(base, dtype=np.int16) + rng.integers(-12, 13, (size, size, 3), dtype=np.int16)
        img = Image.fromarray(np.clip(pix, 0, 255).astype(np.uint8))
        if fmt == "jpg":
            img.save(folder / f"{i:06d}.jpg", quality=90)
        else:
            img.save(folder / f"{i:06d}.png")
    done.write_text(f"{n} {size} {fmt} {seed}")
    return folder


class ForwardClock:
    """Records when each teacher forward of an `encode()` call starts, by wrapping `models.build`.

    The start of forward k+1 comes after batch k was copied back to the host (the encode loop calls
    `.cpu()` on it), so the span from the first to the last start covers every batch but the last,
    loaded, run and written: the loop's steady rate, without the call's set-up or the first batch's
    wait for the loader. Works the same on a GPU.
    """

    def __init__(self):
        self.starts: list[float] = []
        self.sizes: list[int] = []

    def __enter__(self):
        from dimefm_pipeline.core import models

        self._build = build = models.build

        def timed_build(*a, **kw):
            loaded = build(*a, **kw)
            forward = loaded.model.encode_image

            def encode_image(x, *fa, **fkw):
                self.starts.append(time.perf_counter())
                self.sizes.append(len(x))
                return forward(x, *fa, **fkw)

            loaded.model.encode_image = encode_image
            return loaded

        models.build = timed_build
        return self

    def __exit__(self, *exc):
        from dimefm_pipeline.core import models

        models.build = self._build

    def steady_rate(self) -> float:
        if len(self.starts) < 2:
            raise RuntimeError("need at least two batches to measure a steady rate: use more --images")
        return sum(self.sizes[:-1]) / (self.starts[-1] - self.starts[0])


def run_encode(folder: Path, args, scratch: Path) -> tuple[float, int, float]:
    """One `encode()` call into a fresh cache: (seconds, items cached, steady items/s inside the loop)."""
    from dimefm_pipeline.encode.config import EncodeConfig
    from dimefm_pipeline.encode.run import encode

    out = Path(tempfile.mkdtemp(dir=scratch, prefix="run-"))
    try:
        cfg = EncodeConfig("image", (str(folder),), str(out / "bench.duckdb"), teacher=args.arch,
                           pretrained=args.pretrained, batch_size=args.batch_size, workers=args.workers,
                           shard_size=args.shard_size)
        with ForwardClock() as clock:
            t0 = time.perf_counter()
            summary = encode(cfg, progress=False)
            dt = time.perf_counter() - t0
        if summary.errors:
            raise RuntimeError(f"{summary.errors} images failed to encode")
        return dt, summary.items, clock.steady_rate()
    finally:
        shutil.rmtree(out, ignore_errors=True)


def bench_encode(args) -> None:
    import torch

    from dimefm_pipeline.core import models
    from dimefm_pipeline.encode.batches import UnitBatches
    from dimefm_pipeline.formats import plan_source, resolve_source

    scratch = Path(args.scratch)
    scratch.mkdir(parents=True, exist_ok=True)
    console.print(f"[bold]encode[/bold]: {args.arch} ({args.pretrained}), {args.images} {args.image_size}px {args.format} "
                  f"images, batch {args.batch_size}, --workers {args.workers}, shard size {args.shard_size}; "
                  f"torch {torch.__version__}; {load()}")
    big = make_images(scratch / f"images-{args.images}-{args.image_size}-{args.format}", args.images, args.image_size,
                      args.format, args.seed)

    t0 = time.perf_counter()
    loaded = models.build(models.resolve_spec(args.arch, args.pretrained), quiet=True)
    build_s = time.perf_counter() - t0
    units = plan_source(resolve_source(str(big), "image"), 0, args.shard_size).units
    # encode() never starts more loader workers than it has units: a folder smaller than one shard
    # is decoded by one worker whatever --workers says.
    used_workers = min(args.workers, max(len(units), 1))

    x = torch.randn(args.batch_size, 3, loaded.image_size, loaded.image_size)
    steps = max(math.ceil(args.images / args.batch_size), 2)
    with torch.no_grad():
        for _ in range(3):  # the first calls allocate and pick kernels: not timed
            loaded.model.encode_image(x)

    # Each repeat runs encode() and then the forward alone, and keeps their ratio, so load from other
    # processes on a shared machine shifts both sides alike.
    fwd, dec, whole, steady, fixed = [], [], [], [], []
    for r in range(args.repeats):
        t_call, n_call, rate = run_encode(big, args, scratch)
        whole.append(n_call / t_call)
        steady.append(rate)
        fixed.append(t_call - n_call / rate)  # what the call spends outside the steady loop
        # On CPU encode() gives torch the cores its loader workers leave free; the forward alone must
        # run with the same number of threads (on the shared 2-core box 1 thread ran 1.7x faster
        # than 2, so a mismatch alone moves the ratio that much).
        encode_threads = torch.get_num_threads()

        # Teacher forward alone on pre-made tensors: the ceiling for the end-to-end rate.
        torch.set_num_threads(encode_threads)
        with torch.no_grad():
            t0 = time.perf_counter()
            for _ in range(steps):
                loaded.model.encode_image(x)
            fwd.append(steps * args.batch_size / (time.perf_counter() - t0))

        # Decode + preprocess on one core, as one loader worker runs it (workers use one torch thread).
        torch.set_num_threads(1)
        t0 = time.perf_counter()
        n = sum(len(b.keys) for b in UnitBatches(units, args.batch_size, loaded.preprocess))
        dec.append(n / (time.perf_counter() - t0))

        console.print(f"  repeat {r + 1}: forward {fwd[-1]:.1f}/s, encode() steady {steady[-1]:.1f}/s "
                      f"(ratio {steady[-1] / fwd[-1]:.2f}), whole call {whole[-1]:.1f}/s; {load()}")
    med = statistics.median
    forward, decode_rate = med(fwd), med(dec)
    ratio_steady = med([s / f for s, f in zip(steady, fwd)])
    ratio_whole = med([w / f for w, f in zip(whole, fwd)])

    table = Table(title=f"Stage one image throughput: {args.arch}, batch {args.batch_size}, "
                        f"{os.cpu_count()} CPUs ({platform.machine()})")
    for col in ("measure", "images/s", "vs forward"):
        table.add_column(col, justify="left" if col == "measure" else "right")
    table.add_row(f"teacher forward only (random tensors, no_grad, {encode_threads} torch thread(s))",
                  f"{forward:,.1f}", "1.00")
    table.add_row("decode + preprocess only, 1 core", f"{decode_rate:,.1f}", f"{decode_rate / forward:.2f}")
    table.add_row(f"encode() steady state ({used_workers} loader worker(s), {len(units)} unit(s))",
                  f"{med(steady):,.1f}", f"{ratio_steady:.2f}")
    table.add_row(f"encode() whole call, {args.images} images", f"{med(whole):,.1f}", f"{ratio_whole:.2f}")
    console.print(table)
    console.print(f"fixed cost of one encode() call: {med(fixed):.1f} s (one teacher build alone: {build_s:.1f} s); "
                  f"decode cores needed to feed this forward rate: {forward / decode_rate:.2f}; "
                  f"medians of {args.repeats} repeat(s) (ratios per repeat); {load()}")


# ---------------------------------------------------------------------------------------------
# loader: how fast each stage's DataLoader delivers decoded images, and how many bytes it reads


def _rchar() -> int:
    with open("/proc/self/io") as f:
        return int(next(line for line in f if line.startswith("rchar:")).split()[1])


def _count_worker_reads(log: Path):
    """worker_init_fn: when a DataLoader worker exits, append the bytes it read (rchar) to `log`."""
    import multiprocessing.util

    def init(_):
        start = _rchar()

        def report():
            with open(log, "a") as f:
                f.write(f"{_rchar() - start}\n")

        multiprocessing.util.Finalize(None, report, exitpriority=0)

    return init


def make_tars(folder: Path, n: int, per_tar: int, size: int, seed: int) -> Path:
    """The generated JPEGs packed into WebDataset tars of `per_tar` images; reused if present."""
    import tarfile

    done = folder / ".complete"
    if done.exists() and done.read_text() == f"{n} {per_tar} {size} {seed}":
        return folder
    src = make_images(folder.parent / f"images-{n}-{size}-jpg", n, size, "jpg", seed)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    files = sorted(src.glob("*.jpg"))
    for t in range(0, n, per_tar):
        with tarfile.open(folder / f"{t // per_tar:05d}.tar", "w") as tf:
            for p in files[t : t + per_tar]:
                tf.add(p, arcname=p.name)
    done.write_text(f"{n} {per_tar} {size} {seed}")
    return folder


def _loader_rate(make, workers: int, log: Path, count) -> tuple[float, int, int]:
    """(images/s, images, bytes read by the loader's processes) for one pass of `make(workers, init)`."""
    import torch

    log.unlink(missing_ok=True)
    dl = make(workers, _count_worker_reads(log) if workers else None)
    torch.set_num_threads(1)
    before = _rchar()
    t0 = time.perf_counter()
    n = sum(count(b) for b in dl)
    dt = time.perf_counter() - t0
    read = _rchar() - before if not workers else sum(int(x) for x in log.read_text().split())
    return n / dt, n, read


def _drop_cached(paths) -> None:
    """Evict files from the page cache (clean pages; no privileges needed), so the next read hits storage."""
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        os.close(fd)


def tar_reads(tar_paths: list[Path], locs: list, files: list[str], root: Path, repeats: int) -> list[tuple]:
    """Cold-cache reads of the same tars: front to back (how a WebDataset stream reads them) against
    every cached member by its offset in a random global order (how stage two reads them)."""
    seq, rnd = [], []
    member_bytes = sum(loc.length for loc in locs)
    for _ in range(repeats):
        _drop_cached(tar_paths)
        t0 = time.perf_counter()
        n = 0
        for p in tar_paths:
            with open(p, "rb", buffering=0) as f:
                while block := f.read(1 << 20):
                    n += len(block)
        seq.append((n, time.perf_counter() - t0))
        _drop_cached(tar_paths)
        fds = {i: os.open(root / f, os.O_RDONLY) for i, f in enumerate(files)}
        order = np.random.default_rng(len(rnd)).permutation(len(locs))
        t0 = time.perf_counter()
        for i in order:
            os.pread(fds[locs[i].loc_file], locs[i].length, locs[i].offset)
        rnd.append((member_bytes, time.perf_counter() - t0))
        for fd in fds.values():
            os.close(fd)
    med = lambda xs: sorted(xs, key=lambda x: x[1])[len(xs) // 2]  # noqa: E731
    return [("tar streamed front to back", *med(seq), len(locs)), ("members by offset, random order", *med(rnd), len(locs))]


def bench_loader(args) -> None:
    """Stage one's and stage two's loaders over the same tars, at 0..--workers workers."""
    import json

    from torch.utils.data import DataLoader
    from torchvision import transforms as T

    from dimefm_pipeline.store.cache import load_cache
    from dimefm_pipeline.distill.data import EpochPlan, ImageBatches, ImageReader
    from dimefm_pipeline.encode.config import EncodeConfig
    from dimefm_pipeline.encode.run import encode
    from dimefm_pipeline.encode.batches import UnitBatches
    from dimefm_pipeline.formats import plan_source, resolve_source
    from dimefm_pipeline.store.tables import Locator

    scratch = Path(args.scratch)
    tars = make_tars(scratch / f"tars-{args.images}-{args.per_tar}-{args.image_size}", args.images, args.per_tar,
                     args.image_size, args.seed)
    pattern = str(tars / "*.tar")
    total_bytes = sum(p.stat().st_size for p in tars.glob("*.tar"))
    tf = T.Compose([T.Resize(224), T.CenterCrop(224), T.ToTensor()])
    log = scratch / "loader-reads.log"
    console.print(f"[bold]loader[/bold]: {args.images} {args.image_size}px JPEGs in tars of {args.per_tar} "
                  f"({total_bytes / 2**20:.1f} MiB), batch {args.batch_size}; {load()}")
    # a cache of the tars, encoded by a tiny random teacher, so stage two has teacher rows to read back
    cfg_path = scratch / "loader-teacher.json"
    cfg_path.write_text(json.dumps({"embed_dim": 16, "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 16},
                                    "text_cfg": {"context_length": 8, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}))
    folder = scratch / f"loader-cache-{args.images}-{args.per_tar}-v2"
    cache = folder / "m.duckdb"
    if not (folder / ".complete").exists():
        shutil.rmtree(folder, ignore_errors=True)
        encode(EncodeConfig("image", (pattern,), str(cache), teacher=str(cfg_path), pretrained="random", workers=args.workers,
                            batch_size=args.batch_size), progress=False)
        (folder / ".complete").write_text("")
    idx = load_cache(cache, verify=False, need_texts=False, sources=True)
    units = plan_source(resolve_source(pattern, "image"), 0, args.shard_size).units
    table = Table(title=f"Loader throughput and bytes read ({args.images} images, {total_bytes / 2**20:.1f} MiB of tars)")
    for col in ("stage", "workers", "images", "images/s", "per worker", "bytes read / tar bytes"):
        table.add_column(col, justify="left" if col == "stage" else "right")
    for workers in range(0, args.workers + 1):
        def one(w, init):
            return DataLoader(UnitBatches(units, args.batch_size, tf), batch_size=None, num_workers=w, worker_init_fn=init)

        rate, n, read = _loader_rate(one, workers, log, lambda b: len(b.keys))
        table.add_row("one: UnitBatches", str(workers), f"{n:,}", f"{rate:,.1f}", f"{rate / max(workers, 1):,.1f}",
                      f"{read / total_bytes:.2f}")
    for workers in range(0, args.workers + 1):
        def two(w, init):
            plan = EpochPlan(len(idx.images), args.batch_size, 1, 0, 0)
            ds = ImageBatches(plan, 0, ImageReader(idx), tf, seed=0, epoch=0)
            return DataLoader(ds, batch_size=None, sampler=range(plan.steps), num_workers=w, worker_init_fn=init)

        rate, n, read = _loader_rate(two, workers, log, lambda b: len(b[1]))
        table.add_row("two: ImageBatches", str(workers), f"{n:,}", f"{rate:,.1f}", f"{rate / max(workers, 1):,.1f}",
                      f"{read / total_bytes:.2f}")
    console.print(table)

    sid = next(iter(idx.file_paths))
    locs = Locator.rows(idx.image_locs.take(np.arange(len(idx.images))))
    table = Table(title=f"Cold-cache reads of the same tars ({args.repeats} repeat(s), medians)")
    for col in ("read", "MiB", "seconds", "MiB/s", "images/s"):
        table.add_column(col, justify="left" if col == "read" else "right")
    for name, nbytes, secs, n in tar_reads(sorted(tars.glob("*.tar")), locs, idx.file_paths[sid].to_pylist(), Path(idx.sources[sid].root),
                                           args.repeats):
        table.add_row(name, f"{nbytes / 2**20:.1f}", f"{secs:.3f}", f"{nbytes / 2**20 / secs:,.1f}", f"{n / secs:,.0f}")
    console.print(table)
    console.print(load())


# ---------------------------------------------------------------------------------------------
# cache reads


def build_cache(folder: Path, rows: int, dim: int, shard_size: int, seed: int) -> list[tuple[Path, int]]:
    """Stage one's shards (via the real UnitWriter) for `rows` random unit-norm fp16 rows; reused if present."""
    from dimefm_pipeline.store.shards import UnitWriter, read_markers
    from dimefm_pipeline.store.tables import LOC_COLUMNS

    for _, commit in read_markers(folder):
        if sum(s.rows for s in commit.shards) == rows and commit.shards[0].dim == dim:
            return [(folder / f"{s.name}.npy", s.rows) for s in commit.shards]
    shutil.rmtree(folder, ignore_errors=True)
    rng = np.random.default_rng(seed)
    writer = UnitWriter(folder, source_id=0, unit=0, modality="image", dim=dim, shard_size=shard_size)
    t0 = time.perf_counter()
    for lo in range(0, rows, shard_size):
        n = min(shard_size, rows - lo)
        x = rng.standard_normal((n, dim), dtype=np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        zeros = np.zeros(n, np.int64)  # locator: no image bytes behind these rows, only their position
        writer.add(x.astype(np.float16), key=[f"images/{i:09d}.jpg" for i in range(lo, lo + n)], pos=np.arange(lo, lo + n),
                   file=zeros, **{c: zeros for c in LOC_COLUMNS})
    commit = writer.finish()
    console.print(f"  wrote {len(commit.shards)} shards in {time.perf_counter() - t0:.1f} s")
    return [(folder / f"{s.name}.npy", s.rows) for s in commit.shards]


def build_tsv(path: Path, shards: list[tuple[Path, int]]) -> tuple[Path, np.ndarray]:
    """The reference layout: `key<TAB>base64(float32 bytes)` per line, plus line byte offsets (.npy)."""
    index_path = path.with_suffix(".offsets.npy")
    if path.exists() and index_path.exists():
        return path, np.load(index_path)
    offsets, pos, row = [], 0, 0
    tmp = path.with_name(path.name + ".tmp")
    t0 = time.perf_counter()
    with open(tmp, "wb") as f:
        for npy, n in shards:
            x = np.load(npy).astype(np.float32)
            width = x.shape[1] * 4 // 3 * 4  # 4 bytes per float; dims divisible by 3 give unpadded rows
            if x.shape[1] * 4 % 3 == 0:  # one b64encode call per shard, then cut into rows
                b64 = np.frombuffer(base64.b64encode(x.tobytes()), dtype=f"S{width}")
            else:
                b64 = [base64.b64encode(r.tobytes()) for r in x]
            lines = [f"images/{row + i:09d}.jpg\t".encode() + b64[i] + b"\n" for i in range(n)]
            lens = np.fromiter(map(len, lines), dtype=np.int64, count=n)
            offsets.append(pos + np.concatenate([[0], np.cumsum(lens)[:-1]]))
            pos += int(lens.sum())
            row += n
            f.write(b"".join(lines))
    os.replace(tmp, path)
    index = np.concatenate(offsets)
    np.save(index_path, index)
    console.print(f"  wrote TSV in {time.perf_counter() - t0:.1f} s")
    return path, index


def read_all(paths) -> None:
    """Pull files into the page cache so every layout is measured warm."""
    for p in paths:
        with open(p, "rb") as f:
            while f.read(64 << 20):
                pass


class ParquetRowGroups:
    """Rows from Parquet shards by reading only the row groups that hold them (embedding column only)."""

    def __init__(self, paths: list[Path], rows: list[int]):
        import pyarrow.parquet as pq

        self.files = [pq.ParquetFile(p, memory_map=True) for p in paths]
        self.offsets = np.concatenate([[0], np.cumsum(rows)])
        # global first row of every row group, and which file / group it is
        starts, self.where = [], []
        for s, pf in enumerate(self.files):
            lo = self.offsets[s]
            for g in range(pf.metadata.num_row_groups):
                starts.append(lo)
                self.where.append((s, g))
                lo += pf.metadata.row_group(g).num_rows
        self.starts = np.asarray(starts + [self.offsets[-1]])
        self.dim = self.files[0].schema_arrow.field("embedding").type.list_size

    def take(self, idx: np.ndarray) -> np.ndarray:
        groups = np.searchsorted(self.starts, idx, side="right") - 1
        needed = np.unique(groups)
        blocks, base = [], {}
        pos = 0
        for g in needed:
            s, rg = self.where[g]
            col = self.files[s].read_row_group(rg, columns=["embedding"]).column(0).combine_chunks()
            blocks.append(col.flatten().to_numpy(zero_copy_only=False).reshape(-1, self.dim))
            base[g] = pos
            pos += len(blocks[-1])
        data = np.concatenate(blocks)
        local = idx - self.starts[groups] + np.fromiter((base[g] for g in groups), dtype=np.int64, count=len(idx))
        return data[local]


class TsvRows:
    """The reference's reader: seek to the line's offset, readline, split, base64-decode to float32."""

    def __init__(self, path: Path, offsets: np.ndarray):
        self.f = open(path, "rb")
        self.offsets = offsets

    def take(self, idx: np.ndarray) -> np.ndarray:
        out = []
        for i in idx:
            self.f.seek(int(self.offsets[i]))
            _, b64 = self.f.readline().rstrip(b"\n").split(b"\t", 1)
            out.append(np.frombuffer(base64.b64decode(b64), dtype=np.float32))
        return np.stack(out)


def time_interleaved(methods: dict, batches, block: int) -> dict[str, list[float]]:
    """Seconds per batch for each method, taking turns in blocks of `block` batches.

    On a shared machine the load changes from second to second; taking turns exposes every method
    to the same conditions. Turns are blocks, not single batches, because a TSV batch (32 MB of
    buffered file reads) evicts the CPU caches that the memory-mapped gather relies on for its page
    walks: alternating batch by batch measured the memmap 1.5x slower than it runs on its own.
    """
    times = {name: [] for name in methods}
    for lo in range(0, len(batches), block):
        for name, fn in methods.items():
            for b in batches[lo : lo + block]:
                t0 = time.perf_counter()
                fn(b)
                times[name].append(time.perf_counter() - t0)
    return times


def time_slow(fn, batches, max_seconds: float) -> list[float]:
    """Seconds per batch until the batches or the time budget run out (at least one batch)."""
    times = []
    start = time.perf_counter()
    for b in batches:
        t0 = time.perf_counter()
        fn(b)
        times.append(time.perf_counter() - t0)
        if time.perf_counter() - start > max_seconds:
            break
    return times


def parquet_options(npy: Path, dim: int, rows: int = 8192) -> None:
    """Decode time of one row group of the same fp16 rows under other Parquet writer options.

    Explains the Parquet row above: a random batch touches every row group, so its cost is a full
    decode, and how fast that decode is depends on how the embedding column is encoded.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    x = np.ascontiguousarray(np.load(npy, mmap_mode="r")[:rows])
    fsl = pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1), type=pa.float16()), dim)
    fixed = pa.FixedSizeBinaryArray.from_buffers(pa.binary(dim * 2), len(x), [None, pa.py_buffer(x.tobytes())])
    variants = [
        ("fixed_size_list<halffloat>, zstd, dictionary (as stage one writes it)", fsl, dict(compression="zstd")),
        ("fixed_size_list<halffloat>, zstd, no dictionary", fsl, dict(compression="zstd", use_dictionary=False)),
        ("fixed_size_list<halffloat>, uncompressed, no dictionary", fsl, dict(compression="none", use_dictionary=False)),
        (f"fixed_size_binary({dim * 2}), zstd, no dictionary (not FLOAT[] in SQL)", fixed, dict(compression="zstd", use_dictionary=False)),
    ]
    table = Table(title=f"Parquet: decode one {rows}-row group of {dim}-d fp16 embeddings (best of 3)")
    for col in ("embedding column", "ms", "bytes/row"):
        table.add_column(col, justify="left" if col == "embedding column" else "right")
    for name, arr, opts in variants:
        sink = pa.BufferOutputStream()
        pq.write_table(pa.table({"embedding": arr}), sink, row_group_size=rows, **opts)
        buf = sink.getvalue()
        pf = pq.ParquetFile(pa.BufferReader(buf))
        best = math.inf
        for _ in range(3):
            t0 = time.perf_counter()
            pf.read_row_group(0)
            best = min(best, time.perf_counter() - t0)
        table.add_row(name, f"{best * 1e3:.1f}", f"{buf.size / rows:,.0f}")
    console.print(table)


def bench_reads(args) -> None:
    import pyarrow

    from dimefm_pipeline.store.tables import EmbeddingTable

    scratch = Path(args.scratch)
    folder = scratch / f"cache-{args.rows}x{args.dim}-s{args.shard_rows}"
    console.print(f"[bold]reads[/bold]: {args.rows:,} x {args.dim} fp16 in shards of {args.shard_rows:,} rows, "
                  f"batches of {args.read_batch} random rows; numpy {np.__version__}, pyarrow {pyarrow.__version__}; {load()}")
    shards = build_cache(folder, args.rows, args.dim, args.shard_rows, args.seed)
    npys = [p for p, _ in shards]
    parquets = [p.with_suffix(".parquet") for p in npys]
    rows = [n for _, n in shards]
    tsv, offsets = build_tsv(folder / "reference.tsv", shards)
    read_all(npys + parquets + [tsv])

    table = EmbeddingTable(npys, rows, verify=False)  # checksums are checked at open in real runs; not timed here
    ram = np.concatenate([np.asarray(a) for a in table.arrays])
    # The same take() code over in-RAM slices of the same rows: the difference to the memmap row is
    # the cost of memory mapping alone; the difference to np.take is take()'s own bookkeeping.
    in_ram = copy.copy(table)
    in_ram.arrays = [ram[table.offsets[i] : table.offsets[i + 1]] for i in range(len(table.arrays))]
    pq_rows = ParquetRowGroups(parquets, rows)
    tsv_rows = TsvRows(tsv, offsets)
    rng = np.random.default_rng(args.seed)
    # Stage two asks for a batch's rows in ascending order (a batch is a set), so every method gets the
    # same sorted batches; one more row shows take() with the rows in a random order.
    batches = [np.sort(rng.integers(0, args.rows, args.read_batch)) for _ in range(args.batches)]
    shuffle = rng.permutation(args.read_batch)
    out = np.empty((args.read_batch, args.dim), np.float16)
    next_start = itertools.cycle(rng.integers(0, args.rows - args.read_batch, args.batches))

    def memcpy(b):
        s = next(next_start)
        np.copyto(out, ram[s : s + len(b)])

    # Every layout must return the same rows before its time means anything; this is also each
    # method's warm-up call.
    want = np.take(ram, batches[0], axis=0)
    memcpy(batches[0])
    assert np.array_equal(in_ram.take(batches[0]), want)
    assert np.array_equal(table.take(batches[0]), want)
    assert np.array_equal(table.take(batches[0][shuffle]), want[shuffle])
    assert np.array_equal(pq_rows.take(batches[0]), want)
    assert np.array_equal(tsv_rows.take(batches[0]), want.astype(np.float32))

    MEMCPY, TAKE, IN_RAM, MMAP = "memcpy of contiguous rows (in RAM)", "np.take from an in-RAM fp16 array", \
        "EmbeddingTable.take over in-RAM shards", "EmbeddingTable.take over .npy memmaps"
    ANY = "EmbeddingTable.take over .npy memmaps, rows in random order"
    TSV, PARQUET = "reference TSV: seek + readline + base64", "Parquet: read the needed row groups"
    # np.take allocates its result, as take() does (with out= and the default mode it buffers the
    # result and copies it twice, which measured 2x slower).
    fast = {MEMCPY: memcpy, TAKE: lambda b: np.take(ram, b, axis=0), IN_RAM: in_ram.take, MMAP: table.take,
            ANY: lambda b: table.take(b[shuffle]), TSV: tsv_rows.take}
    times = time_interleaved(fast, batches, args.block)
    console.print(f"  in-memory, memmap and TSV reads done ({len(batches)} batches each, in turns of {args.block}); {load()}")
    times[PARQUET] = time_slow(pq_rows.take, batches, args.max_seconds)
    console.print(f"  Parquet done; {load()}")
    disk = {MMAP: sum(p.stat().st_size for p in npys), PARQUET: sum(p.stat().st_size for p in parquets),
            TSV: tsv.stat().st_size + offsets.nbytes}
    disk[ANY] = disk[MMAP]

    med = {name: statistics.median(t) for name, t in times.items()}
    out_table = Table(title=f"Random batches of {args.read_batch} rows from {args.rows:,} x {args.dim} fp16 "
                            f"({os.cpu_count()} CPUs, warm page cache)")
    for col in ("layout / method", "ms/batch (median)", "rows/s", "batches", "vs memmap", "disk bytes/row"):
        out_table.add_column(col, justify="left" if col == "layout / method" else "right")
    for name in (MEMCPY, TAKE, IN_RAM, MMAP, ANY, TSV, PARQUET):
        sec = med[name]
        out_table.add_row(name, f"{sec * 1e3:,.2f}", f"{args.read_batch / sec:,.0f}", str(len(times[name])),
                          f"{sec / med[MMAP]:,.2f}x", f"{disk[name] / args.rows:,.0f}" if name in disk else "-")
    console.print(out_table)
    console.print(f"TSV / memmap {med[TSV] / med[MMAP]:.1f}x (goal >= 50x); memmap / np.take "
                  f"{med[MMAP] / med[TAKE]:.2f}x (goal <= 2x); memmap / contiguous memcpy {med[MMAP] / med[MEMCPY]:.2f}x; "
                  f"memmap / same take() in RAM {med[MMAP] / med[IN_RAM]:.2f}x; random order / ascending "
                  f"{med[ANY] / med[MMAP]:.2f}x; Parquet / memmap {med[PARQUET] / med[MMAP]:,.0f}x; "
                  f".npy + Parquet: {(disk[MMAP] + disk[PARQUET]) / args.rows:,.0f} bytes/row; {load()}")
    parquet_options(npys[0], args.dim)
    console.print(f"{load()}")


def main() -> None:
    from dimefm_pipeline.encode.config import DEFAULT_SHARD_SIZE

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--part", choices=("encode", "reads", "loader", "all"), default="all")
    p.add_argument("--scratch", default="/tmp/dimefm-bench", help="generated images and cache files (reused between runs)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeats", type=int, default=1, help="encode: timed repeats, medians reported")
    g = p.add_argument_group("encode")
    g.add_argument("--arch", default="ViT-B-32", help="open_clip architecture of the teacher")
    g.add_argument("--pretrained", default="random", help="weights: random, an open_clip tag or a checkpoint")
    g.add_argument("--images", type=int, default=256)
    g.add_argument("--image-size", type=int, default=256, help="side of the generated images (px)")
    g.add_argument("--format", choices=("jpg", "png"), default="jpg")
    g.add_argument("--batch-size", type=int, default=32)
    g.add_argument("--workers", type=int, default=2)
    g.add_argument("--shard-size", type=int, default=DEFAULT_SHARD_SIZE, help="rows per shard, and items per unit of work")
    g.add_argument("--per-tar", type=int, default=100, help="loader: images per tar")
    g = p.add_argument_group("reads")
    g.add_argument("--rows", type=int, default=1_000_000)
    g.add_argument("--dim", type=int, default=768)
    g.add_argument("--shard-rows", type=int, default=DEFAULT_SHARD_SIZE, help="rows per shard of the read cache")
    g.add_argument("--read-batch", type=int, default=4096)
    g.add_argument("--batches", type=int, default=100, help="random batches per method")
    g.add_argument("--block", type=int, default=10, help="batches per turn when the fast methods take turns")
    g.add_argument("--max-seconds", type=float, default=20.0, help="time budget for the Parquet reads (at least one batch)")
    args = p.parse_args()
    if args.part in ("encode", "all"):
        bench_encode(args)
    if args.part in ("reads", "all"):
        bench_reads(args)
    if args.part in ("loader", "all"):
        bench_loader(args)


if __name__ == "__main__":
    main()
