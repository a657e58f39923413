"""What checking a cache costs: the full sha256 of every file against the sampled digest that every
distill start computes (16 blocks of 64 KiB per file), with a cold page cache.

    .venv/bin/python benchmarks/bench_verify.py --gib 4

Writes `--gib` GiB of shard-sized files (96 MiB each, as a 65,536 x 768 fp16 shard) under
`--scratch`, evicts them from the page cache (`posix_fadvise(DONTNEED)`), and times both checks;
prints the rate and the time it extrapolates to for 100 GB.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from dimefm_pipeline.store.files import sample_digest, sha256_file

SHARD_BYTES = 65_536 * 768 * 2 + 128


def drop_cached(paths) -> None:
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        os.close(fd)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gib", type=float, default=4.0)
    p.add_argument("--scratch", default="/tmp/dimefm-bench/verify")
    args = p.parse_args()
    folder = Path(args.scratch)
    folder.mkdir(parents=True, exist_ok=True)
    n = max(1, round(args.gib * 2**30 / SHARD_BYTES))
    paths = [folder / f"{i:05d}.npy" for i in range(n)]
    block = os.urandom(1 << 20)
    for path in paths:
        if not path.exists() or path.stat().st_size != SHARD_BYTES:
            with open(path, "wb") as f:
                for _ in range(SHARD_BYTES >> 20):
                    f.write(block)
                f.write(block[: SHARD_BYTES % (1 << 20)])
    total = n * SHARD_BYTES
    rows = []
    for name, fn in (("full sha256 (info --verify, distill --verify-cache full)", sha256_file),
                     ("sampled digest (every distill start)", sample_digest)):
        drop_cached(paths)
        t0 = time.perf_counter()
        for path in paths:
            fn(path)
        dt = time.perf_counter() - t0
        read = total if fn is sha256_file else n * 16 * 64 * 1024
        rows.append((name, read, dt, 100e9 / SHARD_BYTES * dt / n))
    t = Table(title=f"Checking {n} shard files, {total / 2**30:.2f} GiB, cold page cache ({os.cpu_count()} CPUs)")
    for c in ("check", "bytes read", "seconds", "MiB/s", "100 GB would take"):
        t.add_column(c, justify="left" if c == "check" else "right")
    for name, read, dt, at_100 in rows:
        t.add_row(name, f"{read / 2**20:,.0f} MiB", f"{dt:.2f}", f"{read / 2**20 / dt:,.0f}", f"{at_100:,.1f} s")
    Console(width=160).print(t)


if __name__ == "__main__":
    main()
