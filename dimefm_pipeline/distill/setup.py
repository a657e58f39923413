"""Everything a distillation run needs before its first step, built once: the cache (one read of the
manifest), the student, the sentence sampler, token ids, the optimiser, the image reader and the
state of a resumed run."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dimefm_pipeline.core import distributed as dist
from dimefm_pipeline.core.errors import DimefmError
from dimefm_pipeline.core.optim import param_groups
from dimefm_pipeline.distill.config import DistillConfig
from dimefm_pipeline.distill.data import ImageReader, TextSampler, ViewInput, image_transform, mined_text_pool
from dimefm_pipeline.distill.runlog import latest_checkpoint, load_checkpoint
from dimefm_pipeline.store.manifest import lock_wait


@dataclass
class Job:
    """Everything the training loop needs, built once by `prepare`."""

    idx: object  # store.cache.CacheIndex
    student: object  # student.Student
    model: object  # the student's torch module
    ddp: object  # the module the loop calls (DDP-wrapped under torchrun)
    opt: object
    scaler: object | None
    autocast: dict  # torch.autocast keyword arguments
    texts: object  # data.TextSampler
    tokens: object | None  # memory-mapped token ids (student text tower)
    pairs: np.ndarray | None  # mined neighbours of every image
    reader: object  # data.ImageReader
    transform: object
    view_input: ViewInput | None  # set: each epoch, each image trains on one of its cached views
    per_epoch: int  # steps per epoch
    total: int
    step: int = 0


def prepare(cfg: DistillConfig, rank: int, world: int, device) -> Job:
    """The cache, the student, the data plan, the optimiser, and the state of a resumed run."""
    import torch

    from dimefm_pipeline.distill.student import build_student
    from dimefm_pipeline.store.cache import load_cache

    mined = cfg.text_filter == "mined" or cfg.mined_share > 0 or cfg.loss.w_pvl_mined > 0
    idx = load_cache(cfg.cache, verify=cfg.verify_cache, wait=lock_wait(), sources=True, pairs=mined,
                     mining_id=cfg.mining_id, teachers=cfg.teacher_names)
    _check_ensemble(cfg, idx)
    student = build_student(cfg, idx.teachers[0].info if idx.teachers else idx.teacher, device=device)
    texts, tokens = _sentences(cfg, idx, student, rank, world)
    n_images = len(idx.images) // idx.views
    per_epoch = n_images // (cfg.batch_size * world)
    if per_epoch == 0:
        raise DimefmError(f"batch size {cfg.batch_size} x {world} rank(s) is larger than the {n_images} cached "
                          f"images: lower --batch-size")
    total = cfg.steps or max(1, round(cfg.epochs * per_epoch))
    model = student.model
    # fused: one kernel over all parameters (CPU and CUDA); the dense update of a 49k-token
    # embedding dominates small students' optimiser time otherwise (docs/benchmarks.md)
    opt = torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, fused=True)
    # CUDA: fp16 autocast + grad scaler ("amp") or bf16; CPU: bf16 autocast on request
    # (1.5x faster steps for the world student on this machine's CPU, docs/benchmarks.md)
    use_amp = (device.type == "cuda" and cfg.precision in ("amp", "bf16")) or (device.type == "cpu" and cfg.precision == "bf16")
    amp_dtype = torch.bfloat16 if cfg.precision == "bf16" else torch.float16
    scaler = torch.amp.GradScaler("cuda") if use_amp and amp_dtype == torch.float16 else None
    step = _resumed_step(cfg, model, opt, scaler, device, rank, world)
    ddp = model
    if world > 1:
        ddp = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    transform, view_input = _image_input(cfg, idx, student)
    return Job(idx, student, model, ddp, opt, scaler, {"dtype": amp_dtype, "enabled": use_amp}, texts, tokens, idx.pairs,
               ImageReader(idx), transform, view_input, per_epoch, total, step)


def _check_ensemble(cfg: DistillConfig, idx) -> None:
    """Teachers whose dim is not the student's (the first one's) can only give the terms that compare
    similarity rows: refused before any step unless the terms that compare features are off."""
    dim = idx.teachers[0].info.embed_dim if idx.teachers else None
    direct = cfg.loss.direct_weights(train_text=cfg.text_tower == "student")
    other = [t.name for t, w in zip(idx.teachers, cfg.teacher_weight_list) if w and t.info.embed_dim != dim]
    used = [flag for flag, w in direct.items() if w]
    if other and used:
        raise DimefmError(f"teacher(s) {', '.join(other)} have another embedding dim than the student ({dim}, the first "
                          f"teacher's): the terms of {', '.join(used)} compare the student's features with the teacher's "
                          "directly; set them to 0, or list a teacher of that dim first")


def _sentences(cfg: DistillConfig, idx, student, rank: int, world: int):
    """The sentence sampler (over every cached sentence, or the mined ones) and the token ids of a
    student text tower (written once by rank 0, memory-mapped by every rank)."""
    from dimefm_pipeline.store.tokens import build_token_shards

    if idx.pairs is not None:
        unmined = int((idx.pairs[:, 0] < 0).sum())
        if unmined and rank == 0:
            print(f"warning: {unmined} of {len(idx.pairs)} images have no mined sentences (encoded after mining "
                  f"{idx.mining_id}): they add no mined sentences to batches and their mined P-VL pseudo caption is "
                  "their own teacher row; run `dimefm mine` again to include them", file=sys.stderr)
    pool = mined_text_pool(idx.pairs) if cfg.text_filter == "mined" else np.arange(len(idx.texts), dtype=np.int64)
    try:
        texts = TextSampler(pool, cfg.texts_per_step, rank=rank, world=world, seed=cfg.seed)
    except ValueError as exc:
        raise DimefmError(str(exc)) from None
    tokens = None
    if student.tokenizer is not None:
        if rank == 0:  # one rank writes the token shards, the others then map them
            build_token_shards(idx, student.tokenizer)
        dist.barrier()
        tokens = build_token_shards(idx, student.tokenizer)
    return texts, tokens


def _resumed_step(cfg: DistillConfig, model, opt, scaler, device, rank: int, world: int) -> int:
    """The step a run continues from (its checkpoint restored), or 0 for a new run in a new folder."""
    out, step = Path(cfg.out), 0
    if cfg.resume:
        step, saved, saved_world = load_checkpoint(out, model, opt, scaler, device)
        _check_same_schedule(cfg, saved, saved_world, world)
    elif rank == 0 and latest_checkpoint(out) is not None:
        raise DimefmError(f"{out} already holds checkpoints: pass --resume to continue, or choose a new --out")
    dist.barrier()
    return step


def _check_same_schedule(cfg: DistillConfig, saved: dict, saved_world: int | None, world: int) -> None:
    """A resumed run continues the checkpoint's schedule and data order, unless asked otherwise."""
    now = cfg.to_dict()
    changed = [f"{k} {saved.get(k)!r} -> {now[k]!r}" for k in DistillConfig.SCHEDULE
               if k in saved and _plain(saved[k]) != _plain(now[k])]
    if saved_world is not None and saved_world != world:
        changed.append(f"ranks {saved_world} -> {world}")
    if changed and not cfg.allow_schedule_change:
        raise DimefmError(f"--resume with another schedule than the checkpoint's ({'; '.join(changed)}): the learning "
                          "rate and data order would not continue; pass --allow-schedule-change to accept it")


def _plain(v):
    return list(v) if isinstance(v, tuple) else v


def _image_input(cfg: DistillConfig, idx, student):
    """The student's image transform (view 0) and, when it trains on the cache's views, how a view's
    input is built."""
    cached = cfg.views == "cached" or (cfg.views == "auto" and idx.views > 1)
    if cached and idx.views == 1:
        raise DimefmError("--views cached: this cache holds one view per image (encode with --views K)")
    if cached and cfg.augment not in (None, "none"):
        raise DimefmError(f"--augment {cfg.augment} draws new crops on the fly, but with cached views the student trains "
                          "on the crops the teacher encoded: pass --views first to use --augment")
    augment = cfg.augment or ("none" if cached else "reference")
    transform = image_transform(augment, student.image_size, student.mean, student.std)
    if not cached:
        return transform, None
    from dimefm_pipeline.formats.images import view_transform

    return transform, ViewInput(student.image_size, view_transform(student.image_size, student.mean, student.std))
