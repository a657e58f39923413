"""`dimefm export clip-retrieval`: a cache's teacher embeddings in the layout other tools read."""

from __future__ import annotations

from pathlib import Path

import typer

from dimefm_pipeline.cli import app

export_app = typer.Typer(help="Write a cache's teacher embeddings for other tools.", no_args_is_help=True)
app.add_typer(export_app, name="export")


@export_app.command("clip-retrieval")
def clip_retrieval(
    cache: str = typer.Option(..., "--cache", help="Manifest file (.duckdb)."),
    out: Path = typer.Option(..., "--out", help="Output folder (created; must be empty or absent)."),
    modality: str = typer.Option("both", "--modality", help="image | text | both."),
    rows_per_partition: int = typer.Option(1_000_000, "--rows-per-partition", help="Rows per output file set "
                                           "(clip-retrieval's --write_batch_size).", min=1),
) -> None:
    """Write the teacher rows as clip-retrieval inference writes them: img_emb/img_emb_N.npy,
    text_emb/text_emb_N.npy and metadata/metadata_N.parquet (image_path: the item's key; caption: the
    sentence). clip-retrieval index builds a retrieval index from the folder; `dimefm encode
    --embeddings-from` reads it back."""
    from dimefm_pipeline.app.export import export_clip_retrieval
    from dimefm_pipeline.core.errors import DimefmError

    if modality not in ("image", "text", "both"):
        raise DimefmError(f"--modality must be image, text or both, not {modality!r}")
    chosen = ("image", "text") if modality == "both" else (modality,)
    rows = export_clip_retrieval(cache, out, chosen, rows_per_partition=rows_per_partition)
    typer.echo(", ".join(f"{n:,} {m} rows" for m, n in rows.items()) + f" written to {out}")
