"""Rich output of a finished distillation run."""

from __future__ import annotations

from dimefm_pipeline.core.progress import make_console
from rich.table import Table


def print_distill_result(r) -> None:
    t = Table(title=f"distilled student -> {r.out}")
    for c in ("steps", "seconds", *r.final):
        t.add_column(c, justify="right")
    t.add_row(str(r.steps), f"{r.seconds:.1f}", *[f"{v:.4f}" for v in r.final.values()])
    c = make_console()
    c.print(t)
    if r.config_path is None:
        c.print(f"stopped at step {r.steps}; continue with --resume")
        return
    c.print(f"load it with open_clip alone:\n"
            f"  model, _, preprocess = open_clip.create_model_and_transforms('local-dir:{r.out}')\n"
            f"  tokenizer = open_clip.get_tokenizer('local-dir:{r.out}')")
