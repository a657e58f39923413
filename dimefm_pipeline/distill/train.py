"""The stage-two training loop: one readable loop, nanoGPT-style, over cached teacher targets."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dimefm_pipeline.core import distributed as dist
from dimefm_pipeline.distill.config import DistillConfig
from dimefm_pipeline.distill.runlog import RunLog, latest_checkpoint, load_checkpoint
from dimefm_pipeline.store.manifest import lock_wait
from dimefm_pipeline.core.errors import DimefmError
from dimefm_pipeline.core.losses import dimefm_losses


@dataclass
class DistillResult:
    out: Path
    config_path: Path
    weights_path: Path
    steps: int
    seconds: float
    final: dict  # last logged loss terms
    run_id: int | None


def lr_at(step: int, total: int, cfg: DistillConfig) -> float:
    """Linear warm-up from warmup_lr to lr, then cosine down to min_lr (per step, as the reference)."""
    warm = cfg.warmup_steps(total)
    if step < warm:
        return cfg.warmup_lr + (cfg.lr - cfg.warmup_lr) * step / warm
    progress = (step - warm) / max(1, total - warm)
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * min(progress, 1.0)))


def param_groups(model, weight_decay: float):
    """AdamW groups: no decay on 1-D parameters, biases, positional/class and token embeddings."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        skip = p.ndim < 2 or name.endswith(".bias") or "positional_embedding" in name or "class_embedding" in name or "token_embedding" in name
        (no_decay if skip else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _token_table(idx, student):
    """Token ids of every cached sentence for the student's tokenizer, as memory-mapped int32 shards."""
    from dimefm_pipeline.store.tokens import build_token_shards

    return build_token_shards(idx, student.tokenizer)


@dataclass
class Job:
    """Everything the training loop needs, built once by `_prepare`."""

    idx: object  # cache_index.CacheIndex
    student: object  # student.Student
    model: object  # the student's torch module
    ddp: object  # the module the loop calls (DDP-wrapped under torchrun)
    opt: object
    scaler: object | None
    autocast: dict  # torch.autocast keyword arguments
    texts: object  # data.TextSampler
    tokens: object | None  # memory-mapped token ids (student text tower)
    pairs: np.ndarray | None  # mined neighbours of every image row
    reader: object  # data.ImageReader
    transform: object
    views: tuple  # (views per image in the cache, train on cached views?)
    view_input: tuple | None  # (student image size, normalising transform) of cached views
    per_epoch: int  # steps per epoch
    total: int
    step: int = 0


def distill(cfg: DistillConfig, *, command: str = "", progress: bool = True) -> DistillResult | None:
    """Train the student of `cfg`; returns the result on rank 0 (None elsewhere)."""
    if Path(cfg.out).exists() and not Path(cfg.out).is_dir():
        raise DimefmError(f"--out {cfg.out} is a file, not a folder")
    import torch

    rank, world, _, device = dist.init_distributed()
    threads = torch.get_num_threads()
    if device.type == "cpu":
        dist.cpu_threads_beside_workers(cfg.workers)
    try:
        job = _prepare(cfg, rank, world, device)
        with RunLog(cfg, job, rank=rank, world=world, command=command, progress=progress) as log:
            while not log.done:
                epoch, in_epoch = divmod(job.step, job.per_epoch)
                for pixels, img_rows, failed in _image_batches(cfg, job, rank, world, device, epoch, in_epoch):
                    lr = lr_at(job.step, job.total, cfg)  # 1. learning rate
                    for g in job.opt.param_groups:
                        g["lr"] = lr
                    img_rows = img_rows.numpy()  # 2. teacher targets and sentences of this step
                    targets, tokens = _step_inputs(cfg, job, img_rows, device)
                    with torch.autocast(device.type, **job.autocast):  # 3. forward, losses, backward
                        s_img, s_txt = job.ddp(pixels.to(device, non_blocking=True), tokens)[:2]
                    losses = dimefm_losses(targets["image"], targets["text"], s_img,
                                           targets["text"] if s_txt is None else s_txt, train_text=s_txt is not None,
                                           mined_text=targets["mined"], gather=world > 1, **_loss_kwargs(cfg))
                    log.check_finite(losses["total"])
                    _backward_and_step(cfg, job, losses["total"])  # 4. clip, optimiser step
                    job.step += 1
                    log.after_step(losses, lr, epoch, len(img_rows) * world, failed)  # 5. log, 6. checkpoint
                    if log.done:
                        break
        if rank != 0:
            return None
        done = log.status == "complete"
        return DistillResult(Path(cfg.out), log.config_path if done else None, log.weights_path if done else None,
                             job.step, time.time() - log.t0, log.final, log.run_id)
    finally:
        torch.set_num_threads(threads)
        dist.destroy()


def _prepare(cfg: DistillConfig, rank: int, world: int, device) -> Job:
    """The cache, the student, the data plan, the optimiser, and the state of a resumed run."""
    import torch

    from dimefm_pipeline.store.cache import load_cache
    from dimefm_pipeline.distill.data import ImageReader, TextSampler, check_image_sources, file_tables, image_transform
    from dimefm_pipeline.distill.student import build_student

    if Path(cfg.out).exists() and not Path(cfg.out).is_dir():
        raise DimefmError(f"--out {cfg.out} is a file, not a folder")
    idx = load_cache(cfg.cache, verify=cfg.verify_cache, wait=lock_wait())
    tables = file_tables(cfg.cache, idx)
    check_image_sources(cfg.cache, idx, tables)
    student = build_student(cfg, idx.teacher, device=device)
    model = student.model
    pairs = None
    if cfg.text_filter == "mined" or cfg.mined_share > 0 or cfg.loss.w_pvl_mined > 0:
        from dimefm_pipeline.mine.run import load_pairs

        pairs, mining_id = load_pairs(cfg.cache, idx, cfg.mining_id)
        unmined = int((pairs[:, 0] < 0).sum())
        if unmined and rank == 0:
            import sys

            print(f"warning: {unmined} of {len(pairs)} images have no mined sentences (encoded after mining {mining_id}): "
                  "they add no mined sentences to batches and their mined P-VL pseudo caption is their own teacher row; "
                  "run `dimefm mine` again to include them", file=sys.stderr)
    if cfg.text_filter == "mined":
        from dimefm_pipeline.mine.search import filter_texts_by_mining

        pool = filter_texts_by_mining(pairs)
    else:
        pool = np.arange(len(idx.texts), dtype=np.int64)
    try:
        texts = TextSampler(pool, cfg.texts_per_step, rank=rank, world=world, seed=cfg.seed)
    except ValueError as exc:
        raise DimefmError(str(exc)) from None
    tokens = None
    if student.tokenizer is not None:
        if rank == 0:  # one rank writes the token shards, the others then map them
            _token_table(idx, student)
        dist.barrier()
        tokens = _token_table(idx, student)
    n_images = len(idx.images) // idx.views
    per_epoch = n_images // (cfg.batch_size * world)
    if per_epoch == 0:
        raise DimefmError(f"batch size {cfg.batch_size} x {world} rank(s) is larger than the {n_images} cached "
                          f"images: lower --batch-size")
    total = cfg.steps or max(1, round(cfg.epochs * per_epoch))

    # fused: one kernel over all parameters (CPU and CUDA); the dense update of a 49k-token
    # embedding dominates small students' optimiser time otherwise (docs/benchmarks.md)
    opt = torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, fused=True)
    # CUDA: fp16 autocast + grad scaler ("amp") or bf16; CPU: bf16 autocast on request
    # (1.5x faster steps for the world student on this machine's CPU, docs/benchmarks.md)
    use_amp = (device.type == "cuda" and cfg.precision in ("amp", "bf16")) or (device.type == "cpu" and cfg.precision == "bf16")
    amp_dtype = torch.bfloat16 if cfg.precision == "bf16" else torch.float16
    scaler = torch.amp.GradScaler("cuda") if use_amp and amp_dtype == torch.float16 else None
    out = Path(cfg.out)
    step = 0
    if cfg.resume:
        step, saved, saved_world = load_checkpoint(out, model, opt, scaler, device)
        _check_same_schedule(cfg, saved, saved_world, world)
    elif rank == 0 and latest_checkpoint(out) is not None:
        raise DimefmError(f"{out} already holds checkpoints: pass --resume to continue, or choose a new --out")
    dist.barrier()
    ddp = model
    if world > 1:
        ddp = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    cached = cfg.views == "cached" or (cfg.views == "auto" and idx.views > 1)
    if cached and idx.views == 1:
        raise DimefmError("--views cached: this cache holds one view per image (encode with --views K)")
    if cached and cfg.augment not in (None, "none"):
        raise DimefmError(f"--augment {cfg.augment} draws new crops on the fly, but with cached views the student trains "
                          "on the crops the teacher encoded: pass --views first to use --augment")
    augment = cfg.augment or ("none" if cached else "reference")
    transform = image_transform(augment, student.image_size, student.mean, student.std)
    view_input = None
    if cached:
        from dimefm_pipeline.formats.views import view_transform

        view_input = (student.image_size, view_transform(student.image_size, student.mean, student.std))
    return Job(idx, student, model, ddp, opt, scaler, {"dtype": amp_dtype, "enabled": use_amp}, texts, tokens, pairs,
               ImageReader(idx, tables), transform, (idx.views, cached), view_input, per_epoch, total, step)


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


