"""Throughput of the world generator on one core: scenes sampled + rendered, PNG encoding, captions.

Rates are per CPU second of this process (time.process_time) as well as per wall second, so the
per-core figure stays meaningful on a machine that other jobs share.

    .venv/bin/python benchmarks/bench_world.py [--n 5000]
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

from dimefm_pipeline.world.captions import caption  # noqa: E402
from dimefm_pipeline.world.corpus import corpus_sentence, png_bytes  # noqa: E402
from dimefm_pipeline.world.render import render  # noqa: E402
from dimefm_pipeline.world.scene import sample_scene, scene_rng  # noqa: E402


def timed(fn, n: int) -> tuple[float, float]:
    """(items per CPU second, items per wall second) of `fn(i)` over n items."""
    c0, w0 = time.process_time(), time.perf_counter()
    for i in range(n):
        fn(i)
    return n / (time.process_time() - c0), n / (time.perf_counter() - w0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=5000, help="items per measurement")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    timed(lambda i: render(sample_scene(scene_rng(args.seed, i))), 200)  # warm-up

    rows = [
        ("scene + render (64x64 RGB array)", timed(lambda i: render(sample_scene(scene_rng(args.seed, i))), args.n)),
        ("scene + render + PNG encode", timed(lambda i: png_bytes(render(sample_scene(scene_rng(args.seed, i)))), args.n)),
        ("scene + caption", timed(lambda i: caption(sample_scene(r := scene_rng(args.seed, i)), r), args.n)),
        ("corpus sentence (30% distractors)", timed(lambda i: corpus_sentence(args.seed, i), args.n)),
    ]
    print(f"{'what':40s} {'per CPU-s':>12s} {'per wall-s':>12s}   (n={args.n}, one thread)")
    for name, (cpu, wall) in rows:
        print(f"{name:40s} {cpu:12,.0f} {wall:12,.0f}")


if __name__ == "__main__":
    main()
