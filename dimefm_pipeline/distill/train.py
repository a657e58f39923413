"""The stage-two training loop: one readable loop, nanoGPT-style, over cached teacher targets."""

from __future__ import annotations

import csv
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dimefm_pipeline import distributed as dist
from dimefm_pipeline.distill.config import DistillConfig
from dimefm_pipeline.errors import DimefmError


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
    warm = max(1, round(cfg.warmup * total)) if cfg.warmup > 0 else 0
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


def _image_units(idx):
    """Re-plan the image sources (deterministic) and attach each unit's cached shards."""
    from dimefm_pipeline.distill.data import ImageUnit
    from dimefm_pipeline.sources import plan_source, resolve_source

    by_unit = {(u.source_id, u.unit): u for u in idx.image_units}
    out = []
    for sid, (modality, uri, fmt, options, fingerprint, shard_size) in sorted(idx.sources.items()):
        if modality != "image":
            continue
        spec = resolve_source(uri, "image", options)
        plan = plan_source(spec, sid, shard_size)
        if plan.fingerprint != fingerprint:
            raise DimefmError(f"image source {uri} changed since it was encoded: its pixels no longer match the cache")
        for unit in plan.units:
            cached = by_unit.get((sid, unit.index))
            if cached is not None and cached.items:
                out.append(ImageUnit(unit, tuple(cached.parquet), tuple(cached.first_rows), cached.items))
    if not out:
        raise DimefmError("the cache holds no encoded images")
    return out


def _token_table(idx, student):
    """Token ids of every cached sentence for the student's tokenizer, as memory-mapped int32 shards."""
    from dimefm_pipeline.distill.tokens import build_token_shards

    return build_token_shards(idx, student.tokenizer)


def _latest_checkpoint(out: Path) -> Path | None:
    ckpts = sorted((out / "checkpoints").glob("step_*.pt"))
    return ckpts[-1] if ckpts else None


def _save_checkpoint(out: Path, step: int, model, opt, scaler, cfg: DistillConfig, keep: int = 2) -> Path:
    import torch

    folder = out / "checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"step_{step:08d}.pt"
    tmp = path.with_name(path.name + ".tmp")
    module = getattr(model, "module", model)
    torch.save({"step": step, "model": module.state_dict(), "optimizer": opt.state_dict(),
                "scaler": scaler.state_dict() if scaler is not None else None, "config": cfg.to_dict()}, tmp)
    tmp.replace(path)
    for old in sorted(folder.glob("step_*.pt"))[:-keep]:
        old.unlink()
    return path


MANIFEST_WAIT = 300.0  # seconds a run waits for another one's short manifest transaction


def _record(cache: str, fn):
    from dimefm_pipeline.manifest import Manifest

    # Runs sharing a cache (ablations, sweeps) take turns on the manifest for these short writes.
    with Manifest(cache, wait=MANIFEST_WAIT) as man:
        return fn(man)


