"""The stage-two training loop, nanoGPT-style: `distill` runs epochs of image batches through `step`,
one optimiser step over cached teacher targets (its parts marked in order)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dimefm_pipeline.core import distributed as dist
from dimefm_pipeline.core.errors import DimefmError, Interrupted
from dimefm_pipeline.core.optim import cosine
from dimefm_pipeline.core.signals import stop_on_signals
from dimefm_pipeline.distill.config import DistillConfig
from dimefm_pipeline.distill.data import image_loader, mix_mined
from dimefm_pipeline.distill.micro import batch_losses, micro_backward
from dimefm_pipeline.distill.runlog import RunLog, interrupted_message, out_lock, plot_losses
from dimefm_pipeline.distill.setup import Job, prepare
from dimefm_pipeline.distill.student import save_student


@dataclass
class DistillResult:
    out: Path
    config_path: Path
    weights_path: Path
    steps: int
    seconds: float
    final: dict  # last logged loss terms
    run_id: int | None
    finished_before: bool = False  # --resume of a finished run: nothing trained or written


def lr_at(step: int, total: int, cfg: DistillConfig) -> float:
    """Linear warm-up from warmup_lr to lr, then cosine down to min_lr (per step, as the reference)."""
    warm = cfg.warmup_steps(total)
    if step < warm:
        return cfg.warmup_lr + (cfg.lr - cfg.warmup_lr) * step / warm
    return cosine(min((step - warm) / max(1, total - warm), 1.0), cfg.lr, cfg.min_lr)


def distill(cfg: DistillConfig, *, command: str = "", progress: bool = True) -> DistillResult | None:
    """Train the student of `cfg`; returns the result on rank 0 (None elsewhere). SIGINT or SIGTERM
    stops it after the current step, with a checkpoint of that step, and `Interrupted` says how to resume."""
    if Path(cfg.out).exists() and not Path(cfg.out).is_dir():
        raise DimefmError(f"--out {cfg.out} is a file, not a folder")
    import torch

    rank, world, _, device = dist.init_distributed()
    threads = torch.get_num_threads()
    if device.type == "cpu":
        dist.cpu_threads_beside_workers(cfg.workers)
    try:
        with stop_on_signals(), out_lock(cfg.out, rank):
            job = prepare(cfg, rank, world, device)
            if cfg.resume and job.step >= job.total and (Path(cfg.out) / "open_clip_model.safetensors").exists():
                # finished: no step, no new run row, the student left as it is
                return DistillResult(Path(cfg.out), None, None, job.step, 0.0, {}, None, True) if rank == 0 else None
            with RunLog(cfg, job, rank=rank, world=world, command=command, progress=progress) as log:
                while not log.done:
                    epoch, in_epoch = divmod(job.step, job.per_epoch)
                    for pixels, img_rows, failed in _image_batches(cfg, job, rank, world, device, epoch, in_epoch):
                        losses, lr = step(cfg, job, pixels, img_rows.numpy(), device, world=world, check=log.check_finite)
                        log.after_step(losses, lr, epoch, len(img_rows) * world, failed)  # log, checkpoint, signals
                        if log.done:
                            break
                if rank == 0 and job.step >= job.total:
                    _save_student(cfg, job, log)
        if log.stopped:
            raise Interrupted(log.stopped, interrupted_message(cfg, command, log))
        if rank != 0:
            return None
        done = log.status == "complete"
        return DistillResult(Path(cfg.out), log.config_path if done else None, log.weights_path if done else None,
                             job.step, time.time() - log.t0, log.final, log.run_id)
    finally:
        torch.set_num_threads(threads)
        dist.destroy()


def _save_student(cfg: DistillConfig, job: Job, log: RunLog) -> None:
    """Rank 0, every step done: the student as an open_clip hub folder, with its provenance, and its
    loss curves beside it."""
    def described(teacher) -> dict:
        # a local checkpoint by its file name (the folder is meant to be shared), with its sha256
        pretrained = Path(teacher.pretrained).name if Path(teacher.pretrained).is_absolute() else teacher.pretrained
        return {"arch": teacher.arch, "pretrained": pretrained, "fingerprint": teacher.fingerprint}

    teachers = job.idx.teachers
    about = {"teacher": described(teachers[0].info if teachers else job.idx.teacher), "text_tower": cfg.text_tower,
             "steps": job.step, "run_id": log.run_id}
    if teachers:
        about["teachers"] = [{"name": t.name, **described(t.info), "weight": w, "logit_scale": s or cfg.loss.logit_scale}
                             for t, w, s in zip(teachers, cfg.teacher_weight_list, cfg.teacher_scale_list)]
        about["ensemble"] = cfg.ensemble
    log.config_path, log.weights_path = save_student(job.student, log.out, logit_scale=cfg.loss.logit_scale, about=about)
    plot_losses(log.csv, log.out / "loss_curves.png")


def step(cfg: DistillConfig, job: Job, pixels, img_rows: np.ndarray, device, *, world: int = 1, check=None):
    """One optimiser step on a batch of images (pixels, and their cached teacher rows `img_rows`):
    returns the loss terms and the learning rate. `check(total loss)` runs before the update."""
    import torch

    lr = lr_at(job.step, job.total, cfg)  # 1. learning rate
    for g in job.opt.param_groups:
        g["lr"] = lr
    targets, tokens = step_inputs(cfg, job, img_rows, device)  # 2. teacher targets and sentences of this step
    job.opt.zero_grad(set_to_none=True)
    if cfg.micro_batched:  # 3. forward, losses, backward: in micro-batches (distill/micro.py), or at once
        losses = micro_backward(cfg, job, pixels, tokens, targets, device, world=world, check=check)
    else:
        with torch.autocast(device.type, **job.autocast):
            s_img, s_txt = job.ddp(pixels.to(device, non_blocking=True), tokens)[:2]
        losses = batch_losses(cfg, targets, s_img, s_txt, world=world)
        if check is not None:
            check(losses["total"])
        (losses["total"] if job.scaler is None else job.scaler.scale(losses["total"])).backward()
    if job.scaler is not None:  # 4. clip, optimiser step
        job.scaler.unscale_(job.opt)
    if cfg.grad_clip:
        torch.nn.utils.clip_grad_norm_(job.model.parameters(), cfg.grad_clip)
    if job.scaler is not None:
        job.scaler.step(job.opt)
        job.scaler.update()
    else:
        job.opt.step()
    job.step += 1
    return losses, lr


def _image_batches(cfg: DistillConfig, job: Job, rank: int, world: int, device, epoch: int, in_epoch: int):
    """This rank's (pixels, teacher rows, failed) batches for the rest of `epoch` (from step `in_epoch`)."""
    return image_loader(len(job.idx.images) // job.idx.views, job.reader, job.transform, batch_size=cfg.batch_size,
                        rank=rank, world=world, workers=cfg.workers, seed=cfg.seed, epoch=epoch, start=in_epoch,
                        pin_memory=device.type == "cuda", item_timeout=cfg.item_timeout,
                        views_per_image=job.idx.views, view_input=job.view_input)


