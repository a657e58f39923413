"""Training the world teacher: a small open_clip model learned with the CLIP loss on paired world data.

Each step draws a fresh batch of scenes from the seeded stream, renders them and captions them, so
the run needs no dataset on disk and is reproducible from its config. The loss curve is written as
CSV while training runs (so a long run can be watched) and as a PNG at the end.
"""

from __future__ import annotations

import csv
import json
import math
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from dimefm_pipeline.core import models
from dimefm_pipeline.core.errors import DimefmError
from dimefm_pipeline.core.optim import cosine, param_groups
from dimefm_pipeline.core.options import option
from dimefm_pipeline.core.weights import KEY as TOKEN_TABLE
from dimefm_pipeline.world.captions import CaptionStyle
from dimefm_pipeline.world.teacher_data import GROUP_CAPTIONS, paired_batch, quick_zero_shot

# Each world's shipped-teacher recipe: the values of the fields a run leaves at None.
RECIPES = {
    "easy": {"steps": 3000, "batch_size": 128, "lr": 5e-4, "group_share": 0.5,
             # shape and position are the slow ones
             "edit_weights": (3.0, 1.0, 1.0, 2.0, 1.0)},
    "hard": {"steps": 10000, "batch_size": 128, "lr": 5e-4, "group_share": 0.5,
             "edit_weights": (2.0, 1.0, 1.0, 2.0, 2.0, 2.0, 1.0)},  # world.hard.edits.EDITS order
}
WEIGHTS_NAME = {"easy": "world-teacher.safetensors", "hard": "world-hard-teacher.safetensors"}


@dataclass(frozen=True)
class TeacherTrainConfig:
    """Hyper-parameters of the teacher run; saved next to the weights. The defaults are the shipped
    teacher's recipe; the fields with help texts are options of `dimefm world train-teacher`."""

    arch: str = "dimefm-world-teacher"  # open_clip config name (registered from the package)
    world: str = option("easy", "Which built-in world: easy (six tasks) or hard (docs/world.md).")
    steps: int | None = option(None, "Optimiser steps (default: the world's shipped-teacher recipe).")
    # all in-batch negatives; more steps beat bigger batches here
    batch_size: int | None = option(None, "Image-caption pairs per step (default: the recipe's).")
    # (AdamW); 1e-3 was behind on shape and position at every check of the easy world
    lr: float | None = option(None, "Peak learning rate (default: the recipe's).")
    min_lr: float = 1e-5  # end of the cosine schedule
    warmup: int = 100  # linear warm-up steps
    group_share: float | None = None  # share of each batch made of edit groups (hard negatives)
    group_size: int = 4  # a scene and its minimal edits
    group_captions: CaptionStyle = GROUP_CAPTIONS  # caption detail inside edit groups (easy world)
    one_attribute: float = 0.0  # share of the independent scenes' captions that name one kind of attribute only (easy)
    edit_weights: tuple[float, ...] | None = None  # odds of each kind of edit, in the world's `EDITS` order
    init_logit_scale: float = 50.0  # CLIP's 1/0.07 = 14.3 is learnt up over ~10^5 steps; a short run must start sharp
    weight_decay: float = 0.1  # not applied to gains, biases, embeddings and the logit scale
    seed: int = option(0, "Seed of the data stream and initialisation.")
    bf16: bool = True  # CPU autocast: bfloat16 matmuls run on AMX/AVX-512 units where present
    checkpoint_every: int = 50  # steps between resumable checkpoints (weights + optimiser state)
    eval_every: int = 250  # steps between quick zero-shot checks on the world suite (0: never)
    # one avoids spin-wait losses on a shared CPU
    threads: int = option(1, "torch threads (0: torch's default).")


def resolved(cfg: TeacherTrainConfig) -> TeacherTrainConfig:
    """`cfg` with every field left at None taken from its world's recipe."""
    if cfg.world not in RECIPES:
        raise DimefmError(f"unknown world {cfg.world!r}: use one of {', '.join(RECIPES)}")
    return replace(cfg, **{k: v for k, v in RECIPES[cfg.world].items() if getattr(cfg, k) is None})