def _image_batches(cfg: DistillConfig, job: Job, rank: int, world: int, device, epoch: int, in_epoch: int):
    """This rank's (pixels, teacher rows, failed) batches for the rest of `epoch` (from step `in_epoch`)."""
    from dimefm_pipeline.distill.data import image_loader

    return image_loader(len(job.idx.images) // job.views[0], job.reader, job.transform, batch_size=cfg.batch_size,
                        rank=rank, world=world, workers=cfg.workers, seed=cfg.seed, epoch=epoch, start=in_epoch,
                        pin_memory=device.type == "cuda", item_timeout=cfg.item_timeout, views=job.views,
                        view_input=job.view_input)


def _step_inputs(cfg: DistillConfig, job: Job, img_rows: np.ndarray, device):
    """Teacher rows of the batch's images and of this step's sentences (memory-mapped, to the device),
    the mined pseudo captions when asked for, and the sentences' token ids for a student text tower."""
    import torch

    txt_rows = job.texts.rows(job.step)
    images = img_rows // job.idx.views  # mined pairs belong to images (their view 0), not to views
    if cfg.mined_share > 0:
        from dimefm_pipeline.distill.data import mix_mined

        txt_rows = mix_mined(txt_rows, images, job.pairs, cfg.mined_share, job.step, cfg.seed)
    txt_rows = np.sort(txt_rows)  # a set, like the images (from the loader in ascending rows): sorted reads
    idx = job.idx
    targets = {
        "image": torch.from_numpy(idx.images.take(img_rows)).to(device, non_blocking=True),
        "text": torch.from_numpy(idx.texts.take(txt_rows)).to(device, non_blocking=True),
        "mined": None,
    }
    if cfg.loss.w_pvl_mined > 0:
        targets["mined"] = _mined_captions(job, images, cfg.pvl_mined_k, targets["image"]).to(device)
    tokens = torch.from_numpy(job.tokens.take(txt_rows)).to(device) if job.tokens is not None else None
    return targets, tokens


