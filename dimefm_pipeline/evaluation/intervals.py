"""Noise of a benchmark number: bootstrap intervals over test images, and when a difference counts.

A suite's headline is a mean over tasks of per-task accuracies. Its test-set noise is measured by
resampling each task's test images with replacement (stratified by task, as the tasks are fixed) and
recomputing the mean. A row trained with several seeds scores each image by its mean correctness
over the seeds, so the interval is that of the seed-averaged number. Two rows are compared on the
same resampled images (a paired bootstrap), which removes the noise they share.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass

import numpy as np

N_BOOT = 2000  # resamples; the 95% bounds move by less than 0.05 points between seeds of the bootstrap
LEVEL = 0.95


def pack(correct) -> str:
    """A 0/1 vector as compact text (bits, base64) for JSON results."""
    bits = np.asarray(correct, dtype=bool)
    return f"{len(bits)}:" + base64.b64encode(np.packbits(bits).tobytes()).decode()


def unpack(text: str) -> np.ndarray:
    """The 0/1 vector `pack` wrote, as float64."""
    n, _, data = text.partition(":")
    return np.unpackbits(np.frombuffer(base64.b64decode(data), dtype=np.uint8))[: int(n)].astype(np.float64)


@dataclass(frozen=True)
class Interval:
    """A mean and its bootstrap interval, as fractions."""

    mean: float
    low: float
    high: float

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2


def _resampled_means(scores: list[np.ndarray], n_boot: int, seed: int) -> np.ndarray:
    """Mean over tasks of the per-task mean score, for each of `n_boot` stratified resamples."""
    rng = np.random.default_rng(seed)
    total = np.zeros(n_boot)
    for s in scores:
        idx = rng.integers(0, len(s), size=(n_boot, len(s)))
        total += s[idx].mean(axis=1)
    return total / len(scores)


def mean_interval(scores: list[np.ndarray], *, n_boot: int = N_BOOT, seed: int = 0) -> Interval:
    """The mean over tasks of `scores` (one array of per-image scores in [0, 1] per task) with its
    95% percentile bootstrap interval."""
    scores = [np.asarray(s, dtype=np.float64) for s in scores]
    means = _resampled_means(scores, n_boot, seed)
    lo, hi = np.quantile(means, [(1 - LEVEL) / 2, (1 + LEVEL) / 2])
    return Interval(float(np.mean([s.mean() for s in scores])), float(lo), float(hi))


def difference_interval(a: list[np.ndarray], b: list[np.ndarray], *, n_boot: int = N_BOOT,
                        seed: int = 0) -> Interval:
    """Mean of `a` minus mean of `b`, both scored on the same test images, with the 95% interval of
    the difference under a paired bootstrap (the same resampled images for both)."""
    diff = [np.asarray(x, np.float64) - np.asarray(y, np.float64) for x, y in zip(a, b, strict=True)]
    return mean_interval(diff, n_boot=n_boot, seed=seed)


def verdict(diff: Interval, spread: float) -> str:
    """'higher' / 'lower' when the difference is outside its interval's zero and larger than the seed
    spread; else 'within noise'."""
    outside = diff.low > 0 or diff.high < 0
    if outside and abs(diff.mean) > spread:
        return "higher" if diff.mean > 0 else "lower"
    return "within noise"
