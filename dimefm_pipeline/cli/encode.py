"""`dimefm encode images|texts`: stage one."""

from __future__ import annotations

import sys
from typing import List, Optional

import typer

from dimefm_pipeline.cli import app

encode_app = typer.Typer(help="Stage one: run the teacher once over image or sentence sources and cache fp16 embeddings.", no_args_is_help=True)
app.add_typer(encode_app, name="encode")

CacheOpt = typer.Option(..., "--cache", help="Manifest file (.duckdb); created if missing.")
CacheDirOpt = typer.Option(None, "--cache-dir", help="Shard folder (default: beside the manifest, named after it).")
TeacherOpt = typer.Option(None, "--teacher", help="open_clip model name, model-config .json, or `world` (default: the manifest's teacher).")
PretrainedOpt = typer.Option(None, "--pretrained", help="open_clip tag, checkpoint path, or `random` (tests and benchmarks only).")
BatchOpt = typer.Option(256, "--batch-size", min=1, help="Items per teacher forward.")
WorkersOpt = typer.Option(4, "--workers", min=0, help="DataLoader worker processes for reading, decoding and transforms.")
ShardOpt = typer.Option(65_536, "--shard-size", min=1, help="Maximum rows per shard file (also the unit of resume).")
PrecisionOpt = typer.Option("auto", "--precision", help="auto | fp32 | fp16 | bf16 (autocast; CUDA only).")
TimeoutOpt = typer.Option(60.0, "--item-timeout", help="Seconds to read and decode one item before it is skipped and recorded.")


def _run(modality: str, sources, cache, cache_dir, teacher, pretrained, batch_size, workers, shard_size, precision, options,
         item_timeout, views=1, view_augment="reference", view_seed=0):
    from dimefm_pipeline.encode.config import EncodeConfig
    from dimefm_pipeline.encode.run import encode
    from dimefm_pipeline.app.summaries import print_encode_summary

    cfg = EncodeConfig(modality, tuple(sources), cache, cache_dir, teacher, pretrained, batch_size, workers,
                       shard_size, precision, {k: v for k, v in options.items() if v is not None}, item_timeout, views,
                       view_augment, view_seed)
    summary = encode(cfg, command=" ".join(["dimefm", *sys.argv[1:]]))
    if summary is not None:
        print_encode_summary(cfg, summary)


@encode_app.command("images")
def encode_images(
    sources: List[str] = typer.Argument(..., help="Image folders, WebDataset tars (braces/globs ok), Parquet or TSV (key, base64) files."),
    cache: str = CacheOpt,
    cache_dir: Optional[str] = CacheDirOpt,
    teacher: Optional[str] = TeacherOpt,
    pretrained: Optional[str] = PretrainedOpt,
    batch_size: int = BatchOpt,
    workers: int = WorkersOpt,
    shard_size: int = ShardOpt,
    precision: str = PrecisionOpt,
    item_timeout: float = TimeoutOpt,
    views: int = typer.Option(1, "--views", min=1, help="Teacher embeddings cached per image: view 0 is the image as the "
                              "teacher's preprocessing sees it, views 1..K-1 seeded crops and flips whose parameters are "
                              "recorded, so `dimefm distill` trains on exactly those crops (--views cached)."),
    view_augment: str = typer.Option("reference", "--view-augment", help="How views 1..K-1 are drawn: reference "
                                     "(crops of 8-100% of the area, flip) | light (50-100%, flip) | a JSON file "
                                     "{\"scale\": [a, b], \"ratio\": [a, b], \"flip\": p}."),
    view_seed: int = typer.Option(0, "--view-seed", help="Seed of the views' crops and flips."),
    image_column: Optional[str] = typer.Option(None, help="Parquet column with image bytes or paths (default: guessed)."),
    key_column: Optional[str] = typer.Option(None, help="Parquet column with item keys (default: key/__key__/id, else row number)."),
):
    """Encode images with the teacher's image tower."""
    _run("image", sources, cache, cache_dir, teacher, pretrained, batch_size, workers, shard_size, precision,
         {"image_column": image_column, "key_column": key_column}, item_timeout, views, view_augment, view_seed)


@encode_app.command("texts")
def encode_texts(
    sources: List[str] = typer.Argument(..., help="Sentence files: .txt (one per line), .jsonl, .parquet, .tsv (key, text or JSON with captions)."),
    cache: str = CacheOpt,
    cache_dir: Optional[str] = CacheDirOpt,
    teacher: Optional[str] = TeacherOpt,
    pretrained: Optional[str] = PretrainedOpt,
    batch_size: int = BatchOpt,
    workers: int = WorkersOpt,
    shard_size: int = ShardOpt,
    precision: str = PrecisionOpt,
    item_timeout: float = TimeoutOpt,
    text_field: Optional[str] = typer.Option(None, help="JSONL field holding the sentence (default: text)."),
    key_field: Optional[str] = typer.Option(None, help="JSONL field holding the key (default: line number)."),
    text_column: Optional[str] = typer.Option(None, help="Parquet column holding the sentence (default: text)."),
    key_column: Optional[str] = typer.Option(None, help="Parquet column with keys (default: key/__key__/id, else row number)."),
):
    """Encode sentences with the teacher's text tower (exact duplicates are encoded once)."""
    _run("text", sources, cache, cache_dir, teacher, pretrained, batch_size, workers, shard_size, precision,
         {"text_field": text_field, "key_field": key_field, "text_column": text_column, "key_column": key_column},
         item_timeout)