def lr_at(step: int, cfg: TeacherTrainConfig) -> float:
    """Linear warm-up, then cosine decay to `min_lr`."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    return cosine((step - cfg.warmup) / max(1, cfg.steps - cfg.warmup), cfg.lr, cfg.min_lr)


def train_teacher(cfg: TeacherTrainConfig, out: Path, *, progress: bool = True, log=print) -> dict:
    """Train the teacher; write weights, model config, run config and loss curve under `out`."""
    import torch

    cfg = resolved(cfg)
    from dimefm_pipeline.core.progress import progress_bar

    out.mkdir(parents=True, exist_ok=True)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    run = _start(cfg, out, log)
    model = run.model
    csv_file = open(out / "loss.csv", "w", newline="")
    writer = csv.writer(csv_file)
    writer.writerow(["step", "loss", "lr", "logit_scale", "seconds", "zero_shot_mean"])
    writer.writerows(run.rows)
    start = time.time() - run.seconds
    model.train()
    with progress_bar(progress, transient=False) as bar:
        job = bar.add_task(f"train {cfg.world} world teacher", total=cfg.steps, completed=run.first)
        for step in range(run.first, cfg.steps):
            lr, loss = _step(cfg, run, step)
            # 4. log, and now and then a quick zero-shot check
            zs = ""
            last = step == cfg.steps - 1
            if cfg.eval_every and ((step + 1) % cfg.eval_every == 0 or last):
                zs = _check(cfg, run, out, step, loss, log)
            row = [step + 1, round(loss.item(), 5), lr, round(model.logit_scale.exp().item(), 3),
                   round(time.time() - start, 1), zs]
            run.rows.append(row)
            writer.writerow(row)
            csv_file.flush()
            if cfg.checkpoint_every and (step + 1) % cfg.checkpoint_every == 0 and not last:
                _save_resume(out / "resume.pt", cfg, model, run.opt, run.rows, time.time() - start)
            bar.update(job, advance=1, description=f"train {cfg.world} world teacher (loss {loss.item():.3f})")
    csv_file.close()
    seconds = time.time() - start
    model.eval()
    _save(model, out / WEIGHTS_NAME[cfg.world], cfg, cfg.steps, run.initial_tokens)
    (out / "checkpoint.safetensors").unlink(missing_ok=True)
    (out / "resume.pt").unlink(missing_ok=True)
    plot_loss(run.rows, out / "loss.png")
    summary = {"seconds": round(seconds, 1), "final_loss": run.rows[-1][1], "steps": cfg.steps,
               "weights": str(out / WEIGHTS_NAME[cfg.world])}
    (out / "train_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _start(cfg: TeacherTrainConfig, out: Path, log) -> SimpleNamespace:
    """The model (from the factory, seeded), its optimiser and loss, the run's config files, and the
    state of an interrupted run of the same config."""
    import torch
    from open_clip.loss import ClipLoss

    model, preprocess, tokenizer = models.create(cfg.arch, seed=cfg.seed)
    with torch.no_grad():
        model.logit_scale.fill_(math.log(cfg.init_logit_scale))
    model_cfg = models.model_config(cfg.arch)[1]
    run = SimpleNamespace(model=model, preprocess=preprocess, tokenizer=tokenizer, model_cfg=model_cfg,
                          initial_tokens=model.state_dict()[TOKEN_TABLE].detach().clone(),
                          size=models.image_size(model_cfg),
                          mean=torch.tensor(model.visual.preprocess_cfg["mean"]).view(1, 3, 1, 1),
                          std=torch.tensor(model.visual.preprocess_cfg["std"]).view(1, 3, 1, 1),
                          opt=torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=(0.9, 0.98), eps=1e-6),
                          loss_fn=ClipLoss())
    (out / "train_config.json").write_text(json.dumps(asdict(cfg), indent=2) + "\n")
    (out / f"{cfg.arch}.json").write_text(json.dumps(model_cfg, indent=4) + "\n")
    # The batch of a step is a function of the step alone, so a resumed run equals an uninterrupted one.
    run.rows, run.first, run.seconds = _resume(out / "resume.pt", cfg, model, run.opt, log)
    return run


def _step(cfg: TeacherTrainConfig, run: SimpleNamespace, step: int):
    """One optimiser step: (learning rate, loss)."""
    import torch
    from torch.nn.attention import SDPBackend, sdpa_kernel

    model, opt = run.model, run.opt
    lr = lr_at(step, cfg)  # 1. schedule
    for group in opt.param_groups:
        group["lr"] = lr
    imgs, caps = paired_batch(step, cfg, run.size)  # 2. data: a fresh seeded batch of pairs
    x = (torch.from_numpy(imgs).permute(0, 3, 1, 2).float() / 255.0 - run.mean) / run.std
    tokens = run.tokenizer(caps)
    # 3. forward, backward, step
    # The math attention kernel: CPU flash-attention backward is slow at these short sequences.
    with sdpa_kernel(SDPBackend.MATH):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.bf16):
            img_f, txt_f, scale = model(x, tokens)[:3]
            loss = run.loss_fn(img_f.float(), txt_f.float(), scale.float())
        opt.zero_grad(set_to_none=True)
        loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    with torch.no_grad():  # CLIP caps the temperature at 100
        model.logit_scale.clamp_(0, math.log(100))
    return lr, loss


def _check(cfg: TeacherTrainConfig, run: SimpleNamespace, out: Path, step: int, loss, log) -> float:
    """The quick zero-shot check (its mean), with a checkpoint of the weights checked."""
    import torch

    model = run.model
    model.eval()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.bf16):
        scores = quick_zero_shot(model, run.preprocess, run.tokenizer, int(run.model_cfg["embed_dim"]), cfg.world)
    model.train()
    zs = round(float(np.mean(list(scores.values()))), 4)
    _save(model, out / "checkpoint.safetensors", cfg, step + 1, run.initial_tokens)
    log(f"step {step + 1}: loss {loss.item():.4f} zero-shot "
        + " ".join(f"{k}={v:.3f}" for k, v in scores.items()) + f" mean={zs:.3f}")
    return zs


def _save_resume(path: Path, cfg: TeacherTrainConfig, model, opt, rows: list, seconds: float) -> None:
    """Everything needed to continue exactly: fp32 weights, optimiser moments, the log so far."""
    import torch

    tmp = path.with_name(path.name + ".tmp")
    torch.save({"config": json.dumps(asdict(cfg)), "model": model.state_dict(), "opt": opt.state_dict(),
                "rows": rows, "seconds": seconds}, tmp)
    tmp.rename(path)


def _resume(path: Path, cfg: TeacherTrainConfig, model, opt, log) -> tuple[list, int, float]:
    """(rows, first step, seconds already spent) from an interrupted run of the same config, if any."""
    import torch

    if not path.exists():
        return [], 0, 0.0
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state["config"] != json.dumps(asdict(cfg)):
        raise DimefmError(f"{path} belongs to a run with another config; remove it or use another --out")
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["opt"])
    rows = [list(r) for r in state["rows"]]
    log(f"resuming at step {len(rows)} from {path}")
    return rows, len(rows), float(state["seconds"])


def _save(model, path: Path, cfg: TeacherTrainConfig, step: int, initial_tokens) -> None:
    """fp16 weights (the shipped form; loaders cast them back to fp32), written then renamed.

    Token-table rows no caption ever reached are still at their initial values; they are stored in
    the compact form of `dimefm_pipeline.core.weights` (about 19 MB less for the world teacher).
    """
    import torch
    from safetensors.torch import save_file

    from dimefm_pipeline.core.weights import compact

    state = {k: v.detach().to(torch.float16).contiguous() for k, v in model.state_dict().items()}
    state = compact(state, initial_tokens, cfg.seed)
    tmp = path.with_name(path.name + ".tmp")
    save_file(state, str(tmp), metadata={"arch": cfg.arch, "seed": str(cfg.seed), "step": str(step)})
    tmp.rename(path)


def plot_loss(rows: list[list], path: Path) -> None:
    """Loss (and the quick zero-shot mean, where measured) against step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r[0] for r in rows]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(steps, [r[1] for r in rows], lw=0.8, label="CLIP loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title("world teacher training")
    zs = [(r[0], r[5]) for r in rows if r[5] != ""]
    if zs:
        ax2 = ax.twinx()
        ax2.plot([s for s, _ in zs], [v for _, v in zs], "o-", color="tab:orange", label="zero-shot mean (quick)")
        ax2.set_ylim(0, 1)
        ax2.set_ylabel("zero-shot mean")
        ax2.legend(loc="center right")
    ax.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