def distill(cfg: DistillConfig, *, command: str = "", progress: bool = True) -> DistillResult | None:
    """Train the student of `cfg`; returns the result on rank 0 (None elsewhere)."""
    import torch

    from dimefm_pipeline.cache_index import load_cache
    from dimefm_pipeline.distill.data import ImageStream, TextSampler, batches_per_slot, image_transform, mix_mined
    from dimefm_pipeline.distill.student import build_student, save_student
    from dimefm_pipeline.losses import dimefm_losses
    from dimefm_pipeline.progress import progress_bar

    rank, world, _, device = dist.init_distributed()
    threads = torch.get_num_threads()
    if device.type == "cpu":
        dist.cpu_threads_beside_workers(cfg.workers)
    out = Path(cfg.out)
    try:
        # ---- the cache, the student, the data plan --------------------------------------------
        idx = load_cache(cfg.cache, verify=cfg.verify_cache, wait=MANIFEST_WAIT)
        student = build_student(cfg, idx.teacher, device=device)
        model = student.model
        image_units = _image_units(idx)
        pairs = None
        if cfg.text_filter == "mined" or cfg.mined_share > 0 or cfg.loss.w_pvl_mined > 0:
            from dimefm_pipeline.mine import load_pairs

            pairs, _ = load_pairs(cfg.cache, idx, cfg.mining_id)
        if cfg.text_filter == "mined":
            from dimefm_pipeline.mining import filter_texts_by_mining

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
        transform = image_transform(cfg.augment, student.image_size, student.mean, student.std)
        workers = max(cfg.workers, 1)
        items = [u.items for u in image_units]
        per_epoch = batches_per_slot(items, world * workers, cfg.batch_size) * workers
        if per_epoch == 0:
            raise DimefmError(f"batch size {cfg.batch_size} x {world} rank(s) x {workers} worker(s) is larger than the "
                              f"{sum(items)} cached images allow: lower --batch-size or --workers")
        total = cfg.steps or max(1, round(cfg.epochs * per_epoch))

        # ---- optimiser, precision, resume -----------------------------------------------------
        # fused: one kernel over all parameters (CPU and CUDA); the dense update of a 49k-token
        # embedding dominates small students' optimiser time otherwise (docs/benchmarks.md)
        opt = torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, fused=True)
        # CUDA: fp16 autocast + grad scaler ("amp") or bf16; CPU: bf16 autocast on request
        # (1.5x faster steps for the world student on this machine's CPU, docs/benchmarks.md)
        use_amp = (device.type == "cuda" and cfg.precision in ("amp", "bf16")) or (device.type == "cpu" and cfg.precision == "bf16")
        amp_dtype = torch.bfloat16 if cfg.precision == "bf16" else torch.float16
        scaler = torch.amp.GradScaler("cuda") if use_amp and amp_dtype == torch.float16 else None
        step = 0
        if cfg.resume:
            ckpt_path = _latest_checkpoint(out)
            if ckpt_path is None:
                raise DimefmError(f"--resume: no checkpoint in {out / 'checkpoints'}")
            ckpt = torch.load(ckpt_path, map_location=device, weights_only=True)
            model.load_state_dict(ckpt["model"])
            opt.load_state_dict(ckpt["optimizer"])
            if scaler is not None and ckpt.get("scaler"):
                scaler.load_state_dict(ckpt["scaler"])
            step = int(ckpt["step"])
        elif rank == 0 and _latest_checkpoint(out) is not None:
            raise DimefmError(f"{out} already holds checkpoints: pass --resume to continue, or choose a new --out")
        dist.barrier()
        ddp = model
        if world > 1:
            ddp = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
        run_id = None
        if rank == 0:
            out.mkdir(parents=True, exist_ok=True)
            (out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2))
            run_id = _record(cfg.cache, lambda m: m.start_run("distill", command, cfg.to_dict(), world))
        csv_path = out / "metrics.csv"
        metrics_rows: list[tuple] = []
        last_good = _latest_checkpoint(out)

        # ---- the loop ---------------------------------------------------------------------------
        t0, images_seen, final = time.time(), 0, {}
        start_step = step
        status = "failed"
        try:
            with progress_bar(progress and rank == 0) as bar:
                task = bar.add_task("distill", total=total, completed=step, items=0, rate=0.0)
                while step < total:
                    epoch, in_epoch = divmod(step, per_epoch)
                    stream = ImageStream(image_units, rank=rank, world=world, workers=workers, batch_size=cfg.batch_size,
                                         transform=transform, seed=cfg.seed, epoch=epoch, shuffle_buffer=cfg.shuffle_buffer,
                                         skip=in_epoch)
                    loader = torch.utils.data.DataLoader(stream, batch_size=None, num_workers=cfg.workers,
                                                         pin_memory=device.type == "cuda",
                                                         prefetch_factor=4 if cfg.workers else None)
                    for pixels, img_rows, _failed in loader:
                        # 1. learning rate
                        lr = lr_at(step, total, cfg)
                        for g in opt.param_groups:
                            g["lr"] = lr
                        # 2. teacher targets: memory-mapped rows to the device
                        img_np = img_rows.numpy()
                        txt_rows = texts.rows(step)
                        if cfg.mined_share > 0:
                            txt_rows = mix_mined(txt_rows, img_np, pairs, cfg.mined_share, step, cfg.seed)
                        t_img = torch.from_numpy(idx.images.take(img_np)).to(device, non_blocking=True)
                        t_txt = torch.from_numpy(idx.texts.take(txt_rows)).to(device, non_blocking=True)
                        mined = None
                        if cfg.loss.w_pvl_mined > 0:
                            nb = pairs[img_np, : cfg.pvl_mined_k]
                            nb = np.where(nb >= 0, nb, nb[:, :1])
                            mined = torch.from_numpy(idx.texts.take(nb.reshape(-1))).to(device).view(len(img_np), -1, t_img.shape[1])
                        # 3. forward, losses, backward
                        with torch.autocast(device.type, dtype=amp_dtype, enabled=use_amp):
                            tok = torch.from_numpy(tokens.take(txt_rows)).to(device) if tokens is not None else None
                            # through the DDP wrapper's forward (open_clip returns normalised features)
                            s_img, s_txt = ddp(pixels.to(device, non_blocking=True), tok)[:2]
                        losses = dimefm_losses(t_img, t_txt, s_img, t_txt if s_txt is None else s_txt,
                                               train_text=s_txt is not None, mined_text=mined, gather=world > 1,
                                               **_loss_kwargs(cfg))
                        total_loss = losses["total"]
                        if not torch.isfinite(total_loss):
                            where = f"; last good checkpoint: {last_good}" if last_good else ""
                            raise DimefmError(f"loss became {total_loss.item()} at step {step}: stopping{where}")
                        opt.zero_grad(set_to_none=True)
                        if scaler is not None:
                            scaler.scale(total_loss).backward()
                            scaler.unscale_(opt)
                        else:
                            total_loss.backward()
                        # 4. clip, step
                        if cfg.grad_clip:
                            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                        if scaler is not None:
                            scaler.step(opt)
                            scaler.update()
                        else:
                            opt.step()
                        step += 1
                        images_seen += len(img_np) * world
                        # 5. log
                        if rank == 0 and (step % cfg.log_every == 0 or step == total or step == 1):
                            final = {k: float(v.detach()) for k, v in losses.items()}
                            row = {"step": step, "epoch": epoch, "lr": lr, "seconds": time.time() - t0, **final}
                            metrics_rows.append(row)
                            _append_csv(csv_path, row)
                            bar.update(task, completed=step, items=images_seen, rate=images_seen / max(time.time() - t0, 1e-9),
                                       description=f"distill loss {final['total']:.4f}")
                        # 6. checkpoint (and stop early when this invocation's share of steps is done)
                        stopping = cfg.stop_after is not None and step - start_step >= cfg.stop_after
                        if step % cfg.checkpoint_every == 0 or step == total or stopping:
                            if rank == 0:
                                last_good = _save_checkpoint(out, step, model, opt, scaler, cfg)
                                _flush_metrics(cfg.cache, run_id, metrics_rows)
                            dist.barrier()
                        if step >= total or stopping:
                            break
                    if cfg.stop_after is not None and step - start_step >= cfg.stop_after:
                        break
            status = "complete" if step >= total else "stopped"
        finally:
            if rank == 0 and run_id is not None:
                _flush_metrics(cfg.cache, run_id, metrics_rows)
                outputs = None
                if status == "complete":
                    cfg_path, weights = save_student(student, out)
                    outputs = str(out.resolve())
                    _plot(csv_path, out / "loss_curves.png")
                _record(cfg.cache, lambda m: m.end_run(run_id, status, output=outputs, metrics=final))
        if rank != 0:
            return None
        if status != "complete":
            return DistillResult(out, None, None, step, time.time() - t0, final, run_id)
        return DistillResult(out, cfg_path, weights, step, time.time() - t0, final, run_id)
    finally:
        torch.set_num_threads(threads)
        dist.destroy()


