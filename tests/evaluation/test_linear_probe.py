"""The linear probe and retrieval metrics on features whose answers are known."""

from __future__ import annotations

import numpy as np
import torch

from dimefm_pipeline.evaluation.linear_probe import ProbeConfig, linear_probe
from dimefm_pipeline.evaluation.retrieval import recall_at_k


def _clusters(n_per_class: int, n_classes: int, dim: int, spread: float, seed: int):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_classes, dim)) * 3
    y = np.repeat(np.arange(n_classes), n_per_class)
    x = centres[y] + rng.normal(scale=spread, size=(len(y), dim))
    return x.astype(np.float32), y


def test_probe_is_perfect_on_linearly_separable_features():
    (tx, ty), (vx, vy), (sx, sy) = _split(_clusters(80, 5, 16, 0.3, 0))
    res = linear_probe(tx, ty, vx, vy, sx, sy, n_classes=5)
    assert res.accuracy >= 0.99
    assert res.val_accuracy >= 0.99
    assert res.weight_decay in ProbeConfig().weight_decays


def _split(data):
    x, y = data
    order = np.random.default_rng(5).permutation(len(y))
    x, y = x[order], y[order]
    a, b = int(0.5 * len(y)), int(0.7 * len(y))
    return (x[:a], y[:a]), (x[a:b], y[a:b]), (x[b:], y[b:])


def test_probe_is_at_chance_on_features_without_signal():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(600, 8)).astype(np.float32)
    y = rng.integers(0, 4, size=600)
    res = linear_probe(x[:300], y[:300], x[300:400], y[300:400], x[400:], y[400:], n_classes=4)
    assert res.accuracy < 0.40


def test_retrieval_recall_on_exact_and_shuffled_matches():
    img = torch.nn.functional.normalize(torch.randn(50, 16), dim=-1)
    owner = np.repeat(np.arange(50), 2)  # two captions per image
    txt = img[owner] + 0.01 * torch.randn(100, 16)
    exact = recall_at_k(img, torch.nn.functional.normalize(txt, dim=-1), owner)
    assert exact == {"text_to_image_R@1": 1.0, "image_to_text_R@1": 1.0,
                     "text_to_image_R@5": 1.0, "image_to_text_R@5": 1.0}
    wrong = recall_at_k(img, torch.nn.functional.normalize(txt, dim=-1), np.roll(owner, 2))
    assert wrong["text_to_image_R@1"] == 0.0 and wrong["image_to_text_R@1"] == 0.0
