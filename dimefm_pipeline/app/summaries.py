"""Tables and plots of finished commands: what an encode, a mining, a distillation and an evaluation
produced (`dimefm info` and `sql`, which look into a cache, are `inspect`'s)."""

from __future__ import annotations

from pathlib import Path

from rich.table import Table

from dimefm_pipeline.core.progress import make_console

console = make_console()


def print_encode_summary(cfg, s) -> None:
    t = Table(title=f"encode {cfg.modality}s -> {cfg.cache}")
    # short headers: the table must fit an 80-column terminal
    for col in ("units", "cached before", "items", "errors", "duplicates", "truncated", "seconds", "items/s"):
        t.add_column(col, justify="right")
    rate = s.items / s.seconds if s.seconds else 0.0
    t.add_row(str(s.units_done), str(s.units_skipped), f"{s.items:,}", f"{s.errors:,}", f"{s.duplicates:,}",
              f"{s.truncated:,}", f"{s.seconds:.1f}", f"{rate:,.1f}")
    console.print(t)
    if s.import_check is not None:
        c = s.import_check
        console.print(f"{s.imported:,} of {s.items:,} rows taken from {cfg.embeddings_from} (the teacher agreed on {c.items} "
                      f"sampled items: lowest cosine {c.min_cosine:.4f}); the others encoded. Which ones: "
                      f"dimefm sql --cache {cfg.cache} \"SELECT imported, count(*) FROM items GROUP BY ALL\"",
                      highlight=False)
    if s.errors:
        console.print(f"[yellow]{s.errors} item(s) skipped; see: dimefm sql --cache {cfg.cache} \"SELECT * FROM errors\"")
    if s.other_files:
        kinds = ", ".join(f"{n:,} {ext}" for ext, n in s.other_files.items())
        console.print(f"not images, left out of the image folders: {kinds}")


def print_mine_summary(s) -> None:
    t = Table(title=f"pseudo pairs (mining {s.mining_id})")
    for c in ("images", "sentences", "k", "search", "mean top-1 cosine", "seconds", "blocks resumed"):
        t.add_column(c, justify="right")
    t.add_row(f"{s.images:,}", f"{s.texts:,}", str(s.k), s.index_type, f"{s.mean_top1:.3f}", f"{s.seconds:.1f}", str(s.blocks_resumed))
    console.print(t)


def print_distill_result(r) -> None:
    if r.finished_before:
        console.print(f"{r.out} is a finished run ({r.steps:,} of {r.steps:,} steps): nothing to resume, nothing "
                      "trained or written. To train longer, distill into a new --out, or --resume with more --steps "
                      "and --allow-schedule-change.", highlight=False)
        return
    t = Table(title=f"distilled student -> {r.out}")
    for c in ("steps", "seconds", *r.final):
        t.add_column(c, justify="right")
    t.add_row(str(r.steps), f"{r.seconds:.1f}", *[f"{v:.4f}" for v in r.final.values()])
    console.print(t)
    if r.config_path is None:
        console.print(f"stopped at step {r.steps}; continue with --resume")
        return
    console.print(f"load it with open_clip alone:\n"
                  f"  model, _, preprocess = open_clip.create_model_and_transforms('local-dir:{r.out}')\n"
                  f"  tokenizer = open_clip.get_tokenizer('local-dir:{r.out}')")


def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:.1f}"


def results_table(result: dict) -> Table:
    """Per-task zero-shot (top-1, top-5, mean per-class recall), linear probe and shifted accuracies
    (percent), with the suite means."""
    shifts = list(result.get("robustness", {}))
    title = f"{result['suite']} suite"
    if result.get("model"):
        title += f" | {result['model']['arch']} ({Path(str(result['model']['pretrained'])).name})"
    table = Table(title=title)
    table.add_column("task")
    table.add_column("classes", justify="right")
    table.add_column("chance", justify="right")
    table.add_column("zero-shot", justify="right")
    table.add_column("top-5", justify="right")
    table.add_column("class recall", justify="right")
    table.add_column("linear probe", justify="right")
    for s in shifts:
        table.add_column(s, justify="right")
    for name, row in result["tasks"].items():
        table.add_row(name, str(row["n_classes"]), _pct(row["chance"]), _pct(row["zero_shot"]),
                      _pct(row.get("zero_shot_acc5")), _pct(row.get("zero_shot_mean_per_class_recall")),
                      _pct(row.get("linear_probe")), *(_pct(row.get("robustness", {}).get(s)) for s in shifts))
    table.add_section()
    table.add_row("[bold]mean", "", "", f"[bold]{_pct(result['zero_shot_mean'])}", "", "",
                  f"[bold]{_pct(result['linear_probe_mean'])}", *(_pct(result["robustness"][s]) for s in shifts))
    return table


def retrieval_table(result: dict) -> Table | None:
    """Recall@k in both directions, or None when the suite has no retrieval set."""
    if not result.get("retrieval"):
        return None
    table = Table(title="retrieval (held-out captions)")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for k, v in result["retrieval"].items():
        table.add_row(k, _pct(v))
    return table
