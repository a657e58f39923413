"""`dimefm mine` and `dimefm distill`: stage two."""

from __future__ import annotations

import sys
from typing import Optional

import typer

from dimefm_pipeline.cli import app
from dimefm_pipeline.distill.config import DistillConfig
from dimefm_pipeline.core.loss_config import LossConfig


@app.command("mine")
def mine(
    cache: str = typer.Option(..., "--cache", help="Manifest file (.duckdb) with image and text embeddings."),
    k: int = typer.Option(8, "--k", min=1, help="Sentences kept per image."),
    engine: str = typer.Option("exact", "--engine", help="exact: every sentence, no index, memory bounded by the blocks "
                               "(float32 matmul on CPU, fp16 matmul + fp32 re-scoring on GPU) | ivf: a faiss IVF index (approximate)."),
    nprobe: Optional[int] = typer.Option(None, help="--engine ivf: lists searched per query."),
    gpu: Optional[bool] = typer.Option(None, "--gpu/--cpu", help="Where to search (default: the GPU when there is one)."),
    image_block: int = typer.Option(65536, "--image-block", min=1, help="Images per block: the grain of work, resume and ranks."),
    text_block: Optional[int] = typer.Option(None, "--text-block", min=1, help="Sentences per block of the exact search "
                                             "(default: 262,144 on CPU)."),
):
    """Pseudo-pair mining: the top-k cached sentences of every cached image, stored in the manifest.

    Under torchrun, ranks take disjoint image blocks; a killed mining resumes from its finished blocks."""
    from dimefm_pipeline.app.summaries import print_mine_summary
    from dimefm_pipeline.mine.run import mine_cache

    s = mine_cache(cache, k, engine=engine, nprobe=nprobe, use_gpu=gpu, image_block=image_block, text_block=text_block,
                   command=" ".join(["dimefm", *sys.argv[1:]]))
    if s is not None:
        print_mine_summary(s)


D = DistillConfig.__dataclass_fields__  # defaults shown in --help come from the config itself
L = LossConfig.__dataclass_fields__


def _d(name: str, loss: bool = False) -> str:
    return f"[default: {(L if loss else D)[name].default}]"


