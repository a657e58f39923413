"""Peak memory and step time of a distill step against its micro-batch size, at a fixed batch.

    .venv/bin/python benchmarks/bench_micro.py --batch 256 --micro 0 128 64 32 16 --steps 3 --threads 1
    python benchmarks/bench_micro.py --device cuda --student vit-b-32-768 --batch 1024 --micro 0 512 256 128

Each setting runs in a fresh process: `dimefm distill`'s own `distill.train.step` (the student, fused
AdamW, the loss over the whole batch) on random pixels and token ids, with teacher rows read from
memory-mapped fp16 `.npy` shards of random unit rows (as `bench_distill.py` does). `--micro 0` is the
whole batch at once (no `--micro-batch`); any other value is `--micro-batch`, the two-pass
embedding-gradient cache of `distill/micro.py`. Reported per setting: the median wall time of the
timed steps after one warm-up step and their median process CPU time (steadier than wall time on a
shared machine; with one thread, the compute), and the peak memory: on CPU the process's peak resident set
(`getrusage`, which includes torch itself; the set-up's resident set is printed beside it), on CUDA
`torch.cuda.max_memory_allocated` over the timed steps (its set-up's allocation beside it).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

WORLD_STUDENT = "dimefm-world-student"


def measure(args, micro: int) -> dict:
    """One setting in this process: set up, one warm-up step, `args.steps` timed steps."""
    import torch

    from dimefm_pipeline.distill.config import DistillConfig
    from dimefm_pipeline.distill.train import step

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    cfg = DistillConfig("", "", batch_size=args.batch, text_tower=args.text_tower, micro_batch=micro or None,
                        precision=args.precision, seed=0)
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as scratch:
        job, pixels = bench_job(args, cfg, device, Path(scratch), rng)
        if device.type == "cuda":
            torch.cuda.synchronize()
            set_up = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
        else:
            set_up = _rss_bytes()
        times, cpu = [], []
        for i in range(1 + args.steps):
            t0, c0 = time.perf_counter(), time.process_time()
            step(cfg, job, pixels, np.sort(rng.choice(len(job.idx.images), args.batch, replace=False)), device)
            if device.type == "cuda":
                torch.cuda.synchronize()
            if i:
                times.append(time.perf_counter() - t0)
                cpu.append(time.process_time() - c0)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated()
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"micro": micro, "step_s": statistics.median(times), "cpu_s": statistics.median(cpu),
            "peak_mib": peak / 2**20, "set_up_mib": set_up / 2**20}


def bench_job(args, cfg, device, scratch: Path, rng: np.random.Generator):
    """The `Job` a step needs (student, fused AdamW, autocast and scaler as `distill` builds them, teacher
    rows and token ids in memory-mapped shards of 4 batches) and a batch of random pixels."""
    import torch

    from dimefm_pipeline.core import models
    from dimefm_pipeline.core.optim import param_groups
    from dimefm_pipeline.distill.data import TextSampler
    from dimefm_pipeline.distill.setup import Job
    from dimefm_pipeline.distill.student import is_text_param
    from bench_distill import write_cache, write_tokens

    arch, config = models.model_config(args.student)
    models.register_config(arch, config)
    model = models.create(arch, seed=0)[0].to(device).train()
    for name, p in model.named_parameters():  # as build_student: the scale is fixed, the teacher's text tower frozen
        p.requires_grad_(not name.startswith("logit_") and not (args.text_tower == "teacher" and is_text_param(name)))
    opt = torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr, fused=True)
    amp = args.precision == "bf16" or (args.precision == "amp" and device.type == "cuda")
    dtype = torch.bfloat16 if args.precision == "bf16" else torch.float16
    scaler = torch.amp.GradScaler("cuda") if amp and dtype == torch.float16 else None
    rows, dim, ctx = 4 * args.batch, int(config["embed_dim"]), int(config["text_cfg"].get("context_length", 77))
    tables = [write_cache(scratch, name, rows, dim, 2, rng) for name in ("images", "texts")]
    tokens = write_tokens(scratch, rows, ctx, 49408, rng) if args.text_tower == "student" else None
    job = Job(idx=SimpleNamespace(images=tables[0], texts=tables[1], views=1), student=None, model=model, ddp=model,
              opt=opt, scaler=scaler, autocast={"dtype": dtype, "enabled": amp},
              texts=TextSampler(np.arange(rows), args.batch, rank=0, world=1, seed=0), tokens=tokens, pairs=None,
              reader=None, transform=None, view_input=None, per_epoch=1, total=10**9)
    size = models.image_size(config)
    pixels = torch.randn(args.batch, 3, size, size)
    return job, pixels.pin_memory() if device.type == "cuda" else pixels


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def run_settings(argv: list[str]) -> list[dict]:
    """Every `--micro` setting of the command line `argv` (this script's options), each in a fresh
    process: a peak resident set cannot be reset in-process."""
    args = parser().parse_args(argv)
    env = {**os.environ, "PYTHONWARNINGS": "ignore",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH")]))}
    out = []
    for micro in args.micro:
        r = subprocess.run([sys.executable, __file__, *argv, "--child", str(micro)], capture_output=True, text=True, env=env)
        if r.returncode:
            raise SystemExit(r.stderr[-3000:])
        out.append(json.loads(r.stdout.strip().splitlines()[-1]))
        print(json.dumps(out[-1]), file=sys.stderr, flush=True)
    return out


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--student", default=WORLD_STUDENT, help="a model config the package ships, an open_clip name or a .json")
    p.add_argument("--text-tower", choices=("student", "teacher"), default="student")
    p.add_argument("--precision", choices=("amp", "bf16", "fp32"), default="amp",
                   help="as distill --precision: amp is fp16 + grad scaler on CUDA, fp32 on CPU")
    p.add_argument("--batch", type=int, default=256, help="images and sentences per step")
    p.add_argument("--micro", type=int, nargs="+", default=[0, 128, 64, 32, 16], help="micro-batch sizes (0: none)")
    p.add_argument("--steps", type=int, default=3, help="timed steps per setting, after one warm-up step")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    p.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    return p


def main() -> None:
    args = parser().parse_args()
    if args.child is not None:
        print(json.dumps(measure(args, args.child)))
        return
    load = os.getloadavg()[0]
    rows = run_settings(sys.argv[1:])
    what = "peak RSS" if args.device == "cpu" else "max_memory_allocated"
    print(f"\n{args.student}, {args.text_tower} text tower, batch {args.batch} images + "
          f"{args.batch if args.text_tower == 'student' else 0} sentences, precision {args.precision}, {args.device}, "
          f"median of {args.steps} steps; load {load:.2f} -> {os.getloadavg()[0]:.2f}\n")
    print(f"| micro-batch | {what} | set-up | peak - set-up | step s | process CPU s | CPU / whole batch's |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    whole = next((r["cpu_s"] for r in rows if r["micro"] == 0), None)
    for r in rows:
        ratio = f"{r['cpu_s'] / whole:.2f}" if whole else "-"
        print(f"| {r['micro'] or 'none'} | {r['peak_mib']:,.0f} MiB | {r['set_up_mib']:,.0f} MiB | "
              f"{r['peak_mib'] - r['set_up_mib']:,.0f} MiB | {r['step_s']:.3f} | {r['cpu_s']:.3f} | {ratio} |")


if __name__ == "__main__":
    main()
