"""The world teacher's data: each step's paired batch, and the quick zero-shot check along the way.

The easy world's batch is built here; the hard world's comes from `world/hard/stream.py`.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from dimefm_pipeline.world.captions import CaptionStyle, caption
from dimefm_pipeline.world.render import render
from dimefm_pipeline.world.scene import sample_scene, scene_rng
from dimefm_pipeline.world.variants import edit_scene

TRAIN_STREAM = 1  # the teacher's paired data; corpora and the eval suite use other streams
# Captions inside edit groups name more attributes, so the edited one is usually said.
GROUP_CAPTIONS = CaptionStyle(p_colour=0.8, p_size=0.7, p_position=0.7, p_shape=0.9, p_count_only=0.05)


def paired_batch(step: int, cfg, size: int) -> tuple[np.ndarray, list[str]]:
    """Images (B x H x W x 3 uint8) and one true caption each, for optimiser step `step` of the
    teacher run `cfg` (a resolved `TeacherTrainConfig`).

    The first `group_share` of the batch comes in groups of `group_size` minimal edits of one scene:
    hard negatives for every attribute, so colour (by far the easiest cue) cannot carry the whole
    loss. The rest are independent scenes, for diversity.
    """
    if cfg.world == "hard":
        from dimefm_pipeline.world.hard.stream import paired_batch as hard_batch

        return hard_batch(step, batch_size=cfg.batch_size, group_share=cfg.group_share, seed=cfg.seed,
                          edit_weights=cfg.edit_weights)
    images, captions, base = [], [], None  # base: the scene a group's edits start from (k % group_size == 0)
    n_grouped = int(cfg.batch_size * cfg.group_share) // cfg.group_size * cfg.group_size
    for k in range(cfg.batch_size):
        rng = scene_rng(cfg.seed, step * cfg.batch_size + k, TRAIN_STREAM)
        if k < n_grouped and k % cfg.group_size:
            scene = edit_scene(base, rng, cfg.edit_weights)
        else:
            scene = base = sample_scene(rng, size=size)
        images.append(render(scene))
        captions.append(caption(scene, rng, cfg.group_captions if k < n_grouped else CaptionStyle(p_one_attribute=cfg.one_attribute)))
    return np.stack(images), captions


def quick_zero_shot(model, preprocess, tokenizer, embed_dim: int, world: str = "easy",
                    n_test: int = 200) -> dict[str, float]:
    """Zero-shot accuracy per world task on a small test split (a progress signal, not the benchmark)."""
    from dimefm_pipeline.evaluation.features import encode_images
    from dimefm_pipeline.evaluation.zeroshot import accuracy, classifier_weights
    from dimefm_pipeline.world.hard.suite import HardSuiteConfig, hard_suite
    from dimefm_pipeline.world.suite import WorldSuiteConfig, world_suite

    loaded = SimpleNamespace(model=model, preprocess=preprocess, tokenizer=tokenizer, embed_dim=embed_dim)
    if world == "hard":
        suite = hard_suite(HardSuiteConfig(n_train=0, n_val=0, n_test=n_test, n_shift=0, shifts=()), retrieval=False)
    else:
        suite = world_suite(WorldSuiteConfig(n_train=0, n_val=0, n_test=n_test, shifts=()), retrieval=False)
    cache: dict[str, object] = {}
    scores = {}
    for task in suite.tasks:
        key = task.test.images.key
        if key not in cache:
            cache[key] = encode_images(loaded, task.test.images.load())
        weights = classifier_weights(loaded, task.classnames, task.templates)
        scores[task.name] = accuracy(cache[key], task.test.labels, weights)
    return scores


