"""Bootstrap intervals of suite means and the rule that calls a difference."""

from __future__ import annotations

import numpy as np
import pytest

from dimefm_pipeline.evaluation.intervals import (
    Interval,
    difference_interval,
    mean_interval,
    pack,
    result_intervals,
    unpack,
    verdict,
)


def test_packed_correctness_round_trips_at_lengths_that_are_not_multiples_of_eight():
    rng = np.random.default_rng(0)
    for n in (1, 7, 9, 1001):
        bits = rng.random(n) < 0.4
        assert np.array_equal(unpack(pack(bits)), bits.astype(float))


def test_the_interval_has_the_binomial_width_and_covers_the_truth():
    rng = np.random.default_rng(1)
    n, p, tasks = 3000, 0.7, 5
    expected = 1.96 * np.sqrt(p * (1 - p) / n / tasks)  # the mean of 5 independent task accuracies
    covered = 0
    for trial in range(40):
        sets = [(rng.random(n) < p).astype(float) for _ in range(tasks)]
        ci = mean_interval(sets, n_boot=800, seed=trial)
        assert ci.half_width == pytest.approx(expected, rel=0.15)
        covered += ci.low <= p <= ci.high
    assert covered >= 34  # 95% nominal; 34/40 fails a broken interval, rarely a right one


def test_tasks_labelling_the_same_pictures_are_resampled_together():
    rng = np.random.default_rng(2)
    base = (rng.random(2000) < 0.5).astype(float)
    together = mean_interval([base, base], groups=["pool", "pool"], n_boot=1000)
    apart = mean_interval([base, base], groups=["a", "b"], n_boot=1000)
    assert together.half_width > 1.25 * apart.half_width  # perfectly correlated sets: sqrt(2) wider


def test_a_paired_difference_is_narrower_than_either_interval():
    rng = np.random.default_rng(3)
    a = [(rng.random(4000) < 0.6).astype(float) for _ in range(3)]
    b = [np.where(rng.random(4000) < 0.05, 1 - x, x) for x in a]  # the same model, 5% of answers flipped
    diff = difference_interval(a, b)
    assert diff.half_width < 0.5 * mean_interval(a).half_width


def test_a_difference_is_called_only_outside_the_interval_and_the_seed_range():
    assert verdict(Interval(0.02, 0.01, 0.03), spread=0.01) == "higher"
    assert verdict(Interval(-0.02, -0.03, -0.01), spread=0.01) == "lower"
    assert verdict(Interval(0.02, -0.001, 0.04), spread=0.0) == "within noise"  # interval holds 0
    assert verdict(Interval(0.02, 0.01, 0.03), spread=0.025) == "within noise"  # seeds move more


def test_intervals_of_an_evaluation_result_average_the_seeds_per_picture():
    ones, zeros = pack(np.ones(100, bool)), pack(np.zeros(100, bool))
    seed0 = {"tasks": {"t": {"zero_shot_correct": ones, "test_set": "p"}}}
    seed1 = {"tasks": {"t": {"zero_shot_correct": zeros, "test_set": "p"}}}
    ci = result_intervals([seed0, seed1])["zero_shot_mean"]
    assert ci.mean == 0.5 and ci.half_width == 0.0  # every picture right in one seed, wrong in the other
