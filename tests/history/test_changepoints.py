"""E-divisive means with a permutation test (harness.history.changepoints), on seeded series."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from history_fakes import NOISE, stepped

from harness.history.changepoints import EDivisiveConfig, change_points, split_statistics

FLAT_SEEDS = range(6)


def _q_by_definition(z: np.ndarray, tau: int) -> float:
    """Q(tau) written out pair by pair, as in Matteson & James (2014)."""
    x, y = z[:tau], z[tau:]
    p, q = len(x), len(y)
    between = np.mean([abs(a - b) for a in x for b in y])
    within_x = np.mean([abs(a - b) for a, b in itertools.permutations(x, 2)])
    within_y = np.mean([abs(a - b) for a, b in itertools.permutations(y, 2)])
    return p * q / (p + q) * (2 * between - within_x - within_y)


def test_split_statistics_equal_the_definition_pair_by_pair():
    z = np.random.default_rng(3).normal(size=13)
    stats = split_statistics(z, min_size=3)
    for tau in range(3, 11):
        assert stats[tau] == pytest.approx(_q_by_definition(z, tau), rel=1e-12)
    assert np.isneginf(stats[[0, 1, 2, 11, 12, 13]]).all()  # parts shorter than min_size


def test_a_three_percent_step_is_found_at_the_first_value_after_it():
    # 30 values, then 30 values 3 % higher: the change point is index 30 (the 31st value)
    found = change_points(stepped(n=60, after=30, step=0.03))
    assert [c.index for c in found] == [30]
    assert found[0].p_value <= 0.01


@pytest.mark.parametrize("after", [12, 29, 31, 47])
def test_the_step_is_found_wherever_it_is(after):
    values = stepped(after=after, seed=after)
    found = change_points(values)
    strongest = max(found, key=lambda c: c.q)
    assert strongest.index == after
    # at alpha = 0.01 a further split of pure noise can pass its test (seed 12 has one); its effect
    # is noise-sized, which is why the gate also asks for a minimum step
    bounds = [0, *[c.index for c in found], len(values)]
    for i, c in enumerate(found):
        if c is not strongest:
            before, after_ = np.median(values[bounds[i]:c.index]), np.median(values[c.index:bounds[i + 2]])
            assert abs(after_ / before - 1) < 0.01


def test_a_drop_is_a_change_point_too():
    # the detector is direction-free; which direction is worse is decided by the caller
    assert [c.index for c in change_points(stepped(step=-0.03))] == [30]


@pytest.mark.parametrize("seed", FLAT_SEEDS)
def test_a_flat_noisy_series_has_no_change_point(seed):
    assert change_points(stepped(step=0.0, seed=seed)) == []


def test_a_step_buried_in_noise_is_not_significant():
    # 10 % noise: the best split of a flat series still separates medians by more than 2 %, so a
    # detector without the significance test would report it
    for seed in range(4):
        assert change_points(stepped(step=0.0, noise=0.10, seed=seed)) == []


def test_one_outlier_is_not_a_segment():
    values = stepped(step=0.0, seed=1)
    values[40] *= 1.5
    assert change_points(values) == []


def test_two_steps_are_both_found():
    values = stepped(step=0.03, after=20, seed=2)
    values[40:] *= 0.95
    assert [c.index for c in change_points(values)] == [20, 40]


def test_the_newest_values_can_hold_a_step_of_min_size():
    values = stepped(n=33, after=30, seed=4)  # three values after the step
    assert [c.index for c in change_points(values, EDivisiveConfig(min_size=3))] == [30]
    assert change_points(values[:32], EDivisiveConfig(min_size=3)) == []  # two: not yet a segment


def test_the_answer_is_the_same_every_time():
    values = stepped(noise=NOISE * 5, seed=9)
    assert change_points(values) == change_points(values)


def test_a_series_with_nan_is_refused():
    values = stepped()
    values[3] = np.nan
    with pytest.raises(ValueError, match="finite"):
        change_points(values)


@pytest.mark.parametrize("kw, match", [({"alpha": 0.0}, "alpha"), ({"min_size": 1}, "min_size"),
                                       ({"alpha": 0.001, "permutations": 99}, "cannot reach")])
def test_a_config_that_cannot_work_is_refused(kw, match):
    with pytest.raises(ValueError, match=match):
        EDivisiveConfig(**kw)
