"""`dimefm encode images|texts`: stage one. Their options are the fields of `EncodeConfig` (defaults,
help texts and flags are written there), plus the column and field names of each modality's sources."""

from __future__ import annotations

from typing import List, Optional

import typer

from dimefm_pipeline.cli import app, command_line
from dimefm_pipeline.cli.options import config_options
from dimefm_pipeline.encode.config import AddTeacherConfig, EncodeConfig
from dimefm_pipeline.formats.base import TEXT_FIELDS

encode_app = typer.Typer(help="Stage one: run the teacher once over image or sentence sources and cache fp16 embeddings.", no_args_is_help=True)
app.add_typer(encode_app, name="encode")

IMAGE_OPTIONS = ("views", "view_augment", "view_seed", "max_image_bytes", "max_image_pixels")  # images only


def _run(modality: str, sources, given: dict, source_options: dict):
    from dimefm_pipeline.app.summaries import print_encode_summary
    from dimefm_pipeline.encode.run import encode

    options = {k: v for k, v in source_options.items() if v is not None}
    cfg = EncodeConfig(modality, tuple(sources), **given, source_options=options)
    summary = encode(cfg, command=command_line())
    if summary is not None:
        print_encode_summary(cfg, summary)


@encode_app.command("images")
@config_options(EncodeConfig)
def encode_images(
    given: dict,
    sources: List[str] = typer.Argument(..., help="Image folders, WebDataset tars (braces/globs ok), Parquet or TSV (key, base64) files."),
    image_column: Optional[str] = typer.Option(None, help="Parquet column with image bytes or paths (default: guessed)."),
    key_column: Optional[str] = typer.Option(None, help="Parquet column with item keys (default: key/__key__/id, else row number)."),
):
    """Encode images with the teacher's image tower."""
    _run("image", sources, given, {"image_column": image_column, "key_column": key_column})


@encode_app.command("texts")
@config_options(EncodeConfig, skip=IMAGE_OPTIONS)
def encode_texts(
    given: dict,
    sources: List[str] = typer.Argument(..., help="Sentence files: .txt (one per line), .jsonl, .parquet, .tsv (key, text or JSON with captions)."),
    text_field: Optional[str] = typer.Option(None, help=f"JSONL field holding the sentence (default: the first of "
                                             f"{', '.join(TEXT_FIELDS)} that the first record has)."),
    key_field: Optional[str] = typer.Option(None, help="JSONL field holding the key (default: line number)."),
    text_column: Optional[str] = typer.Option(None, help=f"Parquet column holding the sentence (default: the first of "
                                              f"{', '.join(TEXT_FIELDS)} that the file has)."),
    key_column: Optional[str] = typer.Option(None, help="Parquet column with keys (default: key/__key__/id, else row number)."),
):
    """Encode sentences with the teacher's text tower (exact duplicates are encoded once)."""
    _run("text", sources, given, {"text_field": text_field, "key_field": key_field, "text_column": text_column,
                                  "key_column": key_column})


@encode_app.command("teacher")
@config_options(AddTeacherConfig)
def encode_teacher(given: dict):
    """Add a teacher to a cache: encode every cached image view and sentence again with it, into
    companion shards aligned row for row (for distill --teachers)."""
    from dimefm_pipeline.encode.teachers import add_teacher

    done = add_teacher(AddTeacherConfig(**given), command=command_line())
    if done is not None:
        what = "already had every row" if done["already"] else f"{done['rows']:,} rows in {done['shards']} shard(s)"
        typer.echo(f"teacher {done['teacher']!r} (id {done['teacher_id']}): {what}, {done['seconds']:.1f} s")