def step_inputs(cfg: DistillConfig, job: Job, img_rows: np.ndarray, device):
    """Each teacher's rows of the batch's images and of this step's sentences (memory-mapped, to the
    device), with its mined pseudo captions when asked for; and the sentences' token ids for a student
    text tower. One teacher (the cache's own) unless --teachers names several."""
    import torch

    txt_rows = job.texts.rows(job.step)
    images = img_rows // job.idx.views  # mined pairs belong to images (their view 0), not to views
    if cfg.mined_share > 0:
        txt_rows = mix_mined(txt_rows, images, job.pairs, cfg.mined_share, job.step, cfg.seed)
    txt_rows = np.sort(txt_rows)  # a set, like the images (from the loader in ascending rows): sorted reads
    tables = [(t.images, t.texts) for t in job.idx.teachers] or [(job.idx.images, job.idx.texts)]
    targets = []  # each teacher's rows of the same images (views) and sentences
    for image_table, text_table in tables:
        t = {"image": torch.from_numpy(image_table.take(img_rows)).to(device, non_blocking=True),
             "text": torch.from_numpy(text_table.take(txt_rows)).to(device, non_blocking=True), "mined": None}
        if cfg.loss.w_pvl_mined > 0:
            t["mined"] = _mined_captions(job, text_table, images, cfg.pvl_mined_k, t["image"]).to(device)
        targets.append(t)
    tokens = torch.from_numpy(job.tokens.take(txt_rows)).to(device) if job.tokens is not None else None
    return targets, tokens


def _mined_captions(job: Job, texts, images: np.ndarray, k: int, teacher_images):
    """A teacher's rows (`texts`) of each image's first k mined sentences ([n, k, d]). Missing neighbours repeat the
    first one; an image with none (encoded after the last `dimefm mine`) gets its own teacher image
    row, the pseudo caption of the original P-VL term."""
    import torch

    nb = job.pairs[images, :k].astype(np.int64)
    nb = np.where(nb >= 0, nb, nb[:, :1])
    has = nb[:, 0] >= 0
    out = teacher_images.detach().cpu().float()[:, None, :].repeat(1, nb.shape[1], 1)
    if has.any():
        rows = torch.from_numpy(texts.take(nb[has].reshape(-1))).float()
        out[torch.from_numpy(has)] = rows.view(int(has.sum()), nb.shape[1], -1)
    return out
