"""`dimefm mine` and `dimefm distill`: stage two."""

from __future__ import annotations

import sys
from typing import Optional

import typer

from dimefm_pipeline.cli import app


@app.command("mine")
def mine(
    cache: str = typer.Option(..., "--cache", help="Manifest file (.duckdb) with image and text embeddings."),
    k: int = typer.Option(8, "--k", min=1, help="Sentences kept per image."),
    exact_threshold: Optional[int] = typer.Option(None, help="Largest sentence count searched exactly (IVF beyond)."),
    nprobe: Optional[int] = typer.Option(None, help="IVF lists searched per query."),
    gpu: Optional[bool] = typer.Option(None, "--gpu/--cpu", help="faiss on the GPU (default: when faiss-gpu sees one)."),
):
    """Pseudo-pair mining: the top-k cached sentences of every cached image (faiss), stored in the manifest."""
    from dimefm_pipeline.progress import make_console
    from rich.table import Table

    from dimefm_pipeline.mine import mine_cache

    s = mine_cache(cache, k, exact_threshold=exact_threshold, nprobe=nprobe, use_gpu=gpu, command=" ".join(["dimefm", *sys.argv[1:]]))
    t = Table(title=f"pseudo pairs (mining {s.mining_id})")
    for c in ("images", "sentences", "k", "index", "mean top-1 cosine", "seconds"):
        t.add_column(c, justify="right")
    t.add_row(f"{s.images:,}", f"{s.texts:,}", str(s.k), s.index_type, f"{s.mean_top1:.3f}", f"{s.seconds:.1f}")
    make_console().print(t)


@app.command("distill")
def distill_cmd(
    cache: str = typer.Option(..., "--cache", help="Manifest file (.duckdb) of the stage-one cache."),
    out: str = typer.Option(..., "--out", help="Output folder (model config + weights, checkpoints, metrics)."),
    student: Optional[str] = typer.Option(None, "--student", help="open_clip name or model-config .json (default for the world teacher: dimefm-world-student)."),
    init: Optional[str] = typer.Option(None, "--init", help="Start the student from these weights."),
    text_tower: str = typer.Option("student", "--text-tower", help="student: distil both towers; teacher: keep the teacher's text tower."),
    batch_size: int = typer.Option(640, "--batch-size", help="Images per rank per step."),
    text_batch_size: Optional[int] = typer.Option(None, "--text-batch-size", help="Sentences per rank per step (default: --batch-size)."),
    epochs: float = typer.Option(100.0, "--epochs", help="Epochs over the cached images."),
    steps: Optional[int] = typer.Option(None, "--steps", help="Total steps (overrides --epochs)."),
    lr: float = typer.Option(8e-4, "--lr"),
    workers: int = typer.Option(4, "--workers", help="DataLoader workers (decode + augmentation)."),
    augment: str = typer.Option("reference", "--augment", help="reference | light | none."),
    text_filter: str = typer.Option("all", "--text-filter", help="all | mined (needs `dimefm mine`)."),
    mined_share: float = typer.Option(0.0, "--mined-share", help="Share of each batch's sentences drawn from mined neighbours."),
    w_vl: float = typer.Option(0.7, "--w-vl"),
    w_pvl: float = typer.Option(0.3, "--w-pvl"),
    w_udist: float = typer.Option(0.0, "--w-udist"),
    w_pvl_mined: float = typer.Option(0.0, "--w-pvl-mined", help="Weight of P-VL with mined sentences as pseudo captions."),
    tau_vl: float = typer.Option(1.0, "--tau-vl"),
    tau_pvl: float = typer.Option(3.0, "--tau-pvl"),
    tau_udist: float = typer.Option(7.0, "--tau-udist"),
    local_loss: bool = typer.Option(False, "--local-loss", help="Under DDP: rows of the local batch only."),
    checkpoint_every: int = typer.Option(1000, "--checkpoint-every"),
    log_every: int = typer.Option(10, "--log-every", help="Steps between metric rows (CSV, manifest, progress)."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the latest checkpoint in --out."),
    seed: int = typer.Option(0, "--seed"),
    precision: str = typer.Option("amp", "--precision", help="amp | bf16 | fp32 (CPU always runs fp32)."),
    verify_cache: str = typer.Option("sample", "--verify-cache", help="Before training, check every cache file: sample "
                                     "(16 blocks of 64 KiB each: 2.8 s per 100 GB measured) | full (every byte's sha256: "
                                     "126 s per 100 GB) | off."),
    item_timeout: float = typer.Option(60.0, "--item-timeout", help="Seconds to read and decode one image before it is "
                                       "skipped and recorded."),
):
    """Stage two: train a small student against the cached teacher embeddings (DIME-FM losses)."""
    from dimefm_pipeline.distill.config import DistillConfig
    from dimefm_pipeline.distill.report import print_distill_result
    from dimefm_pipeline.distill.train import distill

    cfg = DistillConfig.from_dict(dict(
        cache=cache, out=out, student=student, init=init, text_tower=text_tower, batch_size=batch_size,
        text_batch_size=text_batch_size, epochs=epochs, steps=steps, lr=lr, workers=workers, augment=augment,
        text_filter=text_filter, mined_share=mined_share, checkpoint_every=checkpoint_every, log_every=log_every, resume=resume, seed=seed,
        precision=precision, verify_cache=verify_cache, item_timeout=item_timeout, w_vl=w_vl, w_pvl=w_pvl, w_udist=w_udist, w_pvl_mined=w_pvl_mined, tau_vl=tau_vl,
        tau_pvl=tau_pvl, tau_udist=tau_udist, local_loss=local_loss,
    ))
    result = distill(cfg, command=" ".join(["dimefm", *sys.argv[1:]]))
    if result is not None:
        print_distill_result(result)
