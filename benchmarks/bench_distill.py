"""Stage two step time: cached teacher targets against the student alone and an online teacher.

    .venv/bin/python benchmarks/bench_distill.py --images 64 --texts 64 --rounds 30 --steps 1 --threads 1

Three training steps on the same batch (random pixels and token ids, same student, same AdamW):
  cached   `dimefm distill`'s own `distill.train.step`: fp16 teacher rows and token ids read by index
           from memory-mapped `.npy` shards (`EmbeddingTable`, as in the cache), student image+text
           forward/backward, `dimefm_losses(..., train_text=True)`, AdamW step;
  student  the floor: the student's own forward/backward under open_clip's ClipLoss, no targets;
  online   what open_clip's `--distill-model` does: the teacher runs forward (eval, no grad) on the
           batch inside every step, then the same DIME-FM losses.
The modes take turns in rounds (order rotated each round) so that load from other processes on a
shared machine falls on all of them alike. Each mode reports the median wall and process-CPU time
per step; the "paired" ratio is the median over rounds of the ratio within a round, which cancels
load swings slower than a round.

A second table counts forward FLOPs (torch's FlopCounterMode on the meta device: matmuls and
attention only) for the world models and for the paper's ViT-L/14 teacher and ViT-B/32 student, and
turns them into an online/cached step-cost estimate.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from dimefm_pipeline.core import models
from dimefm_pipeline.core.losses import LossConfig, dimefm_losses
from dimefm_pipeline.core.optim import param_groups
from dimefm_pipeline.distill.config import DistillConfig
from dimefm_pipeline.distill.data import TextSampler
from dimefm_pipeline.distill.setup import Job
from dimefm_pipeline.distill.train import step
from dimefm_pipeline.store.tables import EmbeddingTable

TEACHER_CONFIG = models.CONFIG_DIR / "dimefm-world-teacher.json"
STUDENT_CONFIG = models.CONFIG_DIR / "dimefm-world-student.json"
# Used when the package ships no world student config: a tower a few times smaller than the
# world teacher with the same embedding dim, so the cached targets fit it.
INLINE_STUDENT = {
    "embed_dim": 128,
    "vision_cfg": {"image_size": 64, "layers": 3, "width": 96, "head_width": 32, "patch_size": 8},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 96, "heads": 4, "layers": 2},
}
MODES = ("cached", "student", "online")


# ---- models --------------------------------------------------------------------------------------


def load_config(path: str, fallback: dict | None = None) -> tuple[str, dict, str]:
    """(arch name, open_clip config, where it came from) of a config path; the fallback stands in
    for the world student config while the package does not ship one."""
    p = Path(path)
    if fallback is not None and p == STUDENT_CONFIG and not p.exists():
        return "bench-inline-student", fallback, "inline, no world student config shipped"
    return p.stem, json.loads(p.read_text()), p.name


def create(arch: str, config: dict, *, device: str = "cpu", seed: int = 0):
    models.register_config(arch, config)
    with torch.random.fork_rng(devices=[]), models.quiet_open_clip():
        torch.manual_seed(seed)
        return open_clip_create(arch, device)


def open_clip_create(arch: str, device: str):
    import open_clip

    if device == "meta":
        # meta tensors: shapes without storage, enough to count FLOPs of ViT-L/14 in a second
        with torch.device("meta"):
            return open_clip.create_model(arch, device="meta")
    return open_clip.create_model(arch, device=device)


def image_size(config: dict) -> int:
    size = config["vision_cfg"].get("image_size", 224)
    return size[0] if isinstance(size, (list, tuple)) else int(size)


def context_length(config: dict) -> int:
    return int(config["text_cfg"].get("context_length", 77))


def n_params(module) -> int:
    return sum(p.numel() for p in module.parameters())


# ---- inputs --------------------------------------------------------------------------------------


def random_tokens(rng: np.random.Generator, n: int, ctx: int, vocab: int) -> torch.Tensor:
    """Sentences of random length: ids, an end token (the largest id, which open_clip pools on), zeros."""
    tok = np.zeros((n, ctx), dtype=np.int64)
    lengths = rng.integers(4, ctx, size=n)
    for i, length in enumerate(lengths):
        tok[i, : length - 1] = rng.integers(1, vocab - 2, size=length - 1)
        tok[i, length - 1] = vocab - 1
    return torch.from_numpy(tok)


def write_cache(folder: Path, name: str, rows: int, dim: int, shards: int, rng: np.random.Generator) -> EmbeddingTable:
    """L2-normalised fp16 rows in `.npy` shards, opened the way stage two opens the real cache."""
    paths, counts = [], []
    for s, part in enumerate(np.array_split(np.arange(rows), shards)):
        x = rng.standard_normal((len(part), dim), dtype=np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        path = folder / f"{name}-{s:03d}.npy"
        np.save(path, x.astype(np.float16))
        paths.append(path)
        counts.append(len(part))
    return EmbeddingTable(paths, counts, verify=False)


class Timed:
    """A cache table or an optimiser whose reads (`take`) or updates (`step`) are timed: the bench's
    'targets' and 'AdamW' columns of a step it does not write itself."""

    def __init__(self, inner):
        self.inner, self.seconds = inner, 0.0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def _timed(self, fn, *a, **kw):
        t0 = time.perf_counter()
        try:
            return fn(*a, **kw)
        finally:
            self.seconds += time.perf_counter() - t0

    def take(self, idx):
        return self._timed(self.inner.take, idx)

    def step(self, *a, **kw):
        return self._timed(self.inner.step, *a, **kw)


def write_tokens(folder: Path, rows: int, ctx: int, vocab: int, rng: np.random.Generator) -> EmbeddingTable:
    """Token ids of `rows` random sentences as an int32 `.npy` shard, opened as stage two opens them."""
    path = folder / "tokens.npy"
    np.save(path, random_tokens(rng, rows, ctx, vocab).numpy().astype(np.int32))
    return EmbeddingTable([path], [rows], dtype=np.int32)


# ---- the three steps -------------------------------------------------------------------------------


class Bench:
    """One student, one optimiser and the inputs shared by every mode."""

    def __init__(self, args, teacher_arch, teacher_cfg, student_arch, student_cfg, scratch: Path):
        import open_clip

        rng = np.random.default_rng(args.seed)
        self.student = create(student_arch, student_cfg, seed=args.seed).train()
        for name, p in self.student.named_parameters():
            # the similarity scale is fixed in dimefm_losses: dimefm distill never trains it
            p.requires_grad_(not name.startswith("logit_"))
        self.teacher = create(teacher_arch, teacher_cfg, seed=args.seed + 1).eval().requires_grad_(False)
        impl = {"loop": {"foreach": False}, "foreach": {"foreach": True}, "fused": {"fused": True}}[args.adamw]
        self.opt = torch.optim.AdamW(param_groups(self.student, 0.05), lr=8e-4, betas=(0.9, 0.999), eps=1e-8, **impl)
        self.opt_time = 0.0
        self.clip_loss = open_clip.ClipLoss()
        self.loss_kw = {**LossConfig().as_kwargs(), "train_text": True}
        dim = int(teacher_cfg["embed_dim"])
        self.image_table = write_cache(scratch, "images", args.cache_rows, dim, args.shards, rng)
        self.text_table = write_cache(scratch, "texts", args.cache_rows, dim, args.shards, rng)
        self.rng = rng
        self.n_img, self.n_txt, self.rows = args.images, args.texts, args.cache_rows
        s_size, t_size = image_size(student_cfg), image_size(teacher_cfg)
        s_ctx, t_ctx = context_length(student_cfg), context_length(teacher_cfg)
        vocab = int(student_cfg["text_cfg"].get("vocab_size", 49408))
        # a small pool of batches, reused round-robin: input generation stays out of the timing
        self.pixels = [torch.randn(args.images, 3, s_size, s_size) for _ in range(4)]
        self.tokens = [random_tokens(rng, args.texts, max(s_ctx, t_ctx), vocab) for _ in range(4)]
        self.s_ctx, self.t_ctx, self.t_size = s_ctx, t_ctx, t_size
        self.i = 0
        # the cached mode is dimefm distill's own step over this student, optimiser and simulated cache
        self.reads = [Timed(self.image_table), Timed(self.text_table), Timed(write_tokens(scratch, args.cache_rows, s_ctx,
                                                                                          vocab, rng))]
        self.timed_opt = Timed(self.opt)
        self.cfg = DistillConfig("", "", batch_size=args.images, text_batch_size=args.texts, seed=args.seed)
        self.job = Job(idx=SimpleNamespace(images=self.reads[0], texts=self.reads[1], views=1), student=None,
                       model=self.student, ddp=self.student, opt=self.timed_opt, scaler=None,
                       autocast={"dtype": torch.bfloat16, "enabled": False},
                       texts=TextSampler(np.arange(args.cache_rows), args.texts, rank=0, world=1, seed=args.seed),
                       tokens=self.reads[2], pairs=None, reader=None, transform=None, view_input=None, per_epoch=1,
                       total=10**9)

    def _batch(self):
        self.i += 1
        return self.pixels[self.i % 4], self.tokens[self.i % 4]

    def _update(self, loss: torch.Tensor) -> None:
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        t0 = time.perf_counter()
        self.opt.step()
        self.opt_time = time.perf_counter() - t0

    def _student_forward(self, pixels, tokens):
        s_img, s_txt, scale = self.student(pixels, tokens[:, : self.s_ctx])[:3]
        return s_img, s_txt, scale

    def cached(self) -> tuple[float, float]:
        pixels, _ = self._batch()
        img_rows = np.sort(self.rng.choice(self.rows, self.n_img, replace=False))  # a batch is a set, read in row order
        for t in (*self.reads, self.timed_opt):
            t.seconds = 0.0
        t0 = time.perf_counter()
        step(self.cfg, self.job, pixels, img_rows, torch.device("cpu"))
        self.opt_time = self.timed_opt.seconds
        return time.perf_counter() - t0, sum(t.seconds for t in self.reads)

    def student_only(self) -> tuple[float, float]:
        pixels, tokens = self._batch()
        t0 = time.perf_counter()
        s_img, s_txt, scale = self._student_forward(pixels, tokens)
        if self.n_img == self.n_txt:
            loss = self.clip_loss(s_img, s_txt, scale)
        else:  # ClipLoss needs pairs; any loss over both towers' features gives the same floor
            logits = scale * s_img @ s_txt.T
            loss = torch.nn.functional.cross_entropy(logits, torch.arange(self.n_img) % self.n_txt)
        self._update(loss)
        return time.perf_counter() - t0, 0.0

    def online(self) -> tuple[float, float]:
        pixels, tokens = self._batch()
        t0 = time.perf_counter()
        with torch.no_grad():
            t_pix = pixels
            if self.t_size != pixels.shape[-1]:
                t_pix = torch.nn.functional.interpolate(pixels, size=self.t_size, mode="bicubic", align_corners=False)
            t_img, t_txt = self.teacher(t_pix, tokens[:, : self.t_ctx])[:2]
        t1 = time.perf_counter()
        s_img, s_txt, _ = self._student_forward(pixels, tokens)
        self._update(dimefm_losses(t_img, t_txt, s_img, s_txt, **self.loss_kw)["total"])
        return time.perf_counter() - t0, t1 - t0

    def losses_alone(self, reps: int) -> tuple[float, float]:
        """Median forward+backward of each loss on leaf features: the part of a step that differs
        between `cached` and `student` besides the target read."""
        dim = self.image_table.dim
        leaf = lambda n: torch.nn.functional.normalize(torch.randn(n, dim), dim=-1).requires_grad_()  # noqa: E731
        s_img, s_txt = leaf(self.n_img), leaf(self.n_txt)
        t_img, t_txt = torch.randn(self.n_img, dim).half(), torch.randn(self.n_txt, dim).half()
        scale = torch.tensor(100.0)

        def timed(fn) -> float:
            out = []
            for _ in range(reps):
                t0 = time.perf_counter()
                fn().backward()
                out.append(time.perf_counter() - t0)
            return statistics.median(out)

        dime = timed(lambda: dimefm_losses(t_img, t_txt, s_img, s_txt, **self.loss_kw)["total"])
        clip = timed(lambda: self.clip_loss(s_img, s_txt, scale)) if self.n_img == self.n_txt else float("nan")
        return dime, clip


def run_rounds(bench: Bench, args, console: Console) -> dict[str, dict]:
    """Per mode: wall and process CPU time of every timed step, the target part, and the median of
    each round (rounds pair the modes in time, so their ratios cancel slow load swings)."""
    fns = {"cached": bench.cached, "student": bench.student_only, "online": bench.online}

    def step(mode: str) -> tuple[float, float, float, float]:
        c0 = time.process_time()
        wall, part = fns[mode]()
        return wall, time.process_time() - c0, part, bench.opt_time

    for mode in MODES:
        for _ in range(args.warmup):
            step(mode)
    got = {m: [] for m in MODES}
    rounds = {m: [] for m in MODES}
    for r in range(args.rounds):
        for mode in MODES[r % 3 :] + MODES[: r % 3]:
            these = [step(mode) for _ in range(args.steps)]
            got[mode] += these
            rounds[mode].append(statistics.median(t[0] for t in these))
        console.log(f"round {r + 1}/{args.rounds}: " + ", ".join(f"{m} {rounds[m][-1] * 1e3:.0f} ms" for m in MODES)
                    + f"; load {os.getloadavg()[0]:.2f}")
    out = {}
    for m in MODES:
        wall = [t[0] for t in got[m]]
        out[m] = {"median": statistics.median(wall), "p10": float(np.percentile(wall, 10)),
                  "p90": float(np.percentile(wall, 90)), "cpu": statistics.median(t[1] for t in got[m]),
                  "part": statistics.median(t[2] for t in got[m]), "opt": statistics.median(t[3] for t in got[m]),
                  "rounds": rounds[m]}
    return out


def paired(res: dict, a: str, b: str) -> list[float]:
    return [x / y for x, y in zip(res[a]["rounds"], res[b]["rounds"])]


# ---- FLOPs ---------------------------------------------------------------------------------------


def forward_flops(arch: str, config: dict | None) -> dict[str, int]:
    """Forward FLOPs of one image and one sentence, and the student's forward+backward of each."""
    from torch.utils.flop_counter import FlopCounterMode

    import open_clip

    if config is not None:
        models.register_config(arch, config)
    config = config or open_clip.get_model_config(arch)
    with models.quiet_open_clip():
        model = open_clip_create(arch, "meta")
    size, ctx = image_size(config), context_length(config)
    pixels = torch.empty(1, 3, size, size, device="meta")
    tokens = torch.zeros(1, ctx, dtype=torch.long, device="meta")

    def count(fn) -> int:
        with FlopCounterMode(display=False) as fc:
            fn()
        return fc.get_total_flops()

    model.eval()
    with torch.no_grad():
        out = {"image_fwd": count(lambda: model.encode_image(pixels)), "text_fwd": count(lambda: model.encode_text(tokens))}
    model.train()
    out["image_fwdbwd"] = count(lambda: model.encode_image(pixels).sum().backward())
    out["text_fwdbwd"] = count(lambda: model.encode_text(tokens).sum().backward())
    out["image_size"], out["context"] = size, ctx
    return out