@app.command("distill")
def distill_cmd(
    cache: str = typer.Option(..., "--cache", help="Manifest file (.duckdb) of the stage-one cache."),
    out: str = typer.Option(..., "--out", help="Output folder: an open_clip hub model (open_clip_config.json, "
                            "open_clip_model.safetensors), checkpoints, metrics."),
    student: Optional[str] = typer.Option(None, "--student", help="open_clip name or model-config .json (default for the world teacher: dimefm-world-student)."),
    init: Optional[str] = typer.Option(None, "--init", help="Start the student from these weights."),
    text_tower: Optional[str] = typer.Option(None, "--text-tower", help=f"student: distil both towers; teacher: keep the teacher's text tower. {_d('text_tower')}"),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help=f"Images per rank per step. {_d('batch_size')}"),
    text_batch_size: Optional[int] = typer.Option(None, "--text-batch-size", help="Sentences per rank per step (default: --batch-size)."),
    epochs: Optional[float] = typer.Option(None, "--epochs", help=f"Epochs over the cached images. {_d('epochs')}"),
    steps: Optional[int] = typer.Option(None, "--steps", help="Total steps (overrides --epochs)."),
    lr: Optional[float] = typer.Option(None, "--lr", help=f"Peak learning rate. {_d('lr')}"),
    lr_min: Optional[float] = typer.Option(None, "--lr-min", help=f"Learning rate at the end of the cosine decay. {_d('min_lr')}"),
    warmup: Optional[float] = typer.Option(None, "--warmup", help=f"Linear warm-up: a share of all steps if below 1, else a number of steps. {_d('warmup')}"),
    warmup_lr: Optional[float] = typer.Option(None, "--warmup-lr", help=f"Learning rate the warm-up starts from. {_d('warmup_lr')}"),
    wd: Optional[float] = typer.Option(None, "--wd", help=f"AdamW weight decay (not on 1-D parameters, biases, embeddings). {_d('weight_decay')}"),
    beta1: Optional[float] = typer.Option(None, "--beta1", help="AdamW beta1. [default: 0.9]"),
    beta2: Optional[float] = typer.Option(None, "--beta2", help="AdamW beta2. [default: 0.999]"),
    eps: Optional[float] = typer.Option(None, "--eps", help=f"AdamW epsilon. {_d('eps')}"),
    grad_clip_norm: Optional[float] = typer.Option(None, "--grad-clip-norm", help="Clip the gradient norm to this (default: no clipping, as the reference)."),
    workers: Optional[int] = typer.Option(None, "--workers", help=f"DataLoader workers (read, decode, augment). {_d('workers')}"),
    augment: Optional[str] = typer.Option(None, "--augment", help="reference | light | none: augmentation drawn afresh on "
                                          "the fly every epoch (the reference's behaviour); the teacher target stays the "
                                          "un-augmented image's. [default: reference, or none with cached views]"),
    views: Optional[str] = typer.Option(None, "--views", help="cached: each epoch, each image trains on one of the views "
                                        "stage one cached (encode --views K), its crop and flip replayed exactly, so input "
                                        "and target show the same pixels | first: view 0 only (then --augment applies) | "
                                        "auto: cached when the cache has views. [default: auto]"),
    text_filter: Optional[str] = typer.Option(None, "--text-filter", help="all | mined (needs `dimefm mine`)."),
    mined_share: Optional[float] = typer.Option(None, "--mined-share", help="Share of each batch's sentences drawn from mined neighbours."),
    w_vl: Optional[float] = typer.Option(None, "--w-vl", help=_d("w_vl", True)),
    w_pvl: Optional[float] = typer.Option(None, "--w-pvl", help=_d("w_pvl", True)),
    w_udist: Optional[float] = typer.Option(None, "--w-udist", help=_d("w_udist", True)),
    w_pvl_mined: Optional[float] = typer.Option(None, "--w-pvl-mined", help="Weight of P-VL with mined sentences as pseudo captions."),
    tau_vl: Optional[float] = typer.Option(None, "--tau-vl", help=_d("tau_vl", True)),
    tau_pvl: Optional[float] = typer.Option(None, "--tau-pvl", help=_d("tau_pvl", True)),
    tau_udist: Optional[float] = typer.Option(None, "--tau-udist", help=_d("tau_udist", True)),
    local_loss: bool = typer.Option(False, "--local-loss", help="Under DDP: rows of the local batch only."),
    checkpoint_every: Optional[int] = typer.Option(None, "--checkpoint-every", help=_d("checkpoint_every")),
    log_every: Optional[int] = typer.Option(None, "--log-every", help=f"Steps between metric rows (CSV, manifest, progress). {_d('log_every')}"),
    resume: bool = typer.Option(False, "--resume", help="Continue from the latest checkpoint in --out (same schedule)."),
    allow_schedule_change: bool = typer.Option(False, "--allow-schedule-change", help="With --resume: accept a schedule "
                                               "(steps, epochs, lr, warm-up, batch sizes, seed) other than the checkpoint's."),
    stop_after: Optional[int] = typer.Option(None, "--stop-after", help="End this invocation after N steps with a checkpoint (time-boxed jobs)."),
    seed: Optional[int] = typer.Option(None, "--seed", help=_d("seed")),
    precision: Optional[str] = typer.Option(None, "--precision", help="amp: fp16 autocast + grad scaler on CUDA, fp32 on CPU; bf16: bf16 autocast on CUDA and on CPU; fp32. [default: amp]"),
    tensorboard: Optional[str] = typer.Option(None, "--tensorboard", help="Also write the loss terms and learning rate as TensorBoard scalars to this folder."),
    verify_cache: Optional[str] = typer.Option(None, "--verify-cache", help="Before training, check every cache file: sample "
                                               "(16 blocks of 64 KiB each: 2.8 s per 100 GB measured) | full (every byte's sha256: "
                                               "126 s per 100 GB) | off. [default: sample]"),
    item_timeout: Optional[float] = typer.Option(None, "--item-timeout", help=f"Seconds to read and decode one image before it is skipped and recorded. {_d('item_timeout')}"),
):
    """Stage two: train a small student against the cached teacher embeddings (DIME-FM losses)."""
    given = dict(
        cache=cache, out=out, student=student, init=init, text_tower=text_tower, batch_size=batch_size,
        text_batch_size=text_batch_size, epochs=epochs, steps=steps, lr=lr, min_lr=lr_min, warmup=warmup,
        warmup_lr=warmup_lr, weight_decay=wd, eps=eps, grad_clip=grad_clip_norm, workers=workers, augment=augment, views=views,
        text_filter=text_filter, mined_share=mined_share, checkpoint_every=checkpoint_every, log_every=log_every,
        resume=resume, allow_schedule_change=allow_schedule_change, stop_after=stop_after, seed=seed, precision=precision,
        tensorboard=tensorboard, verify_cache=verify_cache, item_timeout=item_timeout, w_vl=w_vl, w_pvl=w_pvl,
        w_udist=w_udist, w_pvl_mined=w_pvl_mined, tau_vl=tau_vl, tau_pvl=tau_pvl, tau_udist=tau_udist, local_loss=local_loss,
    )
    if beta1 is not None or beta2 is not None:
        default = D["betas"].default
        given["betas"] = (default[0] if beta1 is None else beta1, default[1] if beta2 is None else beta2)
    cfg = DistillConfig.from_dict({k: v for k, v in given.items() if v is not None})  # option mistakes: before torch loads
    from dimefm_pipeline.app.summaries import print_distill_result
    from dimefm_pipeline.distill.train import distill

    result = distill(cfg, command=" ".join(["dimefm", *sys.argv[1:]]))
    if result is not None:
        print_distill_result(result)
