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


def _resampled_means(scores: list[np.ndarray], n_boot: int, seed: int, groups: list | None) -> np.ndarray:
    """Mean over sets of the per-set mean score, for each of `n_boot` resamples stratified by set;
    sets of one group (tasks that label the same pictures) share their resampled pictures."""
    rng = np.random.default_rng(seed)
    total = np.zeros(n_boot)
    drawn: dict = {}
    for k, s in enumerate(scores):
        group = (groups[k] if groups is not None else k, len(s))
        if group not in drawn:
            drawn[group] = rng.integers(0, len(s), size=(n_boot, len(s)))
        total += s[drawn[group]].mean(axis=1)
    return total / len(scores)


def mean_interval(scores: list[np.ndarray], *, groups: list | None = None, n_boot: int = N_BOOT,
                  seed: int = 0) -> Interval:
    """The mean over tasks of `scores` (one array of per-image scores in [0, 1] per task) with its
    95% percentile bootstrap interval; `groups` names the pictures each task labels (the same
    pictures are resampled together)."""
    scores = [np.asarray(s, dtype=np.float64) for s in scores]
    means = _resampled_means(scores, n_boot, seed, groups)
    lo, hi = np.quantile(means, [(1 - LEVEL) / 2, (1 + LEVEL) / 2])
    return Interval(float(np.mean([s.mean() for s in scores])), float(lo), float(hi))


def difference_interval(a: list[np.ndarray], b: list[np.ndarray], *, groups: list | None = None,
                        n_boot: int = N_BOOT, seed: int = 0) -> Interval:
    """Mean of `a` minus mean of `b`, both scored on the same test images, with the 95% interval of
    the difference under a paired bootstrap (the same resampled images for both)."""
    diff = [np.asarray(x, np.float64) - np.asarray(y, np.float64) for x, y in zip(a, b, strict=True)]
    return mean_interval(diff, groups=groups, n_boot=n_boot, seed=seed)


def verdict(diff: Interval, spread: float) -> str:
    """'higher' / 'lower' when the difference is outside its interval's zero and larger than the seed
    spread; else 'within noise'."""
    outside = diff.low > 0 or diff.high < 0
    if outside and abs(diff.mean) > spread:
        return "higher" if diff.mean > 0 else "lower"
    return "within noise"


METRICS = {"zero_shot_mean": "zero_shot_correct", "linear_probe_mean": "linear_probe_correct",
           "robustness_mean": "robustness_correct"}


def scores(results: list[dict], metric: str) -> tuple[list[np.ndarray], list] | None:
    """Per-image scores behind `metric` of `evaluate(..., keep_correct=True)` results of the same suite
    (one per seed), and the picture set each belongs to: for each test set (a task's test split, or a
    task under a shift), the mean correctness over the results. None when a result lacks them."""
    key = METRICS[metric]
    sets: list[list[np.ndarray]] = []
    groups: list = []
    for r in results:
        per_set, groups = [], []
        for name in sorted(r["tasks"]):
            row = r["tasks"][name]
            packed = row.get(key)
            if packed is None:
                return None
            if isinstance(packed, dict):
                per_set += [unpack(packed[s]) for s in sorted(packed)]
                groups += [(row.get("test_set", name), s) for s in sorted(packed)]
            else:
                per_set.append(unpack(packed))
                groups.append(row.get("test_set", name))
        sets.append(per_set)
    return [np.mean(column, axis=0) for column in zip(*sets, strict=True)], groups


def result_intervals(results: dict | list[dict], *, n_boot: int = N_BOOT) -> dict[str, Interval]:
    """The 95% intervals of the headline means of one result (or of several seeds' results, averaged)."""
    results = [results] if isinstance(results, dict) else results
    out = {}
    for metric in METRICS:
        found = scores(results, metric)
        if found:
            out[metric] = mean_interval(found[0], groups=found[1], n_boot=n_boot)
    return out
