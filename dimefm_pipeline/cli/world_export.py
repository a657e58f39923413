"""`dimefm world export-teacher` and `export-suite`: the shipped teachers and the built-in benchmark in
the formats CLIP_benchmark reads (an open_clip hub folder; WebDataset classification datasets)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from dimefm_pipeline.cli.world import _with_progress, world_app
from dimefm_pipeline.core.models import SHIPPED_TEACHERS


@world_app.command("export-teacher")
def export_teacher(
    out: Path = typer.Option(..., "--out", help="Output folder (created; must be empty or absent)."),
    model: str = typer.Option("world", "--model", help=f"Which shipped teacher: {' | '.join(SHIPPED_TEACHERS)}."),
) -> None:
    """Write a shipped teacher as an open_clip hub folder, as a distilled student is written.

    open_clip loads it with `create_model_and_transforms("local-dir:OUT")`, CLIP_benchmark with
    `--model_type open_clip --model local-dir:OUT`.
    """
    from dimefm_pipeline.app.export import export_teacher as run

    config, weights = run(model, out)
    typer.echo(f"wrote the {model} teacher to {out}: {config.name}, {weights.name}")


@world_app.command("export-suite")
def export_suite(
    out: Path = typer.Option(..., "--out", help="Output folder (created; must be empty or absent)."),
    suite: str = typer.Option("world", "--suite", help="world, world-hard, or a dataset folder `dimefm eval --suite` reads."),
    n_test: Optional[int] = typer.Option(None, "--n-test", help="Test images per task (default: all; the world "
                                         "suite has 1,000)."),
    shifts: bool = typer.Option(False, "--shifts", help="Also write each shifted test set as a dataset."),
) -> None:
    """Write a suite's test sets as CLIP_benchmark WebDataset datasets, one per task.

    Run CLIP_benchmark on them with `--dataset wds/NAME --dataset_root OUT/NAME`, or `dimefm eval
    --suite OUT` on the whole folder.
    """
    import dataclasses

    from dimefm_pipeline.core.errors import DimefmError
    from dimefm_pipeline.world.suite import resolve_suite
    from dimefm_pipeline.evaluation.clip_benchmark import export_size
    from dimefm_pipeline.evaluation.clip_benchmark import export_suite as run
    from dimefm_pipeline.world.hard.suite import HardSuiteConfig
    from dimefm_pipeline.world.suite import WorldSuiteConfig

    if n_test is not None and n_test < 1:
        raise DimefmError("--n-test must be at least 1")
    cfg = HardSuiteConfig() if suite == "world-hard" else WorldSuiteConfig()
    if n_test is not None:  # a world suite draws only the scenes it writes
        cfg = dataclasses.replace(cfg, n_test=min(n_test, cfg.n_test))
    chosen = resolve_suite(suite, cfg)
    total = export_size(chosen, limit=n_test, shifts=shifts)
    names = _with_progress(total, "export", lambda advance: run(chosen, out, limit=n_test, shifts=shifts,
                                                                on_progress=advance))
    typer.echo(f"wrote {len(names)} datasets under {out}: {', '.join(names)}")
