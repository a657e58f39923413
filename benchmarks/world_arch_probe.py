"""How fast can an image tower learn the world's shapes? The measurement behind the world model configs.

Each candidate image tower (an open_clip vision config, random init) gets a linear head and is trained
with plain cross-entropy to name the shape of single-object world images (8 classes), on fresh seeded
batches; accuracy on 400 held-out images is printed every 50 steps. Supervised learning is the easy
case: a tower that cannot learn shape here in a few hundred steps will not learn it from captions
within a CPU budget either.

    .venv/bin/python benchmarks/world_arch_probe.py                      # all candidates, 200 steps
    .venv/bin/python benchmarks/world_arch_probe.py --only rn32 vit-p8   # some of them
"""

from __future__ import annotations

import argparse
import time

import numpy as np

CANDIDATES = {
    # The ViT towers the world configs used first: 64 px, patch 8 (teacher) and patch 16 (student).
    "vit-p8": {"image_size": 64, "layers": 5, "width": 192, "head_width": 32, "patch_size": 8,
               "pos_embed_type": "sin_cos_2d"},
    "vit-p16": {"image_size": 64, "layers": 4, "width": 128, "head_width": 32, "patch_size": 16,
                "pos_embed_type": "sin_cos_2d"},
    # CLIP's ModifiedResNet (the RN50 design), one bottleneck per stage, at several widths.
    "rn32": {"image_size": 64, "layers": [1, 1, 1, 1], "width": 32},
    "rn16": {"image_size": 64, "layers": [1, 1, 1, 1], "width": 16},
    "rn10": {"image_size": 64, "layers": [1, 1, 1, 1], "width": 10},
}


def shape_batch(start: int, n: int, stream: int):
    import torch

    from dimefm_pipeline.world.render import render
    from dimefm_pipeline.world.scene import sample_scene, scene_rng
    from dimefm_pipeline.world.vocab import SHAPES

    xs, ys = [], []
    for i in range(start, start + n):
        scene = sample_scene(scene_rng(0, i, stream), n_objects=1)
        xs.append(render(scene))
        ys.append(SHAPES.index(scene.objects[0].shape))
    x = torch.from_numpy(np.stack(xs)).permute(0, 3, 1, 2).float() / 255.0
    return (x - 0.5) / 0.25, torch.tensor(ys)


def probe(name: str, vision_cfg: dict, steps: int, batch: int, lr: float) -> list[tuple[int, float, float]]:
    """[(step, held-out accuracy, seconds per step)] every 50 steps."""
    import open_clip
    import torch

    from dimefm_pipeline.core.models import quiet_open_clip, register_config

    register_config(f"probe-{name}", {
        "embed_dim": 128, "vision_cfg": vision_cfg,
        "text_cfg": {"context_length": 8, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 1}})
    torch.manual_seed(0)
    with quiet_open_clip():
        tower = open_clip.create_model(f"probe-{name}").visual
    head = torch.nn.Linear(128, 8)
    opt = torch.optim.AdamW([*tower.parameters(), *head.parameters()], lr=lr, weight_decay=0.05)
    x_test, y_test = shape_batch(0, 400, stream=999)
    out, start = [], time.perf_counter()
    for step in range(steps):
        x, y = shape_batch(step * batch, batch, stream=7)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = torch.nn.functional.cross_entropy(head(tower(x).float()), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if (step + 1) % 50 == 0:
            tower.eval()
            with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
                acc = (head(tower(x_test).float()).argmax(1) == y_test).float().mean().item()
            tower.train()
            out.append((step + 1, acc, (time.perf_counter() - start) / (step + 1)))
            print(f"{name} step {step + 1}: accuracy {acc:.3f}", flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", choices=sorted(CANDIDATES), help="candidates to run (default: all)")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    import torch
    from rich.console import Console
    from rich.table import Table

    torch.set_num_threads(args.threads)
    results = {n: probe(n, CANDIDATES[n], args.steps, args.batch, args.lr) for n in (args.only or CANDIDATES)}
    table = Table(title=f"shape accuracy (8 classes, chance 0.125), batch {args.batch}, lr {args.lr}")
    table.add_column("tower")
    for step, _, _ in next(iter(results.values())):
        table.add_column(f"step {step}", justify="right")
    table.add_column("s/step", justify="right")
    for name, rows in results.items():
        table.add_row(name, *(f"{acc:.3f}" for _, acc, _ in rows), f"{rows[-1][2]:.2f}")
    Console().print(table)


if __name__ == "__main__":
    main()
