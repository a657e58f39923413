"""Throughput of the world generator on one core: scenes sampled + rendered, PNG encoding, captions.

Rates are per CPU second of this process (time.process_time) as well as per wall second, so the
per-core figure stays meaningful on a machine that other jobs share.

    .venv/bin/python benchmarks/bench_world.py [--n 5000] [--world hard]
    .venv/bin/python benchmarks/bench_world.py --flops   # FLOPs of the world teacher and student
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

from dimefm_pipeline.world.captions import caption  # noqa: E402
from dimefm_pipeline.world.corpus import corpus_sentence, png_bytes  # noqa: E402
from dimefm_pipeline.world.render import render  # noqa: E402
from dimefm_pipeline.world.scene import sample_scene, scene_rng  # noqa: E402


def timed(fn, n: int) -> tuple[float, float]:
    """(items per CPU second, items per wall second) of `fn(i)` over n items."""
    c0, w0 = time.process_time(), time.perf_counter()
    for i in range(n):
        fn(i)
    return n / (time.process_time() - c0), n / (time.perf_counter() - w0)


def count_flops() -> None:
    """Forward FLOPs of one image and one sentence (full context) for the world teacher and student."""
    import open_clip
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from dimefm_pipeline.core.models import register_configs

    register_configs()
    rows = {}
    for arch in ("dimefm-world-teacher", "dimefm-world-student"):
        cfg = open_clip.get_model_config(arch)
        model = open_clip.create_model(arch).eval()
        image = torch.zeros(1, 3, cfg["vision_cfg"]["image_size"], cfg["vision_cfg"]["image_size"])
        text = torch.ones(1, cfg["text_cfg"]["context_length"], dtype=torch.long)
        # Grad mode on purpose: under no_grad, nn.MultiheadAttention takes a fused fast path whose
        # projections and attention FlopCounterMode does not see.
        with FlopCounterMode(display=False) as fc:
            model.encode_image(image)
        img = fc.get_total_flops()
        with FlopCounterMode(display=False) as fc:
            model.encode_text(text)
        params = (sum(p.numel() for p in model.visual.parameters()),
                  sum(p.numel() for n, p in model.named_parameters() if not n.startswith("visual.")))
        rows[arch] = (img, fc.get_total_flops(), *params)
    t_img, t_txt = rows["dimefm-world-teacher"][:2]
    print(f"{'model':24s} {'image MFLOPs':>13s} {'text MFLOPs':>12s} {'image params':>13s} {'text params':>12s}")
    for arch, (img, txt, p_img, p_txt) in rows.items():
        print(f"{arch:24s} {img / 1e6:13.1f} {txt / 1e6:12.1f} {p_img / 1e6:12.2f}M {p_txt / 1e6:11.2f}M"
              f"   (teacher/this: image {t_img / img:.1f}x, text {t_txt / txt:.1f}x)")


def hard(args) -> None:
    """The hard world: pictures, captions (checked), the teacher's paired stream."""
    from dimefm_pipeline.world.hard.captions import caption as hard_caption
    from dimefm_pipeline.world.hard.checker import check_caption
    from dimefm_pipeline.world.hard.render import render as hard_render
    from dimefm_pipeline.world.hard.scene import sample_scene as hard_scene
    from dimefm_pipeline.world.hard.stream import paired_batch

    def checked(i):
        scene = hard_scene(r := scene_rng(args.seed, i))
        return check_caption(hard_caption(scene, r), scene)

    rows = [
        ("scene + render (64x64 RGB array)", timed(lambda i: hard_render(hard_scene(scene_rng(args.seed, i))), args.n)),
        ("scene + render + PNG encode", timed(lambda i: png_bytes(hard_render(hard_scene(scene_rng(args.seed, i)))), args.n)),
        ("scene + caption", timed(lambda i: hard_caption(hard_scene(r := scene_rng(args.seed, i)), r), args.n)),
        ("scene + caption + check", timed(checked, args.n)),
        ("corpus sentence (30% distractors)", timed(lambda i: corpus_sentence(args.seed, i, world="hard"), args.n)),
        ("teacher's paired stream (pairs)", tuple(128 * v for v in timed(
            lambda i: paired_batch(i, batch_size=128, group_share=0.5, seed=args.seed), max(1, args.n // 128)))),
    ]
    print(f"{'hard world':40s} {'per CPU-s':>12s} {'per wall-s':>12s}   (n={args.n}, one thread)")
    for name, (cpu, wall) in rows:
        print(f"{name:40s} {cpu:12,.0f} {wall:12,.0f}")
    group_members_told(args.seed)
    shade_ceiling()


def group_members_told(seed: int, steps: int = 20) -> None:
    """How many edit-group members of the teacher's stream get a caption false of the group's other
    pictures (the rest are left out), and how often the first caption drawn already is."""
    import numpy as np

    from dimefm_pipeline.world.hard.captions import caption as hard_caption
    from dimefm_pipeline.world.hard.checker import check_caption
    from dimefm_pipeline.world.hard.edits import edit_scene
    from dimefm_pipeline.world.hard.scene import sample_scene as hard_scene
    from dimefm_pipeline.world.hard.stream import EDIT_WEIGHTS, GROUP_CAPTIONS, telling_caption

    first = told = n = 0
    for i in range(steps * 16):
        rng = np.random.default_rng([seed, 99, i])
        members = [base := hard_scene(rng)] + [edit_scene(base, rng, EDIT_WEIGHTS) for _ in range(3)]
        for j, scene in enumerate(members):
            others = members[:j] + members[j + 1:]
            n += 1
            first += not any(check_caption(hard_caption(scene, rng, GROUP_CAPTIONS), o).ok for o in others)
            told += telling_caption(scene, others, rng, GROUP_CAPTIONS) is not None
    print(f"edit-group members (general groups): a random caption tells them apart {first / n:.1%}; "
          f"a caption is found in 12 draws {told / n:.1%} (n={n})")


def shade_ceiling(per_shade: int = 3000) -> None:
    """Accuracy of a 25-nearest-neighbour classifier on the lit colour of a solid object alone: about
    the best any model can name the hard world's shades (pixel noise, patterns and size only lower it)."""
    import numpy as np
    from sklearn.neighbors import KNeighborsClassifier

    from dimefm_pipeline.world.hard.scene import lit
    from dimefm_pipeline.world.hard.vocab import COLOURS

    rng = np.random.default_rng(0)
    x = np.array([lit(rng, c) for c in COLOURS for _ in range(per_shade)], dtype=float)
    y = np.repeat(np.arange(len(COLOURS)), per_shade)
    order = rng.permutation(len(y))
    train, test = order[: len(y) * 5 // 6], order[len(y) * 5 // 6:]
    acc = (KNeighborsClassifier(25).fit(x[train], y[train]).predict(x[test]) == y[test]).mean()
    print(f"shade ceiling (25-NN on the lit colour alone): {acc:.1%}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=5000, help="items per measurement")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--flops", action="store_true", help="count model FLOPs instead of timing the generator")
    parser.add_argument("--world", default="easy", choices=("easy", "hard"))
    args = parser.parse_args()
    if args.flops:
        count_flops()
        return
    if args.world == "hard":
        hard(args)
        return
    timed(lambda i: render(sample_scene(scene_rng(args.seed, i))), 200)  # warm-up

    rows = [
        ("scene + render (64x64 RGB array)", timed(lambda i: render(sample_scene(scene_rng(args.seed, i))), args.n)),
        ("scene + render + PNG encode", timed(lambda i: png_bytes(render(sample_scene(scene_rng(args.seed, i)))), args.n)),
        ("scene + caption", timed(lambda i: caption(sample_scene(r := scene_rng(args.seed, i)), r), args.n)),
        ("corpus sentence (30% distractors)", timed(lambda i: corpus_sentence(args.seed, i), args.n)),
    ]
    print(f"{'what':40s} {'per CPU-s':>12s} {'per wall-s':>12s}   (n={args.n}, one thread)")
    for name, (cpu, wall) in rows:
        print(f"{name:40s} {cpu:12,.0f} {wall:12,.0f}")


if __name__ == "__main__":
    main()