def _mined_captions(job: Job, images: np.ndarray, k: int, teacher_images):
    """Teacher rows of each image's first k mined sentences ([n, k, d]). Missing neighbours repeat the
    first one; an image with none (encoded after the last `dimefm mine`) gets its own teacher image
    row, the pseudo caption of the original P-VL term."""
    import torch

    nb = job.pairs[images, :k].astype(np.int64)
    nb = np.where(nb >= 0, nb, nb[:, :1])
    has = nb[:, 0] >= 0
    out = teacher_images.detach().cpu().float()[:, None, :].repeat(1, nb.shape[1], 1)
    if has.any():
        rows = torch.from_numpy(job.idx.texts.take(nb[has].reshape(-1))).float()
        out[torch.from_numpy(has)] = rows.view(int(has.sum()), nb.shape[1], -1)
    return out


def _backward_and_step(cfg: DistillConfig, job: Job, total_loss) -> None:
    import torch

    job.opt.zero_grad(set_to_none=True)
    if job.scaler is not None:
        job.scaler.scale(total_loss).backward()
        job.scaler.unscale_(job.opt)
    else:
        total_loss.backward()
    if cfg.grad_clip:
        torch.nn.utils.clip_grad_norm_(job.model.parameters(), cfg.grad_clip)
    if job.scaler is not None:
        job.scaler.step(job.opt)
        job.scaler.update()
    else:
        job.opt.step()


def _loss_kwargs(cfg: DistillConfig) -> dict:
    kw = cfg.loss.as_kwargs()
    kw.pop("train_text", None)  # decided by the text-tower mode
    return kw
