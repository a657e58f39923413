"""`dimefm world`: corpora from the embedded world, and training its teacher."""

from __future__ import annotations

from pathlib import Path

import typer

from dimefm_pipeline.cli import app
from dimefm_pipeline.cli.options import config_options
from dimefm_pipeline.world.teacher import TeacherTrainConfig

world_app = typer.Typer(help="The embedded synthetic world: image and sentence corpora, and its teacher.",
                        no_args_is_help=True)
app.add_typer(world_app, name="world")


def _with_progress(total: int, desc: str, fn):
    """Run `fn(on_progress)` under a progress display of `total` items."""
    from dimefm_pipeline.core.progress import progress_bar

    with progress_bar(transient=False) as bar:
        task = bar.add_task(desc, total=total)
        return fn(lambda k: bar.advance(task, k))


@world_app.command("images")
def images(
    out: Path = typer.Argument(..., help="Output folder (created; must be empty or absent)."),
    n: int = typer.Option(..., "--n", help="Number of images."),
    fmt: str = typer.Option("folder", "--format", help="folder (PNG sub-folders) or webdataset (.tar shards)."),
    seed: int = typer.Option(0, "--seed", help="Corpus seed: the same seed gives the same bytes."),
    per_shard: int = typer.Option(1000, "--per-shard", help="Images per sub-folder or tar shard."),
    world: str = typer.Option("easy", "--world", help="easy (six tasks) or hard (docs/world.md)."),
) -> None:
    """Write an image corpus of random world scenes."""
    from dimefm_pipeline.world.corpus import ImageCorpusConfig, write_images

    written = _with_progress(n, "world images", lambda advance: write_images(
        out, ImageCorpusConfig(n=n, fmt=fmt, seed=seed, per_shard=per_shard, world=world), on_progress=advance))
    typer.echo(f"wrote {n} images in {len(written)} {'shards' if fmt == 'webdataset' else 'folders'} under {out}")


@world_app.command("texts")
def texts(
    out: Path = typer.Argument(..., help="Output file (.txt or .jsonl); must not exist."),
    n: int = typer.Option(..., "--n", help="Number of sentences."),
    fmt: str = typer.Option("txt", "--format", help="txt (one sentence per line) or jsonl ({key, text})."),
    seed: int = typer.Option(0, "--seed", help="Corpus seed: the same seed gives the same bytes."),
    distractor_share: float = typer.Option(0.3, "--distractor-share", help="Share of non-visual sentences."),
    world: str = typer.Option("easy", "--world", help="easy (six tasks) or hard (docs/world.md)."),
) -> None:
    """Write a sentence corpus, sampled independently of any image corpus."""
    from dimefm_pipeline.world.corpus import TextCorpusConfig, write_texts

    _with_progress(n, "world sentences", lambda advance: write_texts(
        out, TextCorpusConfig(n=n, fmt=fmt, seed=seed, distractor_share=distractor_share, world=world),
        on_progress=advance))
    typer.echo(f"wrote {n} sentences to {out}")


@world_app.command("train-teacher")
@config_options(TeacherTrainConfig)
def train_teacher(
    given: dict,
    out: Path = typer.Option(Path("runs/world-teacher"), "--out", help="Run folder: weights, config, loss curve."),
    install: bool = typer.Option(False, "--install", help="Also copy the weights into the package as the shipped teacher."),
) -> None:
    """Train a world teacher with the CLIP loss on freshly generated paired world data.

    With no other options this is the recipe of the world's shipped teacher (docs/world-teacher.md).
    """
    import shutil

    from dimefm_pipeline.core.models import SHIPPED_TEACHERS
    from dimefm_pipeline.world.teacher import train_teacher as run

    summary = run(TeacherTrainConfig(**given), out)
    typer.echo(f"trained in {summary['seconds']:.0f} s, final loss {summary['final_loss']:.4f}: {summary['weights']}")
    if install:
        shipped = SHIPPED_TEACHERS["world-hard" if given.get("world") == "hard" else "world"][1]
        shipped.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(summary["weights"], shipped)
        typer.echo(f"installed as {shipped}")