def flop_ratios(teacher: dict, student: dict) -> dict[str, float]:
    """Online/cached step cost if time followed FLOPs: cached = student fwd+bwd; online adds the
    teacher forward of the same image and sentence."""
    t = teacher["image_fwd"] + teacher["text_fwd"]
    both = student["image_fwdbwd"] + student["text_fwdbwd"]
    both_3x = 3 * (student["image_fwd"] + student["text_fwd"])
    img = student["image_fwdbwd"]
    return {
        "two towers (measured bwd)": (both + t) / both,
        "two towers (bwd = 2x fwd)": (both_3x + t) / both_3x,
        "image tower only, teacher text kept": (img + t) / img,
    }


# ---- main ----------------------------------------------------------------------------------------


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--teacher-config", default=str(TEACHER_CONFIG), help="open_clip model-config JSON of the teacher")
    p.add_argument("--student-config", default=str(STUDENT_CONFIG),
                   help="open_clip model-config JSON of the student (default: the world student, or an inline tiny one if absent)")
    p.add_argument("--images", type=int, default=64, help="images per step")
    p.add_argument("--texts", type=int, default=64, help="sentences per step")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps per mode before the first round")
    p.add_argument("--rounds", type=int, default=15, help="rounds; every mode runs --steps steps per round, order rotated")
    p.add_argument("--steps", type=int, default=1, help="timed steps per mode and round")
    p.add_argument("--cache-rows", type=int, default=100_000, help="rows per simulated cache table (images, sentences)")
    p.add_argument("--shards", type=int, default=4, help=".npy shards per simulated cache table")
    p.add_argument("--scratch", default=None, help="folder for the simulated cache (default: a temp dir, removed after)")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    p.add_argument("--adamw", choices=("loop", "foreach", "fused"), default="fused",
                   help="AdamW implementation: fused as dimefm distill builds it; loop is torch's CPU default")
    p.add_argument("--no-flops", action="store_true", help="skip the FLOP table")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    console = Console(width=130)
    teacher_arch, teacher_cfg, teacher_from = load_config(args.teacher_config)
    student_arch, student_cfg, student_from = load_config(args.student_config, INLINE_STUDENT)
    if int(student_cfg["embed_dim"]) != int(teacher_cfg["embed_dim"]):
        p.error(f"student embed_dim {student_cfg['embed_dim']} differs from the teacher's {teacher_cfg['embed_dim']}")

    load_start = os.getloadavg()
    with tempfile.TemporaryDirectory(dir=args.scratch) as scratch:
        bench = Bench(args, teacher_arch, teacher_cfg, student_arch, student_cfg, Path(scratch))
        console.print(
            f"teacher {teacher_arch} ({teacher_from}, {n_params(bench.teacher) / 1e6:.2f}M params), "
            f"student {student_arch} ({student_from}, {n_params(bench.student) / 1e6:.2f}M params); "
            f"batch {args.images} images x {args.texts} sentences; cache {args.cache_rows} x {teacher_cfg['embed_dim']} fp16 "
            f"in {args.shards} shards; AdamW {args.adamw}; {args.warmup} warm-up + {args.rounds} x {args.steps} steps per mode\n"
            f"torch {torch.__version__}, {os.cpu_count()} CPUs ({platform.processor() or platform.machine()}), "
            f"torch threads {torch.get_num_threads()}, load average at start {load_start[0]:.2f} {load_start[1]:.2f} {load_start[2]:.2f}"
        )
        res = run_rounds(bench, args, console)
        loss_dime, loss_clip = bench.losses_alone(50)
    load_end = os.getloadavg()

    base = res["student"]
    table = Table(title=f"Stage two step time (fwd+bwd+AdamW, {args.images} images + {args.texts} sentences)")
    for col in ("mode", "wall ms", "p10 ms", "p90 ms", "CPU ms", "targets ms", "AdamW ms",
                "wall / (b)", "CPU / (b)", "paired / (b)"):
        table.add_column(col, justify="left" if col == "mode" else "right")
    labels = {"cached": "(a) cached", "student": "(b) student", "online": "(c) online"}
    for m in MODES:
        r = res[m]
        table.add_row(labels[m], f"{r['median'] * 1e3:.0f}", f"{r['p10'] * 1e3:.0f}", f"{r['p90'] * 1e3:.0f}",
                      f"{r['cpu'] * 1e3:.0f}", f"{r['part'] * 1e3:.2f}" if m != "student" else "-", f"{r['opt'] * 1e3:.0f}",
                      f"{r['median'] / base['median']:.3f}", f"{r['cpu'] / base['cpu']:.3f}",
                      f"{statistics.median(paired(res, m, 'student')):.3f}")
    console.print(table)
    cs, oc = paired(res, "cached", "student"), paired(res, "online", "cached")
    console.print(
        "(a) cached targets, as dimefm distill; (b) student only, ClipLoss floor; (c) online teacher, as --distill-model\n"
        "medians per step; 'targets ms': reading the teacher rows (cached) or running the teacher forward (online); "
        "'AdamW ms': the optimiser step alone; 'paired': median over rounds of the ratio of the two modes' round medians\n"
        f"cached / student: wall {res['cached']['median'] / base['median']:.3f}, CPU {res['cached']['cpu'] / base['cpu']:.3f}, "
        f"paired {statistics.median(cs):.3f} (rounds {min(cs):.3f}-{max(cs):.3f}); goal <= 1.15\n"
        f"online / cached:  wall {res['online']['median'] / res['cached']['median']:.3f}, "
        f"CPU {res['online']['cpu'] / res['cached']['cpu']:.3f}, "
        f"paired {statistics.median(oc):.3f} (rounds {min(oc):.3f}-{max(oc):.3f}); goal >= 3\n"
        f"losses alone, fwd+bwd on leaf features (median of 50): dimefm_losses {loss_dime * 1e3:.2f} ms, "
        f"ClipLoss {loss_clip * 1e3:.2f} ms\n"
        f"load average at end {load_end[0]:.2f} {load_end[1]:.2f} {load_end[2]:.2f}"
    )

    if args.no_flops:
        return
    t0 = time.perf_counter()
    pairs = [
        ("world", (teacher_arch, teacher_cfg), (student_arch, student_cfg)),
        ("paper", ("ViT-L-14", None), ("ViT-B-32", None)),
    ]
    ftable = Table(title="FLOPs per image + sentence (FlopCounterMode: matmuls and attention; GFLOPs)")
    for col in ("scale", "model", "image", "text", "image fwd", "text fwd", "image fwd+bwd", "text fwd+bwd"):
        ftable.add_column(col, justify="left" if col in ("scale", "model") else "right")
    ratios = []
    for scale, (t_arch, t_cfg), (s_arch, s_cfg) in pairs:
        ft, fs = forward_flops(t_arch, t_cfg), forward_flops(s_arch, s_cfg)
        for role, arch, f in (("teacher", t_arch, ft), ("student", s_arch, fs)):
            ftable.add_row(scale, f"{role} {arch}", f"{f['image_size']}px", f"{f['context']} tok",
                           f"{f['image_fwd'] / 1e9:.3f}", f"{f['text_fwd'] / 1e9:.3f}",
                           f"{f['image_fwdbwd'] / 1e9:.3f}" if role == "student" else "-",
                           f"{f['text_fwdbwd'] / 1e9:.3f}" if role == "student" else "-")
        ratios.append((scale, flop_ratios(ft, fs)))
    console.print(ftable)
    rtable = Table(title="online / cached step cost if time followed FLOPs")
    rtable.add_column("scale")
    rtable.add_column("student trains")
    rtable.add_column("ratio", justify="right")
    for scale, r in ratios:
        for what, v in r.items():
            rtable.add_row(scale, what, f"{v:.2f}")
    console.print(rtable)
    console.print(f"FLOP counting took {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