def _loss_kwargs(cfg: DistillConfig) -> dict:
    kw = cfg.loss.as_kwargs()
    kw.pop("train_text", None)  # decided by the text-tower mode
    return kw


def _append_csv(path: Path, row: dict) -> None:
    new = not path.exists()
    with open(path, "a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(row))
        if new:
            w.writeheader()
        w.writerow(row)


def _flush_metrics(cache: str, run_id: int | None, rows: list[dict]) -> None:
    """Move logged rows into the manifest's long `metrics` table (opened briefly, then released)."""
    if run_id is None or not rows:
        return
    data = [(run_id, r["step"], name, value) for r in rows for name, value in r.items() if name != "step"]
    rows.clear()
    _record(cache, lambda man: man.con.executemany("INSERT INTO metrics VALUES (?, ?, ?, ?)", data))


def _plot(csv_path: Path, png: Path) -> None:
    """Loss curves of every term against the step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(csv_path) as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return
    steps = [int(r["step"]) for r in rows]
    fig, ax = plt.subplots(figsize=(7, 4))
    for name in rows[0]:
        if name in ("step", "epoch", "lr", "seconds"):
            continue
        ax.plot(steps, [float(r[name]) for r in rows], label=name, linewidth=2 if name == "total" else 1)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    ax.legend()
    ax.set_title("DIME-FM distillation losses")
    fig.tight_layout()
    fig.savefig(png, dpi=120)
    plt.close(fig)
