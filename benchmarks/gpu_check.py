"""The GPU check: stage one, stage two and mining at the paper's architectures, on one GPU, in minutes.

    bash benchmarks/gpu_check.sh .whl        # on the GPU machine: install the carried wheels, then this
    python benchmarks/gpu_check.py --tiny --device cpu   # the same code paths on a CPU, in a minute

It prints one JSON line (and writes it to --out/gpu_check.json):

- encode_images_per_s: `dimefm encode images` end to end, ViT-L/14 teacher (random weights: no
  download), fp16 autocast, from JPEG WebDataset tars (decode, resize, crop, forward, fp16 shards,
  manifest). Goal: >= 1,000 per H100 (clip-retrieval reports 312 per A100).
- distill_steps_per_s, distill_images_per_s: `dimefm distill` with the ViT-B/32-768 student, the
  teacher's text tower kept (the reference mode), AMP, batch --batch, over the cache just encoded;
  the rate between the 10th step and the last.
- micro: `distill --micro-batch` at batch --micro-of with both student towers (benchmarks/bench_micro.py):
  peak GPU memory (max_memory_allocated) and step time per micro-batch size (0: the whole batch).
- mining_pairs_per_s: the exact mining engine (fp16 matmul + fp32 re-scoring, sentences resident) on
  --mine-images x --mine-texts synthetic 768-d rows: image-sentence pairs scored per second.

Everything it needs besides the repository is in the wheels named in gpu_check.sh; nothing is
downloaded. Each part has a time budget so the whole check ends well inside 8 minutes.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import tarfile
import time
from pathlib import Path

import numpy as np


def make_tars(folder: Path, n: int, per_tar: int, size: int) -> str:
    """n smooth random 256 px JPEGs (about 20 kB each) in WebDataset tars, written in parallel."""
    from concurrent.futures import ProcessPoolExecutor

    folder.mkdir(parents=True, exist_ok=True)
    jobs = [(folder / f"{t:05d}.tar", lo, min(lo + per_tar, n), size) for t, lo in enumerate(range(0, n, per_tar))]
    with ProcessPoolExecutor(max(1, (os.cpu_count() or 2) - 1)) as pool:
        list(pool.map(_write_tar, jobs))
    return str(folder / "*.tar")


def _write_tar(job) -> None:
    from PIL import Image

    path, lo, hi, size = job
    rng = np.random.default_rng(lo)
    with tarfile.open(path, "w") as tf:
        for i in range(lo, hi):
            base = Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).resize((size, size), Image.BICUBIC)
            buf = io.BytesIO()
            base.save(buf, format="JPEG", quality=90)
            info = tarfile.TarInfo(f"{i:08d}.jpg")
            info.size = len(buf.getvalue())
            tf.addfile(info, io.BytesIO(buf.getvalue()))


def part_encode(args, scratch: Path) -> dict:
    from dimefm_pipeline.encode.config import EncodeConfig
    from dimefm_pipeline.encode.run import encode

    pattern = make_tars(scratch / "tars", args.images, 1000, 256)
    sentences = scratch / "s.txt"
    sentences.write_text("".join(f"a photo of object number {i} on a table\n" for i in range(args.texts)))
    cache = scratch / "m" / "c.duckdb"
    common = dict(teacher=args.teacher, pretrained="random", workers=args.workers, precision="fp16" if args.device == "cuda" else "fp32")
    t0 = time.time()
    s = encode(EncodeConfig("image", (pattern,), str(cache), batch_size=args.encode_batch, **common), progress=False)
    seconds = time.time() - t0
    encode(EncodeConfig("text", (str(sentences),), str(cache), batch_size=1024, **common), progress=False)
    return {"encode_images": s.items, "encode_seconds": round(seconds, 2), "encode_images_per_s": round(s.items / seconds, 1),
            "cache": str(cache)}


def part_distill(args, scratch: Path, cache: str) -> dict:
    from dimefm_pipeline.distill.config import DistillConfig
    from dimefm_pipeline.distill.train import distill

    out = scratch / "student"
    cfg = DistillConfig.from_dict(dict(cache=cache, out=str(out), student=args.student, text_tower="teacher",
                                       batch_size=args.batch, steps=args.steps, workers=args.workers, augment="reference",
                                       precision="amp" if args.device == "cuda" else "fp32", log_every=1,
                                       checkpoint_every=10**6))
    distill(cfg, progress=False)
    with open(out / "metrics.csv") as f:
        rows = [(int(r["step"]), float(r["seconds"])) for r in csv.DictReader(f)]
    (s0, t0), (s1, t1) = rows[min(9, len(rows) - 2)], rows[-1]
    rate = (s1 - s0) / (t1 - t0)
    return {"distill_student": args.student, "distill_batch": args.batch, "distill_steps_per_s": round(rate, 3),
            "distill_images_per_s": round(rate * args.batch, 1)}


def part_micro(args) -> dict:
    import bench_micro

    argv = ["--device", args.device, "--student", args.student, "--text-tower", "student", "--batch", str(args.micro_of),
            "--micro", *map(str, args.micro), "--steps", "3"]
    return {"micro": [{k: round(v, 3) for k, v in r.items()} for r in bench_micro.run_settings(argv)]}


def part_mining(args) -> dict:
    import torch

    from dimefm_pipeline.mine.search import SentenceBlocks, exact_topk

    gen = torch.Generator(device=args.device).manual_seed(0)

    def rows(n):
        x = torch.randn(n, 768, device=args.device, generator=gen)
        return torch.nn.functional.normalize(x, dim=1).half().cpu().numpy()

    texts, images = rows(args.mine_texts), rows(args.mine_images)
    dtype = torch.float16 if args.device == "cuda" else torch.float32  # the engines `dimefm mine` uses
    blocks = SentenceBlocks(texts, block=1 << 20, device=args.device, dtype=dtype, resident_bytes=1 << 40)
    exact_topk(images[:1024], blocks, 8)  # warm-up: sentences moved to the device, kernels chosen
    if args.device == "cuda":
        torch.cuda.synchronize()
    t0 = time.time()
    for lo in range(0, len(images), 65536):
        exact_topk(images[lo : lo + 65536], blocks, 8)
    if args.device == "cuda":
        torch.cuda.synchronize()
    seconds = time.time() - t0
    return {"mining_images": len(images), "mining_texts": len(texts), "mining_seconds": round(seconds, 2),
            "mining_pairs_per_s": float(f"{len(images) * len(texts) / seconds:.4g}")}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda")
    p.add_argument("--tiny", action="store_true", help="a minute on a CPU: tiny models and counts, the same code paths")
    p.add_argument("--images", type=int, default=20_000)
    p.add_argument("--texts", type=int, default=20_000)
    p.add_argument("--teacher", default="ViT-L-14")
    p.add_argument("--student", default="vit-b-32-768")
    p.add_argument("--encode-batch", type=int, default=512)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 2))
    p.add_argument("--micro-of", type=int, default=1024, help="the batch of the micro-batch part")
    p.add_argument("--micro", type=int, nargs="+", default=[0, 256], help="its micro-batch sizes (0: the whole batch)")
    p.add_argument("--mine-images", type=int, default=262_144)
    p.add_argument("--mine-texts", type=int, default=4_000_000)
    p.add_argument("--out", default="gpu_check_out")
    args = p.parse_args()
    if args.tiny:
        tiny = Path(args.out) / "tiny-768.json"
        tiny.parent.mkdir(parents=True, exist_ok=True)
        tiny.write_text(json.dumps({"embed_dim": 768, "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "head_width": 32,
                                                                   "patch_size": 16},
                                    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 1}}))
        args.images, args.texts, args.teacher, args.student = 300, 300, str(tiny), str(tiny)
        args.encode_batch, args.batch, args.steps, args.mine_images, args.mine_texts = 64, 16, 12, 2048, 20_000
        args.micro_of, args.micro = 16, [0, 4]
    import torch

    scratch = Path(args.out)
    scratch.mkdir(parents=True, exist_ok=True)
    result = {"device": torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu", "torch": torch.__version__}
    t0 = time.time()
    enc = part_encode(args, scratch)
    result.update({k: v for k, v in enc.items() if k != "cache"})
    result.update(part_distill(args, scratch, enc["cache"]))
    result.update(part_micro(args))
    result.update(part_mining(args))
    result["total_seconds"] = round(time.time() - t0, 1)
    line = json.dumps(result)
    (scratch / "gpu_check.json").write_text(line + "\n")
    print(line, flush=True)


if __name__ == "__main__":
    main()
