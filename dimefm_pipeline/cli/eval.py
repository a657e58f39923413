"""`dimefm eval`: zero-shot, linear probe, robustness and retrieval of one model on a suite."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from dimefm_pipeline.cli import app


@app.command("eval")
def eval_command(
    model: str = typer.Option(..., "--model", help="world | world-hard | ARCH:PRETRAINED | ARCH (with --pretrained) | "
                              "model-config .json | student output folder."),
    pretrained: Optional[str] = typer.Option(None, "--pretrained", help="open_clip tag, checkpoint path, or random."),
    suite: str = typer.Option("world", "--suite", help="world, world-hard, a CLIP_benchmark WebDataset dataset (or a folder of "
                              "them), or a folder-per-class dataset with classnames.txt."),
    classes: Optional[str] = typer.Option(None, "--classes", help="Folder suite: class names from a file or imagenet "
                                          "(open_clip's), instead of DIR/classnames.txt."),
    templates: Optional[str] = typer.Option(None, "--templates", help="Folder suite: prompt templates from a file or "
                                            "openai / simple (open_clip's), instead of DIR/templates.txt."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the results as JSON here."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Write a bar-chart PNG here."),
    quick: bool = typer.Option(False, "--quick", help="A smaller world suite (a third of the images; a tenth for world-hard)."),
    no_probe: bool = typer.Option(False, "--no-probe", help="Skip the linear probes."),
    device: str = typer.Option("cpu", "--device", help="torch device, e.g. cuda."),
    batch_size: int = typer.Option(256, "--batch-size", help="Images per forward pass."),
) -> None:
    """Evaluate a model: zero-shot, linear probe, robustness to shifts, retrieval."""
    from dimefm_pipeline.app.plots import plot_results
    from dimefm_pipeline.app.summaries import results_table, retrieval_table
    from dimefm_pipeline.core import models
    from dimefm_pipeline.core.errors import DimefmError
    from dimefm_pipeline.core.progress import make_console
    from dimefm_pipeline.evaluation import evaluate
    from dimefm_pipeline.evaluation.clip_benchmark import clip_benchmark_suite, is_clip_benchmark_folder
    from dimefm_pipeline.evaluation.folder_suite import folder_suite
    from dimefm_pipeline.world.suite import SUITES, resolve_suite

    if suite in SUITES and (classes or templates):
        raise DimefmError("--classes and --templates are for a folder suite; the world suites have their own")
    chosen = suite
    if suite not in SUITES and Path(suite).is_dir():
        if not is_clip_benchmark_folder(suite):
            chosen = folder_suite(suite, classes=classes, templates=templates)
        elif classes or templates:
            raise DimefmError("--classes and --templates are for a folder-per-class suite; a CLIP_benchmark "
                              "dataset has its own classnames.txt and zeroshot_classification_templates.txt")
        else:
            chosen = clip_benchmark_suite(suite)
    chosen = resolve_suite(chosen, quick=quick)  # a wrong --suite fails before the model loads
    loaded = models.load(model, pretrained, device=device)
    result = evaluate(loaded, chosen, probe=not no_probe, batch_size=batch_size)
    console = make_console()
    console.print(results_table(result))
    table = retrieval_table(result)
    if table is not None:
        console.print(table)
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(result, indent=2) + "\n")
        console.print(f"results: {json_out}")
    if plot is not None:
        plot_results(result, plot)
        console.print(f"plot: {plot}")
